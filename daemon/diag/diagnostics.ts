/**
 * `cardlink diag`: one JSON file a user can attach to a support request. It holds what helps find
 * a fault and nothing that is secret: versions, the effective settings (secrets masked, though the
 * daemon's settings hold none today), the daemon's status and cards, the reader driver's socket,
 * the latency to the card server's health endpoint, and the end of the log with anything shaped
 * like a token removed (the log should hold none; this is a second line of defence).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { CardlinkError } from '../../protocol/errors.js';
import type { DaemonConfig } from '../config/daemon-config.js';
import { ControlClient } from '../control/control-client.js';
import { controlPaths } from '../control/control-paths.js';
import { DAEMON_VERSION } from '../daemon.js';
import { DEVICE_KEY_FILE, DEVICE_KEY_KEYRING_MARKER } from '../device/device-key.js';

/** Lines of the log included. */
export const DIAG_LOG_LINES = 200;
/** Bytes read from the end of the log for those lines. */
const DIAG_LOG_TAIL_BYTES = 256 * 1024;
/** Health-endpoint requests timed. */
export const DIAG_LATENCY_SAMPLES = 5;
const TOOL_TIMEOUT_MS = 3000;

/** Keys whose values are masked wherever they appear. */
const SECRET_KEY = /secret|token|password|passphrase|pin$|puk|private|credential/i;
/** JWTs, long base64url/hex runs: masked in log lines. */
const TOKEN_SHAPED = /eyJ[\w-]+\.[\w-]+\.[\w-]*|[A-Za-z0-9_+/-]{40,}={0,2}/g;

export function maskSecrets(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(maskSecrets);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        SECRET_KEY.test(k) && v !== undefined ? '[masked]' : maskSecrets(v),
      ]),
    );
  }
  return value;
}

function digest(text: string): string {
  return `sha256:${createHash('sha256').update(text).digest('hex').slice(0, 12)}`;
}

/** Replaces the home directory in every string with `~`. */
function withoutHome(value: unknown): unknown {
  const home = os.homedir();
  if (typeof value === 'string') return home.length > 1 ? value.split(home).join('~') : value;
  if (Array.isArray(value)) return value.map(withoutHome);
  if (value && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withoutHome(v)]));
  return value;
}

export function scrubLogLine(line: string): string {
  return line.replace(TOKEN_SHAPED, '[masked]');
}

async function toolVersion(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout, stderr } = await promisify(execFile)(cmd, args, {
      timeout: TOOL_TIMEOUT_MS,
      encoding: 'utf8',
    });
    return (
      (stdout || stderr)
        .split('\n')
        .find((l) => l.trim())
        ?.trim() ?? 'unknown'
    );
  } catch (error) {
    const e = error as { code?: string; stdout?: string; stderr?: string };
    const text = (e.stdout || e.stderr || '').split('\n').find((l) => l.trim());
    return text?.trim() ?? (e.code === 'ENOENT' ? 'not installed' : 'unknown');
  }
}

async function daemonState(config: DaemonConfig): Promise<unknown> {
  try {
    const client = await ControlClient.connect({
      ...controlPaths({ runtimeDir: config.runtimeDir }),
      clientName: 'cardlink-diag',
    });
    try {
      return { running: true, status: await client.request('status') };
    } finally {
      await client.close();
    }
  } catch (error) {
    return { running: false, error: error instanceof CardlinkError ? error.message : 'unreachable' };
  }
}

