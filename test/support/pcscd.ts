/**
 * Starts a private pcscd for a test, with our driver (daemon/ifd-handler) and optionally a reversed
 * vpcd reader, without touching the system's pcscd.
 *
 * Isolation. pcscd 1.9.9 does NOT honour PCSCLITE_CSOCK_NAME: only the client library does. The
 * daemon always binds /run/pcscd/pcscd.comm and writes /run/pcscd/pcscd.pid (and refuses to start
 * when another live pcscd owns them). So each pcscd runs in its own mount namespace
 * (`unshare --mount`, root needed) with a private directory bind-mounted on /run/pcscd, and clients
 * point PCSCLITE_CSOCK_NAME at that directory's pcscd.comm.
 *
 * libpcsclite reads PCSCLITE_CSOCK_NAME once per process (first context) and keeps it. So this module
 * uses ONE run directory per process and sets process.env.PCSCLITE_CSOCK_NAME itself: pcscd instances
 * of one process run one after another on the same socket path; different processes (node --test
 * runs each file in its own) run in parallel. Child processes get `instance.env`.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** How long startPcscd waits for pcscd to be ready. */
export const PCSCD_READY_TIMEOUT_MS = 15000;
/** How long stop() waits after SIGTERM before SIGKILL. */
export const PCSCD_STOP_GRACE_MS = 3000;
/** What pcscd logs (at --info) once its readers are up: pcscdaemon.c main(). */
const PCSCD_READY_LINE = /pcsc-lite [\d.]+ daemon ready/;
/** Poll interval while waiting for sockets. */
const POLL_MS = 10;
/** Debian's vpcd driver (vsmartcard-vpcd). */
export const VPCD_DRIVER = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';
/** Debian's pcscd. */
export const PCSCD_BINARY = '/usr/sbin/pcscd';
/** Set to 1 to keep each pcscd's temp dir (config, log, sockets) after stop(). */
const KEEP_ENV = 'CARDLINK_KEEP_TEST_DIRS';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'daemon', 'ifd-handler', 'Makefile'))) return dir;
    const up = path.dirname(dir);
    if (up === dir)
      throw new Error('test/support/pcscd: repository root (daemon/ifd-handler/Makefile) not found');
    dir = up;
  }
}

export const REPO_ROOT = findRepoRoot();
export const IFD_HANDLER_LIB = path.join(REPO_ROOT, 'daemon', 'ifd-handler', 'build', 'libifd-cardlink.so');

/** Builds the driver when it is missing (node --test dist/... without `npm run build`). */
export function ensureIfdHandlerBuilt(): string {
  if (!fs.existsSync(IFD_HANDLER_LIB)) {
    const r = spawnSync('make', ['-s', '-C', path.join(REPO_ROOT, 'daemon', 'ifd-handler')], {
      encoding: 'utf8',
    });
    if (r.status !== 0)
      throw new Error(`building the cardlink IFD handler failed: ${r.stderr || r.error?.message}`);
  }
  return IFD_HANDLER_LIB;
}

export interface CardlinkReaderOptions {
  /** Slots of the reader (DEVICENAME slots=); default 4. */
  slots?: number;
  /** The uid allowed next to root (DEVICENAME uid=). */
  uid?: number;
  /** Default "cardlink Test Reader". */
  friendlyName?: string;
}

export interface VpcdReaderOptions {
  /**
   * First port. Reversed mode (default): a card server must already listen on port and port + 1
   * (see vpcd-card-server.ts). Normal mode (`listen: true`): vpcd listens on them itself.
   */
  port: number;
  /**
   * vpcd's normal mode (`DEVICENAME /dev/null:<port>`): vpcd listens and the card side connects.
   * vpcd binds every interface (INADDR_ANY, no setting): only for a test on a free port.
   */
  listen?: boolean;
  /** Default "Virtual PCD". */
  friendlyName?: string;
}

export interface StartPcscdOptions {
  /**
   * A second cardlink reader with its own driver socket (`secondSocketPath`), e.g. for a second
   * daemon on the same machine; its FRIENDLYNAME must differ from the first.
   */
  secondCardlink?: CardlinkReaderOptions & { friendlyName: string };
  /** Our reader; on unless false. */
  cardlink?: CardlinkReaderOptions | false;
  /** A reversed vpcd reader. */
  vpcd?: VpcdReaderOptions;
  /** pcscd --debug instead of --info. */
  debug?: boolean;
  /** Overrides PCSCD_READY_TIMEOUT_MS. */
  readyTimeoutMs?: number;
}

