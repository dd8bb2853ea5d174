/**
 * The demo's daemon: the real `cardlink daemon` as a child process, with a config file in the
 * state directory that points it at the demo's card server and IdP and at the cardlink reader. A
 * child of its own, as on a desktop: its native PC/SC and reader threads, its logs and its
 * shutdown (cards out of the reader first) are the daemon's, and `stop()` sees it exit.
 */
import { spawn, type ChildProcess, type SpawnOptionsWithStdioTuple } from 'node:child_process';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../daemon/control/control-client.js';
import { controlPaths } from '../daemon/control/control-paths.js';
import type { CardStatus } from '../daemon/control/control-protocol.js';
import { DAEMON_NODE_OPTIONS, daemonProcessEnvironment } from '../daemon/cli/daemon-process.js';
import { CardlinkError } from '../protocol/errors.js';
import { writeFileAtomic, type DemoPaths } from './demo-state.js';

/** `dist/bin/main.js`, the program behind `bin/cardlink`. */
export const CARDLINK_MAIN = fileURLToPath(new URL('../bin/main.js', import.meta.url));
/** What the daemon prints once it serves its control socket. */
const DAEMON_READY = 'cardlink daemon: ready';
/** How long the daemon may take to start. */
export const DAEMON_START_TIMEOUT_MS = 30_000;
/** How long a stopping daemon may take (it closes its cards at the server first) before SIGKILL. */
export const DAEMON_STOP_GRACE_MS = 10_000;
/** Lines of the daemon's output kept for an error message. */
const OUTPUT_KEPT_BYTES = 4000;
/** Where setpriv lives (util-linux): the daemon dies with the demo even when the demo is killed. */
const SETPRIV = '/usr/bin/setpriv';

export interface DemoDaemonSettings {
  serverUrl: string;
  serverCaFile: string;
  issuer: string;
  clientId: string;
  resource: string;
  readerSocket: string;
  readerName: string;
}

/** Writes the daemon's config file (every run: the settings come from demo.json and the options). */
export function writeDemoDaemonConfig(paths: DemoPaths, settings: DemoDaemonSettings): void {
  const config = {
    server: { url: settings.serverUrl, caFile: settings.serverCaFile },
    login: { issuer: settings.issuer, clientId: settings.clientId, resource: settings.resource },
    reader: { bridgeSocket: settings.readerSocket, name: settings.readerName },
    deviceName: 'cardlink demo',
    stateDir: paths.daemonStateDir,
    // The demo's device key stays in the state directory (--reset removes it), not in the keyring.
    deviceKeyStore: 'file',
    runtimeDir: paths.runtimeDir,
    log: { level: 'info', file: paths.daemonLogFile },
  };
  writeFileAtomic(paths.daemonConfigFile, `${JSON.stringify(config, null, 2)}\n`, 0o600);
}

/**
 * The environment of the daemon and the tray: this one without the daemon's own CARDLINK_*
 * settings, which would override the demo's config file (docs/daemon-config.md: environment over
 * file).
 */
export function demoChildEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env))
    if (!k.startsWith('CARDLINK_') || k === 'CARDLINK_DEBUG') env[k] = v;
  return env;
}

/**
 * Spawns `node <args>` for a part of the demo that runs until the demo stops (the daemon, the
 * tray), stdout and stderr piped. A process group of its own: Ctrl-C reaches the demo alone, which
 * stops the parts first and in order. setpriv (same pid after its exec) makes the part die with the
 * demo even if the demo is killed outright.
 */
export function spawnTiedToDemo(args: readonly string[], env: NodeJS.ProcessEnv): ChildProcess {
  const spawnOptions: SpawnOptionsWithStdioTuple<'ignore', 'pipe', 'pipe'> = {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  };
  return fs.existsSync(SETPRIV)
    ? spawn(SETPRIV, ['--pdeathsig', 'TERM', '--', process.execPath, ...args], spawnOptions)
    : spawn(process.execPath, args, spawnOptions);
}

