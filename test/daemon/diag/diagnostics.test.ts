import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { loadDaemonConfig, type DaemonConfig } from '../../../daemon/config/daemon-config.js';
import { controlPaths } from '../../../daemon/control/control-paths.js';
import type { ControlHandler, DaemonStatus } from '../../../daemon/control/control-protocol.js';
import { ControlServer } from '../../../daemon/control/control-server.js';
import {
  DEVICE_KEY_FILE,
  DEVICE_KEY_KEYRING_MARKER,
  loadOrCreateDeviceKey,
} from '../../../daemon/device/device-key.js';
import {
  collectDiagnostics,
  DIAG_LATENCY_SAMPLES,
  DIAG_LOG_LINES,
  maskSecrets,
  scrubLogLine,
  writeDiagnostics,
} from '../../../daemon/diag/diagnostics.js';
import { loadOrCreateTlsPair } from '../../../server/tls/tls-pair.js';

/** Token-shaped strings that must never reach a bundle. */
const JWT_HEADER = 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0';
const JWT_PAYLOAD = 'eyJzdWIiOiJhbGljZSIsImF1ZCI6Imh0dHBzOi8vY2FyZHMuZXhhbXBsZS8ifQ';
const JWT_SIGNATURE = 'MEUCIQDfake-signature_for-tests-onlyAiB0aGlzIGlzIGZha2U';
const JWT = `${JWT_HEADER}.${JWT_PAYLOAD}.${JWT_SIGNATURE}`;
const REFRESH_TOKEN = randomBytes(32).toString('base64url'); // 43 characters

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-diag-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** A config from a temp config file whose every path is in the temp dir; `extra` is merged in. */
function configWith(extra: Record<string, unknown> = {}): DaemonConfig {
  const file = path.join(dir, 'daemon.json');
  fs.writeFileSync(
    file,
    JSON.stringify({
      stateDir: path.join(dir, 'state'),
      runtimeDir: path.join(dir, 'run'),
      reader: { bridgeSocket: path.join(dir, 'bridge.sock') },
      log: { file: 'daemon.log' },
      ...extra,
    }),
  );
  return loadDaemonConfig({ config: file }, { XDG_CONFIG_HOME: path.join(dir, 'config') });
}

function writeLog(lines: string[]): string {
  const file = path.join(dir, 'daemon.log');
  fs.writeFileSync(file, `${lines.join('\n')}\n`);
  return file;
}

