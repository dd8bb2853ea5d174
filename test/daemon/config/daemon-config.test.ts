import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DAEMON_ENV,
  DEFAULT_RECONNECT,
  DEFAULT_TIMEOUTS,
  defaultDaemonConfigFile,
  loadDaemonConfig,
  requireServerUrl,
  systemDaemonConfigFile,
  type DaemonFlags,
} from '../../../daemon/config/daemon-config.js';
import { DEFAULT_OIDC_SCOPE } from '../../../daemon/login/oidc-client-settings.js';
import {
  DEFAULT_BRIDGE_SOCKET,
  DEFAULT_READER_NAME,
  DEFAULT_VPCD_READER_NAME,
} from '../../../daemon/reader/serve-card.js';
import { ConfigError } from '../../../protocol/config/config-sources.js';
import { CardlinkError } from '../../../protocol/errors.js';

let dir: string;
/** An environment that points every per-user location into `dir`, so no real user file is read. */
let env: NodeJS.ProcessEnv;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-daemon-config-'));
  env = {
    HOME: path.join(dir, 'home'),
    XDG_CONFIG_HOME: path.join(dir, 'config'),
    XDG_STATE_HOME: path.join(dir, 'state'),
    XDG_RUNTIME_DIR: path.join(dir, 'run'),
    CARDLINK_SYSTEM_CONFIG: path.join(dir, 'etc', 'daemon.json'),
  };
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** Writes `content` (an object as JSON, or raw text) to `name` under the temp dir; returns its path. */
function writeConfig(content: unknown, name = 'daemon.json'): string {
  const file = path.join(dir, name);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content));
  return file;
}

function load(flags: DaemonFlags = {}, extraEnv: NodeJS.ProcessEnv = {}) {
  return loadDaemonConfig(flags, { ...env, ...extraEnv });
}

/** An assert.throws validator: ERR_CONFIG_INVALID naming `key` and `source`, in the context too. */
function configError(key: string, source: string, problem?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.ok(error instanceof CardlinkError);
    assert.equal(error.code, 'ERR_CONFIG_INVALID');
    assert.equal(error.context.key, key);
    assert.equal(error.context.source, source);
    assert.ok(
      error.message.startsWith(`${source}: setting "${key}"`),
      `message names source and key: ${error.message}`,
    );
    if (problem) assert.match(error.message, problem);
    return true;
  };
}

const PIN = 'AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89';

