/**
 * The real daemon for end-to-end tests: `bin/cardlink daemon` as a child process with its own
 * config file, state and runtime directories, pointed at a test card server, a test IdP and a
 * pcscd with the cardlink reader (or listening for pcscd's vpcd reader); plus a scripted `cardlink login --device-code` whose user part
 * the test IdP drives.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ControlClient } from '../../daemon/control/control-client.js';
import type { CardStatus, ControlEvent, DaemonStatus } from '../../daemon/control/control-protocol.js';
import type { TestIdpClient } from './oidc-provider.js';
import type { PcscdInstance } from './pcscd.js';
import { REPO_ROOT } from './pcscd.js';

export const CARDLINK_BIN = path.join(REPO_ROOT, 'bin', 'cardlink');

export interface TestDaemonOptions {
  /** Directory for this daemon's config, state and runtime files. */
  dir: string;
  serverUrl: string;
  /** PEM file of the server's (self-signed) certificate. */
  serverCaFile: string;
  idp: TestIdpClient;
  /** The pcscd whose cardlink reader the daemon uses; without it, `vpcd` (pcscd starts after). */
  pcscd?: PcscdInstance;
  /**
   * Serve through vpcd instead (reader.transport "vpcd"): the port of vpcd's slot 0, and who listens
   * (reader.vpcdMode; default listen, vpcd's reversed mode).
   */
  vpcd?: { port: number; mode?: 'listen' | 'connect' };
  deviceName: string;
  /** Use pcscd's second cardlink reader (startPcscd's secondCardlink) instead of the first. */
  secondReader?: { friendlyName: string };
  /** Extra settings merged into the config file (timeouts, reconnect, log). */
  settings?: Record<string, unknown>;
  /** Options for the daemon's node (a benchmark's `--cpu-prof`). */
  nodeArgs?: string[];
  /**
   * The D-Bus session bus of a test keyring (test/support/secret-service.ts) for the device key
   * (and a tray's refresh token). Without it the daemon sees no keyring at all (never the
   * desktop's of whoever runs the tests) and keeps its key in a file, and a tray its token.
   */
  keyringBus?: string;
}

/** A session bus address where nothing listens. */
const NO_SESSION_BUS = 'unix:path=/nonexistent/cardlink-test-bus';

export interface TestDaemon {
  readonly configFile: string;
  readonly child: ChildProcess;
  /** Everything the daemon wrote to stdout and stderr so far (for failure messages). */
  output(): string;
  /** A control connection (the tray's view); the caller closes it. */
  control(): Promise<ControlClient>;
  status(): Promise<DaemonStatus>;
  cards(): Promise<CardStatus[]>;
  /** Runs `cardlink login --device-code` and approves it as `account` at the IdP. */
  login(account?: string): Promise<void>;
  /** Hands over a token directly (as the tray does). */
  handOver(accessToken: string, extra?: { refreshToken?: string }): Promise<void>;
  /** Waits until `predicate` holds for the daemon's cards, polling the control socket. */
  waitForCards(predicate: (cards: CardStatus[]) => boolean, timeoutMs?: number): Promise<CardStatus[]>;
  /** Collects control events from now on. */
  events(): Promise<{ seen: ControlEvent[]; close(): Promise<void> }>;
  stop(): Promise<void>;
  kill(): void;
}

function readerSettings(options: TestDaemonOptions): Record<string, unknown> {
  const { pcscd, vpcd } = options;
  if (vpcd)
    return {
      transport: 'vpcd',
      vpcdMode: vpcd.mode ?? 'listen',
      vpcdHost: '127.0.0.1',
      vpcdPort: vpcd.port,
      slots: 4,
    };
  if (!pcscd) throw new Error('startTestDaemon: give pcscd (bridge) or vpcd');
  return options.secondReader
    ? { bridgeSocket: pcscd.secondSocketPath, name: options.secondReader.friendlyName, slots: 4 }
    : { bridgeSocket: pcscd.socketPath, name: pcscd.friendlyName, slots: 4 };
}