describe('maskSecrets', () => {
  it('masks secret-named keys and keeps the others', () => {
    const masked = maskSecrets({
      refreshToken: 'r',
      accessToken: 'a',
      clientSecret: 's',
      secret: 's',
      password: 'p',
      passphrase: 'p',
      pin: '123456',
      userPin: '123456',
      puk: '12345678',
      privateKey: 'k',
      credentials: 'c',
      url: 'https://cards.example/',
      clientId: 'cardlink',
      slots: 4,
      enabled: true,
      nothing: null,
    });
    assert.deepEqual(masked, {
      refreshToken: '[masked]',
      accessToken: '[masked]',
      clientSecret: '[masked]',
      secret: '[masked]',
      password: '[masked]',
      passphrase: '[masked]',
      pin: '[masked]',
      userPin: '[masked]',
      puk: '[masked]',
      privateKey: '[masked]',
      credentials: '[masked]',
      url: 'https://cards.example/',
      clientId: 'cardlink',
      slots: 4,
      enabled: true,
      nothing: null,
    });
  });

  it('matches key names case-insensitively', () => {
    assert.deepEqual(maskSecrets({ PASSWORD: 'p', Refresh_Token: 'r', PIN: '1' }), {
      PASSWORD: '[masked]',
      Refresh_Token: '[masked]',
      PIN: '[masked]',
    });
  });

  it('masks a secret-named key whatever its value holds (an object too)', () => {
    assert.deepEqual(maskSecrets({ credentials: { user: 'u', pass: 'p' }, token: 42 }), {
      credentials: '[masked]',
      token: '[masked]',
    });
  });

  it('masks nested objects and objects in arrays', () => {
    const masked = maskSecrets({
      server: { url: 'https://cards.example/', auth: { password: 'p', user: 'alice' } },
      handovers: [{ refreshToken: 'r', issuer: 'https://login.example/' }, 'plain', 7, [{ pin: '1' }]],
    });
    assert.deepEqual(masked, {
      server: { url: 'https://cards.example/', auth: { password: '[masked]', user: 'alice' } },
      handovers: [
        { refreshToken: '[masked]', issuer: 'https://login.example/' },
        'plain',
        7,
        [{ pin: '[masked]' }],
      ],
    });
  });

  it('leaves scalars and an undefined secret as they are, and does not change its input', () => {
    assert.equal(maskSecrets('text'), 'text');
    assert.equal(maskSecrets(3), 3);
    assert.equal(maskSecrets(null), null);
    assert.deepEqual(maskSecrets({ token: undefined }), { token: undefined });
    const input = { nested: { secret: 's' } };
    maskSecrets(input);
    assert.deepEqual(input, { nested: { secret: 's' } });
  });

  it('a daemon config has nothing to mask', () => {
    const config = configWith({ server: { url: 'https://cards.example/' } });
    assert.deepEqual(maskSecrets(config), {
      ...config,
      server: { ...config.server },
      login: { ...config.login },
    });
    assert.equal(JSON.stringify(maskSecrets(config)), JSON.stringify(config));
  });
});

describe('scrubLogLine', () => {
  it('removes a JWT', () => {
    const line = `{"level":"info","message":"token handed over","authorization":"Bearer ${JWT}"}`;
    const scrubbed = scrubLogLine(line);
    assert.equal(
      scrubbed,
      '{"level":"info","message":"token handed over","authorization":"Bearer [masked]"}',
    );
  });

  it('removes a JWT without a signature', () => {
    assert.equal(scrubLogLine(`t=${JWT_HEADER}.${JWT_PAYLOAD}. end`), 't=[masked] end');
  });

  it('removes long base64url runs (opaque tokens, keys)', () => {
    const scrubbed = scrubLogLine(`refresh with ${REFRESH_TOKEN} now`);
    assert.equal(scrubbed, 'refresh with [masked] now');
    assert.equal(scrubLogLine(`hex ${'ab12'.repeat(16)}`), 'hex [masked]');
    assert.equal(scrubLogLine(`x ${'A'.repeat(40)} y`), 'x [masked] y');
  });

  it('removes every token in a line', () => {
    const scrubbed = scrubLogLine(`a=${JWT} b=${REFRESH_TOKEN}`);
    assert.equal(scrubbed, 'a=[masked] b=[masked]');
  });

  it('keeps normal log text', () => {
    const lines = [
      '{"level":"info","message":"daemon started","server":"https://cards.example.com:8443/","slots":4}',
      '{"level":"warn","message":"session down","code":4007,"reason":"idle timeout","timestamp":"2024-05-01T10:00:00.000Z"}',
      'device key created file=/home/alice/.local/state/cardlink/daemon/device-key.pem',
      'card 123e4567-e89b-12d3-a456-426614174000 inserted in "cardlink Virtual Reader 00 00"',
      'SELECT AID a000000308000010000100 -> 9000',
      'a 39-character run stays: ' + 'B'.repeat(39),
      '',
    ];
    for (const line of lines) assert.equal(scrubLogLine(line), line);
  });
});