export interface DemoDaemon {
  readonly pid: number;
  /** The daemon's log file. */
  readonly logFile: string;
  /** Resolves with the exit code (or signal) once the daemon has exited, for whatever reason. */
  readonly exited: Promise<string>;
  /** The tail of what the daemon printed (for an error message). */
  output(): string;
  /** Resolves once the daemon serves its control socket; rejects when it stops first or `signal` aborts. */
  ready(signal: AbortSignal): Promise<void>;
  /** Runs `work` on a fresh control connection. */
  withControl<T>(work: (client: ControlClient) => Promise<T>): Promise<T>;
  /** SIGTERM, then SIGKILL after DAEMON_STOP_GRACE_MS; resolves once it has exited. */
  stop(): Promise<void>;
}

/**
 * Starts `cardlink daemon --config <state>/daemon/daemon.json` without waiting: the daemon boots
 * (node, its modules, the reader bridge, the control socket) while the demo starts the IdP and the
 * server; `ready()` waits for its ready line.
 */
export function spawnDemoDaemon(paths: DemoPaths): DemoDaemon {
  // node runs the daemon as bin/cardlink does (daemon/cli/daemon-process.ts).
  const args = [...DAEMON_NODE_OPTIONS, CARDLINK_MAIN, 'daemon', '--config', paths.daemonConfigFile];
  const child = spawnTiedToDemo(args, daemonProcessEnvironment(demoChildEnvironment()));
  let text = '';
  const keep = (d: Buffer) => {
    text = (text + d.toString()).slice(-OUTPUT_KEPT_BYTES);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, sig) => resolve(sig ?? `exit code ${code}`));
    child.once('error', (e) => resolve(`not started: ${e.message}`));
  });
  const control = controlPaths({ runtimeDir: paths.runtimeDir });

  // From the spawn on: the ready line may come before anybody asks.
  let timer: NodeJS.Timeout | undefined;
  const started = new Promise<void>((resolve, reject) => {
    const onData = () => {
      if (text.includes(DAEMON_READY)) {
        clearTimeout(timer);
        child.stdout!.off('data', onData);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    timer = setTimeout(
      () =>
        reject(
          new CardlinkError('ERR_INTERNAL', `the daemon did not start in time:\n${text.trim()}`, {
            log: paths.daemonLogFile,
          }),
        ),
      DAEMON_START_TIMEOUT_MS,
    );
    void exited.then((how) => {
      clearTimeout(timer);
      reject(
        new CardlinkError('ERR_INTERNAL', `the daemon stopped at start (${how}):\n${text.trim()}`, {
          log: paths.daemonLogFile,
        }),
      );
    });
  });
  started.catch(() => undefined); // ready() reports it

  return {
    pid: child.pid ?? -1,
    logFile: paths.daemonLogFile,
    exited,
    output: () => text,
    ready(signal) {
      return new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(signal.reason as Error);
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        started.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
      });
    },
    async withControl(work) {
      const client = await ControlClient.connect({ ...control, clientName: 'cardlink-demo' });
      try {
        return await work(client);
      } finally {
        await client.close();
      }
    },
    async stop() {
      clearTimeout(timer);
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const kill = setTimeout(() => child.kill('SIGKILL'), DAEMON_STOP_GRACE_MS);
      await exited;
      clearTimeout(kill);
    },
  };
}

/** Polls the daemon until `cardId` is in the reader; returns its status (with the reader's name). */
export async function waitForCardInserted(
  daemon: DemoDaemon,
  cardId: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<CardStatus> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    signal.throwIfAborted();
    const status = await daemon.withControl((c) => c.request('status'));
    const card = status.cards.find((c) => c.cardId === cardId);
    if (card?.state === 'inserted' && card.readerName) return card;
    last = status.lastError
      ? `${status.lastError.message} [${status.lastError.code}]`
      : `daemon ${status.state}${card ? `, card ${card.state}` : ', card not listed yet'}`;
    if (Date.now() > deadline)
      throw new CardlinkError(
        'ERR_SLOT_UNAVAILABLE',
        `the demo card did not reach the reader in ${Math.round(timeoutMs / 1000)} s (${last}); see the daemon's log ${daemon.logFile}`,
        { cardId },
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}