export function cardlinkCli(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  nodeArgs: readonly string[] = [],
): ChildProcess {
  return spawn(process.execPath, [...nodeArgs, path.join(REPO_ROOT, 'dist', 'bin', 'main.js'), ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

async function finished(child: ChildProcess, what: string, output: () => string): Promise<void> {
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  if (code !== 0) throw new Error(`${what} exited ${code}:\n${output()}`);
}

export async function startTestDaemon(options: TestDaemonOptions): Promise<TestDaemon> {
  const { dir, idp } = options;
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const configFile = path.join(dir, 'daemon.json');
  const runtimeDir = path.join(dir, 'run');
  const logFile = path.join(dir, 'daemon.log');
  fs.writeFileSync(
    configFile,
    JSON.stringify(
      {
        server: { url: options.serverUrl, caFile: options.serverCaFile },
        login: { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource },
        reader: readerSettings(options),
        deviceName: options.deviceName,
        stateDir: path.join(dir, 'state'),
        runtimeDir,
        log: { level: 'debug', file: logFile },
        // A tray on this config keeps its refresh token in the test keyring when there is one;
        // else in a file, never in a keyring the desktop session's bus would start on demand.
        ...(options.keyringBus ? {} : { tray: { signInStore: 'file' } }),
        ...options.settings,
      },
      null,
      2,
    ),
  );
  const child = cardlinkCli(
    ['daemon', '--config', configFile],
    { ...process.env, DBUS_SESSION_BUS_ADDRESS: options.keyringBus ?? NO_SESSION_BUS },
    options.nodeArgs,
  );
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const output = () => text;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`daemon did not start:\n${text}`)), 15_000);
    const check = () => {
      if (text.includes('cardlink daemon: ready')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', check);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`daemon exited ${code} at start:\n${text}`));
    });
  });
  const connectControl = () =>
    ControlClient.connect({
      socketPath: path.join(runtimeDir, 'control.sock'),
      secretFile: path.join(runtimeDir, 'control.secret'),
      clientName: 'cardlink-test',
    });
  const withControl = async <T>(work: (c: ControlClient) => Promise<T>): Promise<T> => {
    const c = await connectControl();
    try {
      return await work(c);
    } finally {
      await c.close();
    }
  };

  return {
    configFile,
    child,
    output,
    control: connectControl,
    status: () => withControl((c) => c.request('status')),
    cards: () => withControl((c) => c.request('cards')),
    async login(account = 'alice') {
      const login = cardlinkCli(['login', '--device-code', '--config', configFile]);
      let said = '';
      login.stdout!.on('data', (d: Buffer) => (said += d.toString()));
      login.stderr!.on('data', (d: Buffer) => (said += d.toString()));
      const done = finished(login, 'cardlink login', () => said);
      const code = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`login printed no code:\n${said}`)), 15_000);
        const look = () => {
          const m = /enter the code (\S+)/.exec(said);
          if (m) {
            clearTimeout(timer);
            resolve(m[1]!);
          }
        };
        login.stdout!.on('data', look);
        void done.catch((e: unknown) => {
          clearTimeout(timer);
          reject(e as Error);
        });
      });
      await idp.approveDeviceCode(code, { account });
      await done;
    },
    async handOver(accessToken, extra = {}) {
      await withControl((c) => c.request('hand-over-token', { accessToken, ...extra }));
    },
    async waitForCards(predicate, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let last: CardStatus[] = [];
      while (Date.now() < deadline) {
        last = await withControl((c) => c.request('cards'));
        if (predicate(last)) return last;
        await new Promise((r) => setTimeout(r, 100));
      }
      const log = fs.existsSync(logFile)
        ? fs
            .readFileSync(logFile, 'utf8')
            .split('\n')
            .filter((l) => !/"message":"control (client|request)/.test(l))
            .slice(-40)
            .join('\n')
        : '';
      throw new Error(`cards never matched; last: ${JSON.stringify(last)}\n${text.slice(-2000)}\n${log}`);
    },
    async events() {
      const c = await connectControl();
      const seen: ControlEvent[] = [];
      c.on('event', (e) => seen.push(e));
      return { seen, close: () => c.close() };
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
    kill() {
      child.kill('SIGKILL');
    },
  };
}