describe('loadDaemonConfig defaults', () => {
  it('without a file, variables or flags gives the documented defaults', () => {
    const c = load();
    assert.equal(c.configFile, undefined);
    assert.deepEqual(c.server, { url: '', sessionUrl: '', caFile: undefined, certificateSha256: undefined });
    assert.deepEqual(c.login, {
      issuer: undefined,
      clientId: undefined,
      resource: undefined,
      scope: DEFAULT_OIDC_SCOPE,
      issuers: [],
      redirectPort: undefined,
    });
    assert.deepEqual(c.reader, {
      transport: 'bridge',
      bridgeSocket: DEFAULT_BRIDGE_SOCKET,
      vpcdMode: 'listen',
      vpcdHost: '127.0.0.1',
      vpcdPort: 35963,
      name: DEFAULT_READER_NAME,
      slots: 4,
    });
    assert.deepEqual(c.timeouts, { connectSeconds: 10, commandSeconds: 30, graceSeconds: 120 });
    assert.deepEqual(c.timeouts, { ...DEFAULT_TIMEOUTS });
    assert.deepEqual(c.reconnect, { initialDelayMs: 500, maxDelayMs: 30_000 });
    assert.deepEqual(c.reconnect, { ...DEFAULT_RECONNECT });
    assert.equal(c.deviceName, os.hostname());
    assert.equal(c.deviceKeyStore, 'auto');
    assert.equal(c.runtimeDir, path.join(dir, 'run', 'cardlink'));
    assert.ok(path.isAbsolute(c.stateDir));
    assert.equal(path.basename(c.stateDir), 'daemon');
    assert.equal(c.log.level, 'info');
    assert.equal(c.log.file, path.join(c.stateDir, 'daemon.log'));
    assert.equal(c.log.maxSizeBytes, 5 * 1024 * 1024);
    assert.equal(c.log.maxFiles, 3);
    assert.ok(Object.isFrozen(c));
  });

  it('the default stateDir follows XDG_STATE_HOME of the given environment', () => {
    assert.equal(load().stateDir, path.join(dir, 'state', 'cardlink', 'daemon'));
  });

  it('the runtime dir falls back to /tmp/cardlink-<uid> without an absolute XDG_RUNTIME_DIR', () => {
    const c = loadDaemonConfig({}, { XDG_CONFIG_HOME: env['XDG_CONFIG_HOME'], XDG_RUNTIME_DIR: 'relative' });
    assert.equal(c.runtimeDir, `/tmp/cardlink-${process.getuid!()}`);
  });

  it('reads $XDG_CONFIG_HOME/cardlink/daemon.json when it exists', () => {
    const file = writeConfig({ server: { url: 'https://implicit.example/' } }, 'config/cardlink/daemon.json');
    assert.equal(defaultDaemonConfigFile(env), file);
    const c = load();
    assert.equal(c.configFile, file);
    assert.equal(c.server.url, 'https://implicit.example/');
  });

  it('CARDLINK_DAEMON_CONFIG names the file, and --config wins over it', () => {
    const fromEnv = writeConfig({ deviceName: 'from-env-file' }, 'a.json');
    const fromFlag = writeConfig({ deviceName: 'from-flag-file' }, 'b.json');
    writeConfig({ deviceName: 'implicit' }, 'config/cardlink/daemon.json');
    assert.equal(load({}, { CARDLINK_DAEMON_CONFIG: fromEnv }).deviceName, 'from-env-file');
    const c = load({ config: fromFlag }, { CARDLINK_DAEMON_CONFIG: fromEnv });
    assert.equal(c.deviceName, 'from-flag-file');
    assert.equal(c.configFile, fromFlag);
  });

  it('a named config file that does not exist is refused, naming it', () => {
    const missing = path.join(dir, 'missing.json');
    assert.throws(
      () => load({ config: missing }),
      configError('config', missing, /cannot be read \(ENOENT\)/),
    );
  });

  it('every variable of DAEMON_ENV maps to a key the file can also set', () => {
    for (const key of Object.values(DAEMON_ENV)) {
      if (key === 'config') continue;
      const top = key.split('.')[0]!;
      // An unknown top-level key would be refused; a known one passes (the values here are valid).
      assert.ok(
        ['server', 'login', 'reader', 'stateDir', 'deviceKeyStore', 'runtimeDir', 'log'].includes(top),
        `${key} has a file key`,
      );
    }
  });
});