export interface PcscdInstance {
  /** This instance's temp dir (reader.conf.d, log, bridge socket). */
  readonly dir: string;
  /** pcscd's client socket (PCSCLITE_CSOCK_NAME). */
  readonly commSocketPath: string;
  /** Environment for child processes (opensc-tool, ...): process.env + PCSCLITE_CSOCK_NAME. */
  readonly env: NodeJS.ProcessEnv;
  /** Our driver's socket (the bridge). */
  readonly socketPath: string;
  /** FRIENDLYNAME of our reader. */
  readonly friendlyName: string;
  /** The second cardlink reader's socket, when one was asked for. */
  readonly secondSocketPath: string | undefined;
  readonly pid: number;
  readonly logPath: string;
  /** Name pcscd gives slot `slot` of our reader, e.g. "cardlink Test Reader 00 01". */
  readerName(slot: number): string;
  /** Name pcscd gives slot `slot` of the vpcd reader, e.g. "Virtual PCD 00 01". */
  vpcdReaderName(slot: number): string;
  /** Whether pcscd is still running. */
  running(): boolean;
  /** pcscd's log so far. */
  log(): string;
  /** Stops pcscd (SIGTERM, then SIGKILL) and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

let runDir: string | undefined;
let current: PcscdInstance | undefined;
const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** Kills every pcscd still running and removes the temp dirs: on exit and on SIGINT / SIGTERM. */
function cleanupAll(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  if (process.env[KEEP_ENV] !== '1') {
    for (const dir of tempDirs) fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.once('exit', cleanupAll);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    cleanupAll();
    // Nobody else handles it: die of the signal, as without this handler.
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  });
}

function processRunDir(): string {
  if (!runDir) {
    runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-pcscd-run-'));
    tempDirs.add(runDir);
    const sock = path.join(runDir, 'pcscd.comm');
    const previous = process.env.PCSCLITE_CSOCK_NAME;
    if (previous && previous !== sock) {
      throw new Error(
        `PCSCLITE_CSOCK_NAME is already ${previous} in this process; libpcsclite keeps the first value`,
      );
    }
    process.env.PCSCLITE_CSOCK_NAME = sock;
  }
  return runDir;
}

function hex2(n: number): string {
  return n.toString(16).toUpperCase().padStart(2, '0');
}

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * Whether pcscd answers a PC/SC client, asked from a child process (opensc-tool -l). pcscd holds
 * every new client until all readers finished their first status check, and a vpcd reader's check
 * waits for the card server's GET ATR answer: asked from this process (npm pcsclite establishes its
 * context synchronously) while this process serves the vpcd card, that would deadlock.
 */
function readersInitialised(env: NodeJS.ProcessEnv): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn('opensc-tool', ['-l'], { env, stdio: 'ignore' });
    child.once('error', () => resolve(false));
    child.once('exit', (code) => resolve(code === 0));
  });
}