describe('collectDiagnostics', () => {
  it('without a running daemon or a server: running false, configured false, no token from the log', async () => {
    const logFile = writeLog([
      '{"level":"info","message":"daemon started","slots":4}',
      `{"level":"debug","message":"hand-over","accessToken":"${JWT}"}`,
      `{"level":"debug","message":"refresh","refreshToken":"${REFRESH_TOKEN}"}`,
      '{"level":"info","message":"still here"}',
    ]);
    const config = configWith();
    assert.equal(config.log.file, logFile);
    assert.equal(config.server.url, '');

    const bundle = await collectDiagnostics(config);
    const json = JSON.stringify(bundle);
    for (const secret of [JWT, JWT_HEADER, JWT_PAYLOAD, JWT_SIGNATURE, REFRESH_TOKEN, 'eyJ']) {
      assert.ok(!json.includes(secret), `bundle holds ${secret}`);
    }

    const daemon = bundle['daemon'] as { running: boolean; error: string };
    assert.equal(daemon.running, false);
    assert.equal(typeof daemon.error, 'string');
    assert.deepEqual(bundle['server'], { configured: false });
    assert.deepEqual(bundle['deviceKey'], { setting: 'auto', present: false });
    assert.deepEqual(bundle['reader'], {
      transport: 'bridge',
      driverSocket: path.join(dir, 'bridge.sock'),
      driverSocketPresent: false,
    });
    assert.match(bundle['host'] as string, /^sha256:[0-9a-f]{12}$/);
    assert.ok(!Number.isNaN(Date.parse(bundle['generatedAt'] as string)));
    const versions = bundle['versions'] as Record<string, string>;
    assert.equal(versions['node'], process.version);
    assert.equal(typeof versions['cardlink'], 'string');
    assert.equal(typeof versions['pcscd'], 'string');
    assert.equal(typeof versions['opensc'], 'string');
    const { deviceName, ...rest } = bundle['config'] as DaemonConfig;
    assert.match(deviceName, /^sha256:[0-9a-f]{12}$/);
    assert.deepEqual(
      JSON.parse(JSON.stringify({ ...rest, deviceName: config.deviceName })),
      JSON.parse(JSON.stringify(config)),
    );

    const log = bundle['log'] as string[];
    assert.equal(log.length, 4);
    assert.equal(log[0], '{"level":"info","message":"daemon started","slots":4}');
    assert.equal(log[1], '{"level":"debug","message":"hand-over","accessToken":"[masked]"}');
    assert.equal(log[2], '{"level":"debug","message":"refresh","refreshToken":"[masked]"}');
    assert.equal(log[3], '{"level":"info","message":"still here"}');
  });

  it('keeps only the last DIAG_LOG_LINES lines of the log', async () => {
    writeLog(Array.from({ length: DIAG_LOG_LINES + 50 }, (_, i) => `line ${i}`));
    const log = (await collectDiagnostics(configWith()))['log'] as string[];
    assert.equal(log.length, DIAG_LOG_LINES);
    assert.equal(log[0], 'line 50');
    assert.equal(log.at(-1), `line ${DIAG_LOG_LINES + 49}`);
  });

  it('a missing log file gives an empty log', async () => {
    assert.deepEqual((await collectDiagnostics(configWith()))['log'], []);
  });

  it('reports the device key by store, presence and mode, never its content', async () => {
    const config = configWith({ deviceKeyStore: 'file' });
    const key = await loadOrCreateDeviceKey(config.stateDir, config.deviceKeyStore);
    assert.equal(key.location, path.join(config.stateDir, DEVICE_KEY_FILE));
    const bundle = await collectDiagnostics(config);
    assert.deepEqual(bundle['deviceKey'], { setting: 'file', store: 'file', present: true, mode: '600' });
    const pem = fs.readFileSync(key.location, 'utf8');
    const body = pem.split('\n')[1]!;
    assert.ok(!JSON.stringify(bundle).includes(body));
  });

  it('reports a key in the keyring by its marker, without asking the keyring', async () => {
    const config = configWith();
    fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    fs.writeFileSync(path.join(config.stateDir, DEVICE_KEY_KEYRING_MARKER), '{}', { mode: 0o600 });
    const bundle = await collectDiagnostics(config);
    assert.deepEqual(bundle['deviceKey'], { setting: 'auto', store: 'keyring', present: true, mode: '600' });
  });

  it('reports no device key before the first start', async () => {
    const bundle = await collectDiagnostics(configWith({ deviceKeyStore: 'keyring' }));
    assert.deepEqual(bundle['deviceKey'], { setting: 'keyring', present: false });
  });

  it('asks a running daemon for its status over the control socket', async () => {
    const config = configWith();
    const status: DaemonStatus = {
      state: 'connected',
      serverUrl: 'wss://cards.example/v1/session',
      cards: [],
    };
    const handler: ControlHandler = {
      status: () => status,
      cards: () => [],
      handOverToken: async () => undefined,
      logout: async () => undefined,
      connect: async () => undefined,
      disconnect: async () => undefined,
      changePin: async () => ({ outcome: 'done' }),
      unblockPin: async () => ({ outcome: 'done' }),
      enroll: async () => ({ cardId: 'c', label: 'card', certificates: 4 }),
      setPin: async () => ({ outcome: 'done', kind: 'first' }),
    };
    const server = await ControlServer.start({ ...controlPaths({ runtimeDir: config.runtimeDir }), handler });
    try {
      const bundle = await collectDiagnostics(config);
      assert.deepEqual(bundle['daemon'], { running: true, status });
    } finally {
      await server.close();
    }
  });

  it('times the health endpoint of a configured server, trusting server.caFile', async () => {
    const tls = await loadOrCreateTlsPair(
      path.join(dir, 'tls', 'server.crt'),
      path.join(dir, 'tls', 'server.key'),
      ['127.0.0.1'],
    );
    const paths: string[] = [];
    const server = https.createServer({ cert: tls.cert, key: tls.key }, (req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(req.url === '/healthz' ? 200 : 404).end('ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const config = configWith({ server: { url: `https://127.0.0.1:${port}/`, caFile: 'tls/server.crt' } });
      const result = (await collectDiagnostics(config))['server'] as {
        reachable: boolean;
        samplesMs: number[];
        medianMs: number;
      };
      assert.equal(result.reachable, true);
      assert.equal(result.samplesMs.length, DIAG_LATENCY_SAMPLES);
      assert.ok(result.samplesMs.every((s) => s >= 0));
      assert.ok(
        result.medianMs >= Math.min(...result.samplesMs) && result.medianMs <= Math.max(...result.samplesMs),
      );
      assert.deepEqual(paths, Array(DIAG_LATENCY_SAMPLES).fill('/healthz'));
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('an unreachable server is reported, not thrown', async () => {
    const server = https.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const config = configWith({ server: { url: `https://127.0.0.1:${port}/` } });
    const result = (await collectDiagnostics(config))['server'] as { reachable: boolean; error: string };
    assert.equal(result.reachable, false);
    assert.equal(typeof result.error, 'string');
  });

  it('does not name the machine (the host name is hashed)', async () => {
    const bundle = await collectDiagnostics(configWith());
    assert.notEqual((bundle['config'] as DaemonConfig).deviceName, os.hostname());
  });
});

describe('writeDiagnostics', () => {
  it('writes the bundle 0600 and never overwrites a file', async () => {
    writeLog([`token ${JWT}`]);
    const config = configWith();
    const target = path.join(dir, 'bundle.json');
    assert.equal(await writeDiagnostics(config, target), target);
    assert.equal(fs.statSync(target).mode & 0o777, 0o600);
    const text = fs.readFileSync(target, 'utf8');
    assert.ok(!text.includes(JWT_HEADER));
    const parsed = JSON.parse(text) as Record<string, unknown>;
    assert.deepEqual(parsed['log'], ['token [masked]']);
    await assert.rejects(writeDiagnostics(config, target), { code: 'EEXIST' });
  });
});