describe('loadDaemonConfig precedence: file < environment < flags', () => {
  it('server.url and log.level come from the last source that sets them', () => {
    const file = writeConfig({ server: { url: 'https://file.example/' }, log: { level: 'error' } });
    const fileOnly = load({ config: file });
    assert.equal(fileOnly.server.url, 'https://file.example/');
    assert.equal(fileOnly.log.level, 'error');

    const variables = { CARDLINK_SERVER_URL: 'https://env.example/', CARDLINK_DAEMON_LOG_LEVEL: 'warn' };
    const withEnv = load({ config: file }, variables);
    assert.equal(withEnv.server.url, 'https://env.example/');
    assert.equal(withEnv.log.level, 'warn');

    const withFlags = load(
      { config: file, serverUrl: 'https://flag.example/', logLevel: 'debug' },
      variables,
    );
    assert.equal(withFlags.server.url, 'https://flag.example/');
    assert.equal(withFlags.log.level, 'debug');
  });

  it('a key set only in the file survives variables and flags that set other keys', () => {
    const file = writeConfig({ server: { url: 'https://file.example/' }, deviceName: 'desk' });
    const c = load({ config: file, logLevel: 'debug' }, { CARDLINK_DAEMON_LOG_LEVEL: 'warn' });
    assert.equal(c.server.url, 'https://file.example/');
    assert.equal(c.deviceName, 'desk');
    assert.equal(c.log.level, 'debug');
  });

  it('an empty variable counts as unset', () => {
    const file = writeConfig({ server: { url: 'https://file.example/' } });
    assert.equal(load({ config: file }, { CARDLINK_SERVER_URL: '' }).server.url, 'https://file.example/');
  });

  it('each flag and variable sets its key', () => {
    const ca = path.join(dir, 'ca.pem');
    fs.writeFileSync(ca, 'not checked here');
    const fromEnv = load(
      {},
      {
        CARDLINK_SERVER_URL: 'https://env.example/',
        CARDLINK_SERVER_CA: ca,
        CARDLINK_SERVER_CERT_SHA256: PIN,
        CARDLINK_ISSUER: 'https://login.example/',
        CARDLINK_CLIENT_ID: 'cardlink-cli',
        CARDLINK_DAEMON_STATE_DIR: path.join(dir, 's'),
        CARDLINK_DAEMON_RUNTIME_DIR: path.join(dir, 'r'),
        CARDLINK_READER_SOCKET: path.join(dir, 'bridge.sock'),
        CARDLINK_DAEMON_LOG_LEVEL: 'debug',
      },
    );
    assert.equal(fromEnv.server.url, 'https://env.example/');
    assert.equal(fromEnv.server.caFile, ca);
    assert.equal(fromEnv.server.certificateSha256, PIN.replace(/:/g, '').toLowerCase());
    assert.equal(fromEnv.login.issuer, 'https://login.example/');
    assert.equal(fromEnv.login.clientId, 'cardlink-cli');
    assert.equal(fromEnv.stateDir, path.join(dir, 's'));
    assert.equal(fromEnv.runtimeDir, path.join(dir, 'r'));
    assert.equal(fromEnv.reader.bridgeSocket, path.join(dir, 'bridge.sock'));
    assert.equal(fromEnv.log.level, 'debug');

    const fromFlags = load({
      serverUrl: 'wss://flag.example:9443/',
      serverCa: ca,
      serverCertSha256: PIN,
      stateDir: path.join(dir, 's2'),
      runtimeDir: path.join(dir, 'r2'),
      readerSocket: path.join(dir, 'b2.sock'),
      logLevel: 'warn',
      logFile: path.join(dir, 'd.log'),
    });
    assert.equal(fromFlags.server.url, 'wss://flag.example:9443/');
    assert.equal(fromFlags.server.caFile, ca);
    assert.equal(fromFlags.stateDir, path.join(dir, 's2'));
    assert.equal(fromFlags.runtimeDir, path.join(dir, 'r2'));
    assert.equal(fromFlags.reader.bridgeSocket, path.join(dir, 'b2.sock'));
    assert.equal(fromFlags.log.level, 'warn');
    assert.equal(fromFlags.log.file, path.join(dir, 'd.log'));
  });

  it('file-only settings are read from the file', () => {
    const file = writeConfig({
      login: {
        issuer: 'https://login.example/',
        clientId: 'c',
        resource: 'https://cards.example/',
        scope: 'openid',
      },
      reader: { name: 'My Reader', slots: 2 },
      timeouts: { connectSeconds: 5, commandSeconds: 60, graceSeconds: 0 },
      reconnect: { initialDelayMs: 100, maxDelayMs: 100 },
      deviceName: 'laptop',
      log: { maxSizeBytes: 65_536, maxFiles: 2 },
    });
    const c = load({ config: file });
    const only = {
      issuer: 'https://login.example/',
      clientId: 'c',
      resource: 'https://cards.example/',
      scope: 'openid',
    };
    assert.deepEqual(c.login, {
      ...only,
      issuers: [{ ...only, name: 'login.example' }],
      redirectPort: undefined,
    });
    assert.equal(c.reader.name, 'My Reader');
    assert.equal(c.reader.slots, 2);
    assert.deepEqual(c.timeouts, { connectSeconds: 5, commandSeconds: 60, graceSeconds: 0 });
    assert.deepEqual(c.reconnect, { initialDelayMs: 100, maxDelayMs: 100 });
    assert.equal(c.deviceName, 'laptop');
    assert.equal(c.log.maxSizeBytes, 65_536);
    assert.equal(c.log.maxFiles, 2);
  });
});