export async function startPcscd(options: StartPcscdOptions = {}): Promise<PcscdInstance> {
  if (process.getuid?.() !== 0)
    throw new Error('test/support/pcscd: needs root (unshare --mount, bind mount on /run/pcscd)');
  if (!fs.existsSync(PCSCD_BINARY)) throw new Error('pcscd is not installed: apt-get install pcscd');
  if (current?.running())
    throw new Error(
      'test/support/pcscd: one pcscd per process at a time (libpcsclite keeps one socket path); stop() the previous one',
    );
  const run = processRunDir();
  for (const f of ['pcscd.comm', 'pcscd.pid']) fs.rmSync(path.join(run, f), { force: true });

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-pcscd-'));
  tempDirs.add(dir);
  const confDir = path.join(dir, 'reader.conf.d');
  fs.mkdirSync(confDir);
  const socketPath = path.join(dir, 'bridge.sock');
  const logPath = path.join(dir, 'pcscd.log');
  const cardlink = options.cardlink === false ? undefined : (options.cardlink ?? {});
  const friendlyName = cardlink?.friendlyName ?? 'cardlink Test Reader';
  const vpcdName = options.vpcd?.friendlyName ?? 'Virtual PCD';
  if (cardlink) {
    const lib = ensureIfdHandlerBuilt();
    const device = `${socketPath}:slots=${cardlink.slots ?? 4}${cardlink.uid !== undefined ? `:uid=${cardlink.uid}` : ''}`;
    fs.writeFileSync(
      path.join(confDir, 'cardlink'),
      `FRIENDLYNAME "${friendlyName}"\nDEVICENAME ${device}\nLIBPATH ${lib}\n`,
    );
  }
  const second = options.secondCardlink;
  const secondSocketPath = second ? path.join(dir, 'bridge-2.sock') : undefined;
  if (second) {
    const device = `${secondSocketPath}:slots=${second.slots ?? 4}${second.uid !== undefined ? `:uid=${second.uid}` : ''}`;
    fs.writeFileSync(
      path.join(confDir, 'cardlink-2'),
      `FRIENDLYNAME "${second.friendlyName}"\nDEVICENAME ${device}\nLIBPATH ${ensureIfdHandlerBuilt()}\n`,
    );
  }
  if (options.vpcd) {
    const port = options.vpcd.port;
    fs.writeFileSync(
      path.join(confDir, 'vpcd'),
      `FRIENDLYNAME "${vpcdName}"\nDEVICENAME ${options.vpcd.listen ? '/dev/null' : 'localhost'}:${port}\nLIBPATH ${VPCD_DRIVER}\nCHANNELID ${port}\n`,
    );
  }

  const logFd = fs.openSync(logPath, 'a');
  // setpriv --pdeathsig: pcscd (same pid as the spawned process, after the execs) dies with this
  // process even when it is killed without running its exit handlers.
  const script =
    'mkdir -p /run/pcscd && mount --bind "$1" /run/pcscd && exec setpriv --pdeathsig KILL -- "$2" --foreground "$3" -c "$4"';
  const child = spawn(
    'unshare',
    [
      '--mount',
      '--propagation',
      'private',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      run,
      PCSCD_BINARY,
      options.debug ? '--debug' : '--info',
      confDir,
    ],
    {
      stdio: ['ignore', logFd, logFd],
    },
  );
  fs.closeSync(logFd);
  children.add(child);
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      children.delete(child);
      resolve();
    });
  });
  const commSocketPath = path.join(run, 'pcscd.comm');

  const instance: PcscdInstance = {
    dir,
    commSocketPath,
    env: { ...process.env, PCSCLITE_CSOCK_NAME: commSocketPath },
    socketPath,
    friendlyName,
    secondSocketPath,
    pid: child.pid ?? -1,
    logPath,
    readerName: (slot) => `${friendlyName} 00 ${hex2(slot)}`,
    vpcdReaderName: (slot) => `${vpcdName} 00 ${hex2(slot)}`,
    running: () => !exited,
    log: () => (fs.existsSync(logPath) ? fs.readFileSync(logPath, 'utf8') : ''),
    stop: async () => {
      if (!exited) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), PCSCD_STOP_GRACE_MS);
        await exitPromise;
        clearTimeout(timer);
      }
      for (const f of ['pcscd.comm', 'pcscd.pid']) fs.rmSync(path.join(run, f), { force: true });
      if (process.env[KEEP_ENV] !== '1') {
        fs.rmSync(dir, { recursive: true, force: true });
        tempDirs.delete(dir);
      }
    },
  };
  current = instance;

  const deadline = Date.now() + (options.readyTimeoutMs ?? PCSCD_READY_TIMEOUT_MS);
  for (;;) {
    if (exited) {
      const log = instance.log();
      await instance.stop();
      throw new Error(`pcscd exited during start-up; log:\n${log.slice(-4000)}`);
    }
    // pcscd binds its socket before it starts the readers (and a vpcd reader blocks the start until
    // every slot answers GET ATR): a client that connects earlier, from a process that also serves
    // the vpcd card, deadlocks (npm pcsclite establishes contexts synchronously). Wait for the log.
    const ready =
      fs.existsSync(commSocketPath) &&
      (!cardlink || fs.existsSync(socketPath)) &&
      (!secondSocketPath || fs.existsSync(secondSocketPath)) &&
      PCSCD_READY_LINE.test(instance.log()) &&
      (await canConnect(commSocketPath));
    // In normal mode vpcd waits for no one: its empty slots answer "no card" at once.
    if (ready && (!options.vpcd || options.vpcd.listen || (await readersInitialised(instance.env))))
      return instance;
    if (Date.now() > deadline) {
      const log = instance.log();
      await instance.stop();
      throw new Error(`pcscd not ready in time; log:\n${log.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