/** Milliseconds for a full HTTPS GET of /healthz (new connection each: TLS included). */
function timeHealth(config: DaemonConfig, ca: string | undefined): Promise<number> {
  const url = new URL('/healthz', config.server.url.replace(/^wss:/, 'https:'));
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const req = https.get(url, { ca, minVersion: 'TLSv1.2', timeout: 5000, agent: false }, (res) => {
      res.resume();
      res.on('end', () => {
        if (res.statusCode !== 200) reject(new Error(`HTTP ${res.statusCode}`));
        else resolve(Number(process.hrtime.bigint() - started) / 1e6);
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

async function serverLatency(config: DaemonConfig): Promise<unknown> {
  if (!config.server.url) return { configured: false };
  const ca = config.server.caFile ? fs.readFileSync(config.server.caFile, 'utf8') : undefined;
  const samples: number[] = [];
  try {
    for (let i = 0; i < DIAG_LATENCY_SAMPLES; i++) samples.push(await timeHealth(config, ca));
  } catch (error) {
    return { reachable: false, error: (error as Error).message, samplesMs: samples };
  }
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    reachable: true,
    samplesMs: samples.map((s) => Math.round(s * 100) / 100),
    medianMs: Math.round(sorted[Math.floor(sorted.length / 2)]! * 100) / 100,
  };
}

function recentLog(file: string | undefined): string[] {
  if (!file) return [];
  try {
    // Only the end of the file: a log may be large.
    const size = fs.statSync(file).size;
    const fd = fs.openSync(file, 'r');
    const length = Math.min(size, DIAG_LOG_TAIL_BYTES);
    const buffer = Buffer.alloc(length);
    try {
      fs.readSync(fd, buffer, 0, length, size - length);
    } finally {
      fs.closeSync(fd);
    }
    const lines = buffer.toString('utf8').split('\n').filter(Boolean);
    if (length < size) lines.shift(); // the first line is cut
    return lines.slice(-DIAG_LOG_LINES).map(scrubLogLine);
  } catch {
    return [];
  }
}

/**
 * Where the device key is, by presence and file mode only. The keyring itself is not asked: that
 * could pop up an unlock prompt, and the bundle must never carry key material anyway.
 */
function deviceKeyReport(config: DaemonConfig): Record<string, unknown> {
  for (const [store, name] of [
    ['file', DEVICE_KEY_FILE],
    ['keyring', DEVICE_KEY_KEYRING_MARKER],
  ] as const) {
    try {
      const stat = fs.statSync(path.join(config.stateDir, name));
      return { setting: config.deviceKeyStore, store, present: true, mode: (stat.mode & 0o777).toString(8) };
    } catch {
      // not this store
    }
  }
  return { setting: config.deviceKeyStore, present: false };
}

export async function collectDiagnostics(config: DaemonConfig): Promise<Record<string, unknown>> {
  const deviceKey = deviceKeyReport(config);
  return {
    generatedAt: new Date().toISOString(),
    versions: {
      cardlink: DAEMON_VERSION,
      node: process.version,
      os: `${os.type()} ${os.release()} ${os.arch()}`,
      pcscd: await toolVersion('pcscd', ['--version']),
      opensc: await toolVersion('opensc-tool', ['--info']),
    },
    // The device name (the host name by default) and home directory would identify the person.
    config: withoutHome(maskSecrets({ ...config, deviceName: digest(config.deviceName) })),
    daemon: await daemonState(config),
    reader:
      config.reader.transport === 'vpcd'
        ? {
            transport: 'vpcd',
            vpcdMode: config.reader.vpcdMode,
            vpcdHost: config.reader.vpcdHost,
            vpcdPort: config.reader.vpcdPort,
          }
        : {
            transport: 'bridge',
            driverSocket: config.reader.bridgeSocket,
            driverSocketPresent: fs.existsSync(config.reader.bridgeSocket),
          },
    deviceKey,
    server: await serverLatency(config),
    // The host name is part of the report; hash it so a shared bundle does not name the machine.
    host: digest(os.hostname()),
    log: recentLog(config.log.file),
  };
}

/** Writes the bundle to `file` (0600) and returns its path. */
export async function writeDiagnostics(config: DaemonConfig, file: string): Promise<string> {
  const bundle = await collectDiagnostics(config);
  const target = path.resolve(file);
  fs.writeFileSync(target, `${JSON.stringify(bundle, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  return target;
}