describe('loadDaemonConfig refuses bad values, naming key and source', () => {
  it('an unknown top-level key in the file, naming the key and the file', () => {
    const file = writeConfig({ sever: { url: 'https://cards.example/' } });
    assert.throws(() => load({ config: file }), configError('sever', file, /is not a known setting/));
    assert.throws(() => load({ config: file }), /docs\/daemon-config\.md/);
  });

  it('invalid JSON, naming the file', () => {
    const file = writeConfig('{ "server": ');
    assert.throws(() => load({ config: file }), configError('config', file, /is not valid JSON/));
  });

  it('a file that is not a JSON object', () => {
    const file = writeConfig('["server"]');
    assert.throws(() => load({ config: file }), configError('config', file, /must hold a JSON object/));
  });

  it('a timeout that is not a number, in the file', () => {
    const file = writeConfig({ timeouts: { commandSeconds: 'abc' } });
    assert.throws(
      () => load({ config: file }),
      configError('timeouts.commandSeconds', file, /must be a whole number from 1 to 600/),
    );
  });

  it('numbers out of range or not whole', () => {
    const cases: [string, unknown][] = [
      ['timeouts.commandSeconds', 0],
      ['timeouts.commandSeconds', 601],
      ['timeouts.connectSeconds', 301],
      ['timeouts.graceSeconds', -1],
      ['timeouts.graceSeconds', 86_401],
      ['reconnect.initialDelayMs', 9],
      ['reconnect.maxDelayMs', 3_600_001],
      ['reader.slots', 0],
      ['reader.slots', 17],
      ['reader.slots', 1.5],
      ['reader.vpcdPort', 0],
      ['reader.vpcdPort', 65535],
      ['log.maxSizeBytes', 1024],
      ['log.maxFiles', 101],
      ['log.maxFiles', 1],
      ['timeouts.connectSeconds', true],
    ];
    for (const [key, value] of cases) {
      const [group, leaf] = key.split('.') as [string, string];
      const file = writeConfig({ [group]: { [leaf]: value } }, `${key}-${String(value)}.json`);
      assert.throws(() => load({ config: file }), configError(key, file, /must be a whole number/), key);
    }
  });

  it('reader.transport vpcd: loopback host and port from the file, the vpcd reader name by default', () => {
    const file = writeConfig({ reader: { transport: 'vpcd', vpcdHost: 'localhost', vpcdPort: 40100 } });
    const c = load({ config: file });
    assert.equal(c.reader.transport, 'vpcd');
    assert.equal(c.reader.vpcdHost, 'localhost');
    assert.equal(c.reader.vpcdPort, 40100);
    assert.equal(c.reader.name, DEFAULT_VPCD_READER_NAME);
    const named = writeConfig(
      { reader: { transport: 'vpcd', vpcdHost: '127.0.0.2', name: 'Mine' } },
      'n.json',
    );
    assert.deepEqual(
      [load({ config: named }).reader.vpcdHost, load({ config: named }).reader.name],
      ['127.0.0.2', 'Mine'],
    );
    assert.equal(load({}, { CARDLINK_READER_TRANSPORT: 'vpcd' }).reader.transport, 'vpcd');
  });

  it('reader.vpcdMode: listen by default, connect for vpcd in normal mode / BixVReader, nothing else', () => {
    assert.equal(
      load({ config: writeConfig({ reader: { transport: 'vpcd' } }, 'm0.json') }).reader.vpcdMode,
      'listen',
    );
    const connect = writeConfig({ reader: { transport: 'vpcd', vpcdMode: 'connect' } }, 'm1.json');
    assert.equal(load({ config: connect }).reader.vpcdMode, 'connect');
    const bad = writeConfig({ reader: { transport: 'vpcd', vpcdMode: 'server' } }, 'm2.json');
    assert.throws(
      () => load({ config: bad }),
      configError('reader.vpcdMode', bad, /must be one of listen, connect/),
    );
  });

  it('the machine-wide file: /etc/cardlink on Linux and macOS, %ProgramData%\\cardlink on Windows', () => {
    assert.equal(systemDaemonConfigFile({}, 'linux'), '/etc/cardlink/daemon.json');
    assert.equal(systemDaemonConfigFile({}, 'darwin'), '/etc/cardlink/daemon.json');
    assert.equal(
      systemDaemonConfigFile({ ProgramData: 'D:\\Data' }, 'win32'),
      'D:\\Data\\cardlink\\daemon.json',
    );
    assert.equal(systemDaemonConfigFile({}, 'win32'), 'C:\\ProgramData\\cardlink\\daemon.json');
    // The test override wins everywhere.
    assert.equal(systemDaemonConfigFile({ CARDLINK_SYSTEM_CONFIG: '/tmp/x.json' }, 'win32'), '/tmp/x.json');
  });

  it('reader.vpcdHost other than loopback is refused naming the key and the file', () => {
    for (const host of ['0.0.0.0', '192.168.1.10', '::1', 'cards.example.com', '127.0.0.256', '127.1']) {
      const file = writeConfig({ reader: { transport: 'vpcd', vpcdHost: host } }, `h-${host}.json`);
      assert.throws(
        () => load({ config: file }),
        configError('reader.vpcdHost', file, /must be a loopback address/),
        host,
      );
    }
    const transport = writeConfig({ reader: { transport: 'tcp' } }, 't.json');
    assert.throws(
      () => load({ config: transport }),
      configError('reader.transport', transport, /must be one of bridge, vpcd/),
    );
    const typo = writeConfig({ reader: { vpcdport: 40100 } }, 'typo.json');
    assert.throws(() => load({ config: typo }), configError('reader.vpcdport', typo, /not a known setting/));
  });

  it('a string where a string is needed, and a known string for log.level', () => {
    const notString = writeConfig({ deviceName: 42 }, 'a.json');
    assert.throws(
      () => load({ config: notString }),
      configError('deviceName', notString, /non-empty string/),
    );
    const empty = writeConfig({ login: { clientId: '' } }, 'b.json');
    assert.throws(() => load({ config: empty }), configError('login.clientId', empty, /non-empty string/));
    const level = writeConfig({ log: { level: 'verbose' } }, 'c.json');
    assert.throws(
      () => load({ config: level }),
      configError('log.level', level, /must be one of error, warn, info, debug/),
    );
  });

  it('deviceKeyStore is auto, keyring or file, from the file or CARDLINK_DEVICE_KEY_STORE', () => {
    assert.equal(load({ config: writeConfig({ deviceKeyStore: 'file' }, 'k1.json') }).deviceKeyStore, 'file');
    assert.equal(load({}, { CARDLINK_DEVICE_KEY_STORE: 'keyring' }).deviceKeyStore, 'keyring');
    const bad = writeConfig({ deviceKeyStore: 'tpm' }, 'k2.json');
    assert.throws(
      () => load({ config: bad }),
      configError('deviceKeyStore', bad, /must be one of auto, keyring, file/),
    );
  });

  it('a bad environment variable is named as the source', () => {
    assert.throws(
      () => load({}, { CARDLINK_DAEMON_LOG_LEVEL: 'loud' }),
      configError('log.level', 'environment variable CARDLINK_DAEMON_LOG_LEVEL'),
    );
    assert.throws(
      () => load({}, { CARDLINK_SERVER_URL: 'cards.example' }),
      configError('server.url', 'environment variable CARDLINK_SERVER_URL', /absolute URL/),
    );
    assert.throws(
      () => load({}, { CARDLINK_SERVER_CERT_SHA256: 'abc' }),
      configError('server.certificateSha256', 'environment variable CARDLINK_SERVER_CERT_SHA256'),
    );
  });

  it('a bad flag is named "command line"', () => {
    assert.throws(() => load({ logLevel: 'loud' }), configError('log.level', 'command line'));
    assert.throws(
      () => load({ serverUrl: 'http://cards.example/' }),
      configError('server.url', 'command line', /https: or wss:/),
    );
  });

  it('a bad value in an earlier source fails even when a later one sets the key', () => {
    const file = writeConfig({ log: { level: 'loud' } });
    assert.throws(() => load({ config: file, logLevel: 'info' }), configError('log.level', file));
  });

  it('the message never holds the refused value', () => {
    const secretish = 'zz-not-a-fingerprint-zz';
    assert.throws(
      () => load({ serverCertSha256: secretish }),
      (e: Error) => !e.message.includes(secretish),
    );
  });
});

describe('server settings', () => {
  it('server.url must be https or wss; http and others are refused', () => {
    assert.equal(load({ serverUrl: 'https://cards.example.com' }).server.url, 'https://cards.example.com/');
    assert.equal(load({ serverUrl: 'wss://cards.example.com/' }).server.url, 'wss://cards.example.com/');
    for (const url of ['http://cards.example.com/', 'ws://cards.example.com/', 'ftp://cards.example.com/']) {
      const file = writeConfig({ server: { url } });
      assert.throws(
        () => load({ config: file }),
        configError('server.url', file, /must be a https: or wss: URL/),
      );
    }
    const relative = writeConfig({ server: { url: '/v1/session' } }, 'rel.json');
    assert.throws(() => load({ config: relative }), configError('server.url', relative, /absolute URL/));
  });

  it('sessionUrl is wss://host:port/v1/session, whatever the path, query and scheme of server.url', () => {
    const cases: [string, string][] = [
      ['https://cards.example.com:8443/', 'wss://cards.example.com:8443/v1/session'],
      ['https://cards.example.com:8443/some/path?x=1#frag', 'wss://cards.example.com:8443/v1/session'],
      ['wss://cards.example.com:9000/v1/session', 'wss://cards.example.com:9000/v1/session'],
      ['https://cards.example.com/', 'wss://cards.example.com/v1/session'],
      ['https://127.0.0.1:8443', 'wss://127.0.0.1:8443/v1/session'],
    ];
    for (const [url, session] of cases)
      assert.equal(load({ serverUrl: url }).server.sessionUrl, session, url);
  });

  it('server.certificateSha256 accepts 64 hex digits with or without colons, stored lower case', () => {
    const hex = PIN.replace(/:/g, '').toLowerCase();
    assert.equal(load({ serverCertSha256: PIN }).server.certificateSha256, hex);
    assert.equal(load({ serverCertSha256: hex.toUpperCase() }).server.certificateSha256, hex);
    assert.equal(load({ serverCertSha256: hex }).server.certificateSha256, hex);
  });

  it('server.certificateSha256 refuses anything but 64 hex digits', () => {
    const hex = PIN.replace(/:/g, '').toLowerCase();
    const bad = [
      hex.slice(2),
      `${hex}00`,
      `${hex.slice(1)}g`,
      `sha256:${hex}`,
      'x'.repeat(64),
      `${hex.slice(1)} `,
    ];
    for (const value of bad) {
      assert.throws(
        () => load({ serverCertSha256: value }),
        configError('server.certificateSha256', 'command line', /must be 64 hex digits/),
        value,
      );
    }
    const file = writeConfig({ server: { certificateSha256: 1234 } });
    assert.throws(() => load({ config: file }), configError('server.certificateSha256', file, /string/));
  });

  it('server.caFile that does not exist is refused', () => {
    const file = writeConfig({ server: { caFile: 'nowhere/ca.pem' } });
    assert.throws(() => load({ config: file }), configError('server.caFile', file, /does not exist/));
    assert.throws(
      () => load({}, { CARDLINK_SERVER_CA: path.join(dir, 'missing.pem') }),
      configError('server.caFile', 'environment variable CARDLINK_SERVER_CA', /does not exist/),
    );
    assert.throws(
      () => load({ serverCa: path.join(dir, 'missing.pem') }),
      configError('server.caFile', 'command line'),
    );
  });

  it('requireServerUrl returns the URL, or throws naming server.url', () => {
    const file = writeConfig({ deviceName: 'no-server' });
    const config = load({ config: file });
    assert.throws(() => requireServerUrl(config), configError('server.url', file, /is required/));
    assert.throws(() => requireServerUrl(config), /CARDLINK_SERVER_URL or --server-url/);
    assert.equal(requireServerUrl(load({ serverUrl: 'https://cards.example/' })), 'https://cards.example/');
  });

  it('requireServerUrl without a config file names server.url', () => {
    assert.throws(
      () => requireServerUrl(load()),
      (e: unknown) => e instanceof ConfigError && e.context.key === 'server.url',
    );
  });

  it('requireServerUrl without a config file names the default file of the environment the config came from', () => {
    assert.throws(
      () => requireServerUrl(load()),
      configError('server.url', path.join(dir, 'config', 'cardlink', 'daemon.json')),
    );
  });
});

describe('paths', () => {
  it('relative caFile and log.file in the file resolve against the file directory', () => {
    const file = writeConfig(
      { server: { url: 'https://cards.example/', caFile: 'ca.pem' }, log: { file: 'logs/daemon.log' } },
      'etc/cardlink/daemon.json',
    );
    const ca = path.join(dir, 'etc', 'cardlink', 'ca.pem');
    fs.writeFileSync(ca, 'pem');
    const c = load({ config: file });
    assert.equal(c.server.caFile, ca);
    assert.equal(c.log.file, path.join(dir, 'etc', 'cardlink', 'logs', 'daemon.log'));
  });

  it('relative stateDir, runtimeDir and reader.bridgeSocket in the file resolve against the file directory', () => {
    const file = writeConfig(
      { stateDir: 'state', runtimeDir: 'run', reader: { bridgeSocket: 'bridge.sock' } },
      'etc/daemon.json',
    );
    const c = load({ config: file });
    assert.equal(c.stateDir, path.join(dir, 'etc', 'state'));
    assert.equal(c.runtimeDir, path.join(dir, 'etc', 'run'));
    assert.equal(c.reader.bridgeSocket, path.join(dir, 'etc', 'bridge.sock'));
  });

  it('absolute paths are kept as they are', () => {
    const ca = path.join(dir, 'abs-ca.pem');
    fs.writeFileSync(ca, 'pem');
    const file = writeConfig(
      { server: { caFile: ca }, stateDir: path.join(dir, 'st'), log: { file: path.join(dir, 'x.log') } },
      'sub/daemon.json',
    );
    const c = load({ config: file });
    assert.equal(c.server.caFile, ca);
    assert.equal(c.stateDir, path.join(dir, 'st'));
    assert.equal(c.log.file, path.join(dir, 'x.log'));
  });

  it('a relative config path is made absolute', () => {
    const file = writeConfig({ deviceName: 'x' });
    const c = load({ config: path.relative(process.cwd(), file) });
    assert.equal(c.configFile, file);
  });

  it('a relative --server-ca resolves against the working directory, not the config file directory', () => {
    const ca = path.join(dir, 'elsewhere', 'ca.pem');
    fs.mkdirSync(path.dirname(ca));
    fs.writeFileSync(ca, 'pem');
    const file = writeConfig({ deviceName: 'x' }, 'etc/daemon.json');
    const c = load({ config: file, serverCa: path.relative(process.cwd(), ca) });
    assert.equal(c.server.caFile, ca);
  });
});

describe('login settings', () => {
  it('login.issuer must be https, or http on loopback', () => {
    assert.equal(
      load({}, { CARDLINK_ISSUER: 'http://127.0.0.1:9000/' }).login.issuer,
      'http://127.0.0.1:9000/',
    );
    assert.equal(
      load({}, { CARDLINK_ISSUER: 'http://localhost:9000/' }).login.issuer,
      'http://localhost:9000/',
    );
    assert.throws(
      () => load({}, { CARDLINK_ISSUER: 'http://login.example.com/' }),
      configError(
        'login.issuer',
        'environment variable CARDLINK_ISSUER',
        /https URL \(http only on loopback\)/,
      ),
    );
    const file = writeConfig({ login: { issuer: 'ftp://login.example.com/' } });
    assert.throws(() => load({ config: file }), configError('login.issuer', file));
  });
});

describe('reconnect', () => {
  it('maxDelayMs below initialDelayMs is refused', () => {
    const file = writeConfig({ reconnect: { initialDelayMs: 1000, maxDelayMs: 500 } });
    assert.throws(
      () => load({ config: file }),
      configError('reconnect.maxDelayMs', file, /must not be below reconnect\.initialDelayMs/),
    );
  });

  it('maxDelayMs equal to initialDelayMs is allowed', () => {
    const file = writeConfig({ reconnect: { initialDelayMs: 1000, maxDelayMs: 1000 } });
    assert.deepEqual(load({ config: file }).reconnect, { initialDelayMs: 1000, maxDelayMs: 1000 });
  });

  it('an initialDelayMs above the default maxDelayMs is refused', () => {
    const file = writeConfig({ reconnect: { initialDelayMs: 60_000 } });
    assert.throws(() => load({ config: file }), /must not exceed reconnect\.maxDelayMs/);
  });

  it('an initialDelayMs above the default maxDelayMs is refused naming the file that set it', () => {
    const file = writeConfig({ reconnect: { initialDelayMs: 60_000 } });
    assert.throws(
      () => load({ config: file }),
      (e: unknown) => e instanceof ConfigError && e.context.source === file,
    );
  });
});

describe('the machine-wide config file', () => {
  it('is read when the user has none, and the user file wins over it', () => {
    const system = writeConfig({ server: { url: 'https://machine.example/' } }, 'etc/daemon.json');
    assert.equal(load().configFile, system);
    assert.equal(load().server.url, 'https://machine.example/');
    const user = writeConfig({ server: { url: 'https://user.example/' } }, 'config/cardlink/daemon.json');
    assert.equal(load().configFile, user);
    assert.equal(load().server.url, 'https://user.example/');
  });

  it('names itself in errors', () => {
    const system = writeConfig({ server: { url: 'http://machine.example/' } }, 'etc/daemon.json');
    assert.throws(() => load(), configError('server.url', system));
  });
});

describe('the admin’s file with the user’s over it', () => {
  const admin = {
    server: { url: 'https://cards.example/', caFile: 'cards-ca.pem' },
    login: {
      clientId: 'cardlink',
      resource: 'https://cards.example/',
      issuers: [
        { issuer: 'https://login.example/', name: 'Example staff' },
        { issuer: 'https://partners.example/', clientId: 'cardlink-partners', scope: 'openid cards' },
      ],
      redirectPort: 47_311,
    },
    tray: { signInStore: 'keyring' },
  };

  it('merges key by key: the user’s settings win, the admin’s fill the rest; paths are relative to their own file', () => {
    const system = writeConfig(admin, 'etc/daemon.json');
    writeConfig('-----BEGIN CERTIFICATE-----\n', 'etc/cards-ca.pem');
    const user = writeConfig(
      { login: { redirectPort: 0 }, deviceName: 'alice-laptop' },
      'config/cardlink/daemon.json',
    );
    const config = load();
    assert.deepEqual(config.configFiles, [system, user]);
    assert.equal(config.configFile, user);
    assert.equal(config.server.url, 'https://cards.example/');
    assert.equal(config.server.caFile, path.join(dir, 'etc', 'cards-ca.pem'));
    assert.equal(config.deviceName, 'alice-laptop');
    assert.equal(config.login.redirectPort, undefined, 'the user chose an ephemeral port');
    assert.equal(config.tray.signInStore, 'keyring');
  });

  it('lists the identity providers, the admin’s default first, each with its client, resource and scope', () => {
    writeConfig(admin, 'etc/daemon.json');
    writeConfig('x', 'etc/cards-ca.pem');
    const { login } = load();
    assert.deepEqual(login.issuers, [
      {
        issuer: 'https://login.example/',
        clientId: 'cardlink',
        resource: 'https://cards.example/',
        scope: DEFAULT_OIDC_SCOPE,
        name: 'Example staff',
      },
      {
        issuer: 'https://partners.example/',
        clientId: 'cardlink-partners',
        resource: 'https://cards.example/',
        scope: 'openid cards',
        name: 'partners.example',
      },
    ]);
    assert.equal(login.issuer, 'https://login.example/');
    assert.equal(login.clientId, 'cardlink');
    assert.equal(login.redirectPort, 47_311);
  });

  it('a user’s list replaces the admin’s; CARDLINK_ISSUER replaces a file’s list; login.issuer is a list of one', () => {
    writeConfig(admin, 'etc/daemon.json');
    writeConfig('x', 'etc/cards-ca.pem');
    writeConfig({ login: { issuers: [{ issuer: 'https://mine.example/' }] } }, 'config/cardlink/daemon.json');
    assert.deepEqual(
      load().login.issuers.map((i) => i.issuer),
      ['https://mine.example/'],
    );
    const fromEnv = load({}, { CARDLINK_ISSUER: 'https://env.example/' }).login;
    assert.deepEqual(
      fromEnv.issuers.map((i) => [i.issuer, i.clientId, i.name]),
      [['https://env.example/', 'cardlink', 'env.example']],
    );
  });

  it('defaults: no issuers, a random redirect port, the refresh token in the keyring when it can', () => {
    const config = load();
    assert.deepEqual(config.configFiles, []);
    assert.deepEqual(config.login.issuers, []);
    assert.equal(config.login.redirectPort, undefined);
    assert.equal(config.tray.signInStore, 'auto');
  });

  it('a bad entry is refused naming the entry’s key and the file', () => {
    const cases: [unknown, string][] = [
      [{ login: { issuers: [] } }, 'login.issuers'],
      [{ login: { issuers: 'https://login.example/' } }, 'login.issuers'],
      [
        { login: { issuers: Array.from({ length: 9 }, (_, i) => ({ issuer: `https://l${i}.example/` })) } },
        'login.issuers',
      ],
      [{ login: { issuers: [{ name: 'no issuer' }] } }, 'login.issuers[0].issuer'],
      [
        { login: { issuers: [{ issuer: 'https://a.example/' }, { issuer: 'http://b.example/' }] } },
        'login.issuers[1].issuer',
      ],
      [
        { login: { issuers: [{ issuer: 'https://a.example/', clientld: 'typo' }] } },
        'login.issuers[0].clientld',
      ],
      [{ login: { issuers: [{ issuer: 'https://a.example/', scope: '' }] } }, 'login.issuers[0].scope'],
      [
        { login: { issuers: [{ issuer: 'https://a.example/' }, { issuer: 'https://a.example/' }] } },
        'login.issuers[1].issuer',
      ],
      [{ login: { issuers: ['https://a.example/'] } }, 'login.issuers[0]'],
      [{ login: { redirectPort: 70_000 } }, 'login.redirectPort'],
      [{ tray: { signInStore: 'disk' } }, 'tray.signInStore'],
      [{ tray: { refreshTokenFile: 'x' } }, 'tray.refreshTokenFile'],
    ];
    for (const [content, key] of cases) {
      const system = writeConfig(content, 'etc/daemon.json');
      assert.throws(() => load(), configError(key, system), key);
    }
  });
});
