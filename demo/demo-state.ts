/**
 * The state directory of `cardlink demo`: everything a run makes lives in one directory, so that a
 * second run reuses it (same IdP signing keys, same server data, same card) and `--reset` removes
 * it. Default `$XDG_STATE_HOME/cardlink/demo` (~/.local/state/cardlink/demo). Layout (docs/demo.md):
 *
 *   .cardlink-demo      marker, written first: this directory is the demo's (--reset checks it)
 *   demo.json           what the first run set up (ports, user, card id), written last
 *   secrets/            0700: password (the demo user's), pin, puk, management-key; each 0600
 *   idp/keys.json       0600: the demo IdP's signing keys and cookie keys
 *   server/             the card server's data dir (server.json, cardlink.db, kek.json, tls/)
 *   daemon/             daemon.json, the device key (state/), daemon.log
 *   run/                the daemon's control socket (0700)
 *   try/                message.txt and what the printed commands write
 *
 * A directory with the marker and no demo.json is a first run that stopped half-way; a demo.json of
 * another version is from another cardlink: both are refused with the fix (--reset), never guessed at.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CardlinkError } from '../protocol/errors.js';

/** Version of the layout above; a directory of another version is refused (start over with --reset). */
export const DEMO_STATE_VERSION = 1;
/** The marker file's name and content. */
export const DEMO_MARKER = '.cardlink-demo';
const MARKER_TEXT = 'cardlink demo state directory (cardlink demo --reset removes it)\n';
/** Longest state file read (demo.json, a secret). */
const MAX_STATE_FILE_BYTES = 64 * 1024;
/** Longest Unix socket path (sun_path is 108 bytes on Linux, with its NUL). */
const MAX_SOCKET_PATH = 100;

/** What demo.json records. */
export interface DemoStateFile {
  readonly version: number;
  /** 127.0.0.1 port of the demo IdP: part of the issuer URL, so it stays with the state. */
  readonly idpPort: number;
  /** 127.0.0.1 port of the card server: part of its URL (the tokens' audience). */
  readonly serverPort: number;
  /** The demo user (the IdP account and the card's owner). */
  readonly user: string;
  readonly cardId: string;
  readonly createdAt: string;
}

export interface DemoPaths {
  readonly root: string;
  readonly marker: string;
  readonly stateFile: string;
  readonly secretsDir: string;
  readonly passwordFile: string;
  readonly pinFile: string;
  readonly pukFile: string;
  readonly managementKeyFile: string;
  readonly idpKeysFile: string;
  readonly serverDir: string;
  readonly serverConfigFile: string;
  readonly serverLogFile: string;
  readonly daemonDir: string;
  readonly daemonConfigFile: string;
  readonly daemonStateDir: string;
  readonly daemonLogFile: string;
  readonly runtimeDir: string;
  readonly tryDir: string;
}

/** `$XDG_STATE_HOME/cardlink/demo`, or ~/.local/state/cardlink/demo. */
export function defaultDemoStateDir(env: NodeJS.ProcessEnv = process.env): string {
  const state = env['XDG_STATE_HOME'] || path.join(env['HOME'] || os.homedir(), '.local', 'state');
  return path.join(state, 'cardlink', 'demo');
}

export function demoPaths(root: string): DemoPaths {
  const abs = path.resolve(root);
  const secretsDir = path.join(abs, 'secrets');
  const serverDir = path.join(abs, 'server');
  const daemonDir = path.join(abs, 'daemon');
  let runtimeDir = path.join(abs, 'run');
  // The control socket's path must fit a sockaddr_un: a deep state directory gets a short private
  // directory in the temp dir instead, named after the state directory.
  if (path.join(runtimeDir, 'control.sock').length > MAX_SOCKET_PATH) {
    const tag = createHash('sha256').update(abs).digest('hex').slice(0, 12);
    runtimeDir = path.join(os.tmpdir(), `cardlink-demo-${process.getuid?.() ?? 0}-${tag}`);
  }
  return {
    root: abs,
    marker: path.join(abs, DEMO_MARKER),
    stateFile: path.join(abs, 'demo.json'),
    secretsDir,
    passwordFile: path.join(secretsDir, 'password'),
    pinFile: path.join(secretsDir, 'pin'),
    pukFile: path.join(secretsDir, 'puk'),
    managementKeyFile: path.join(secretsDir, 'management-key'),
    idpKeysFile: path.join(abs, 'idp', 'keys.json'),
    serverDir,
    serverConfigFile: path.join(serverDir, 'server.json'),
    serverLogFile: path.join(serverDir, 'server.log'),
    daemonDir,
    daemonConfigFile: path.join(daemonDir, 'daemon.json'),
    daemonStateDir: path.join(daemonDir, 'state'),
    daemonLogFile: path.join(daemonDir, 'daemon.log'),
    runtimeDir,
    tryDir: path.join(abs, 'try'),
  };
}

/** The command that starts over in `paths` (with --state-dir unless it is the default), plus `extra`. */
export function resetCommand(paths: DemoPaths, extra = ''): string {
  const dir = paths.root === path.resolve(defaultDemoStateDir()) ? '' : ` --state-dir ${paths.root}`;
  return `cardlink demo --reset${dir}${extra ? ` ${extra}` : ''}`;
}

const stateError = (paths: DemoPaths, problem: string, extra: Record<string, string> = {}) =>
  new CardlinkError(
    'ERR_DEMO_STATE',
    `the demo state directory ${paths.root} ${problem}: start over with '${resetCommand(paths)}'`,
    { stateDir: paths.root, ...extra },
  );

/** `fresh`: nothing there yet (or an empty directory); `ready`: a complete state of this version. */
export type DemoStateStatus = { kind: 'fresh' } | { kind: 'ready'; state: DemoStateFile };

/** What is in the state directory; throws ERR_DEMO_STATE (naming --reset) for anything else. */
export function inspectDemoState(paths: DemoPaths): DemoStateStatus {
  let entries: string[];
  try {
    entries = fs.readdirSync(paths.root);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { kind: 'fresh' };
    if (code === 'ENOTDIR') throw stateError(paths, 'is a file, not a directory');
    throw stateError(paths, `cannot be read (${code ?? 'error'})`);
  }
  if (entries.length === 0) return { kind: 'fresh' };
  if (!entries.includes(DEMO_MARKER))
    throw new CardlinkError(
      'ERR_DEMO_STATE',
      `${paths.root} is not empty and is not a cardlink demo state directory: name another with --state-dir`,
      { stateDir: paths.root },
    );
  if (!entries.includes('demo.json'))
    throw stateError(paths, 'is incomplete (an earlier first run stopped half-way)');
  let state: Partial<DemoStateFile>;
  try {
    state = JSON.parse(readSmallFile(paths.stateFile)) as Partial<DemoStateFile>;
  } catch {
    throw stateError(paths, 'has an unreadable demo.json');
  }
  if (state.version !== DEMO_STATE_VERSION)
    throw stateError(
      paths,
      `was made by another version of cardlink demo (state version ${String(state.version)}, this one reads ${DEMO_STATE_VERSION})`,
    );
  const port = (p: unknown) => Number.isInteger(p) && (p as number) > 0 && (p as number) < 65536;
  if (
    !port(state.idpPort) ||
    !port(state.serverPort) ||
    typeof state.user !== 'string' ||
    typeof state.cardId !== 'string'
  )
    throw stateError(paths, 'has a damaged demo.json');
  for (const [file, what] of [
    [paths.passwordFile, 'the demo password'],
    [paths.pinFile, 'the card PIN'],
    [paths.idpKeysFile, "the demo IdP's keys"],
    [path.join(paths.serverDir, 'cardlink.db'), "the card server's database"],
    [path.join(paths.serverDir, 'kek.json'), "the card server's key file"],
  ] as const) {
    if (!fs.existsSync(file))
      throw stateError(paths, `is missing ${what} (${path.relative(paths.root, file)})`);
  }
  return { kind: 'ready', state: state as DemoStateFile };
}

/** Creates the (fresh) state directory, private, with its marker first. */
export function createDemoStateDir(paths: DemoPaths): void {
  fs.mkdirSync(paths.root, { recursive: true, mode: 0o700 });
  fs.chmodSync(paths.root, 0o700);
  fs.writeFileSync(paths.marker, MARKER_TEXT, { mode: 0o600 });
}

/** Makes the directories a run writes into (they exist after the first run; cheap to repeat). */
export function ensureDemoDirectories(paths: DemoPaths): void {
  for (const dir of [
    paths.secretsDir,
    path.dirname(paths.idpKeysFile),
    paths.serverDir,
    paths.daemonDir,
    paths.daemonStateDir,
    paths.runtimeDir,
    paths.tryDir,
  ])
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/**
 * Removes the state directory (`--reset`): only one that carries the demo's marker (or an empty
 * one), so a mistyped --state-dir can never remove somebody's files.
 */
export function removeDemoState(paths: DemoPaths): void {
  let entries: string[];
  try {
    entries = fs.readdirSync(paths.root);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (entries.length > 0 && !entries.includes(DEMO_MARKER))
    throw new CardlinkError(
      'ERR_DEMO_STATE',
      `--reset refused: ${paths.root} is not a cardlink demo state directory (no ${DEMO_MARKER}); remove it yourself if you mean it`,
      { stateDir: paths.root },
    );
  fs.rmSync(paths.root, { recursive: true, force: true });
  if (paths.runtimeDir !== path.join(paths.root, 'run'))
    fs.rmSync(paths.runtimeDir, { recursive: true, force: true });
}

/** Writes `file` whole or not at all (temporary file, then rename), with `mode`. */
export function writeFileAtomic(file: string, data: string, mode: number): void {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    fs.writeFileSync(tmp, data, { mode, flag: 'wx' });
    fs.chmodSync(tmp, mode);
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
}

/** A secret in its own file, 0600, with a final newline (so `cat` shows it on its own line). */
export function writeSecretFile(file: string, secret: string): void {
  writeFileAtomic(file, `${secret}\n`, 0o600);
}

/** Reads a secret file, refusing one that group or others may read (someone changed it). */
export function readSecretFile(file: string): string {
  const stat = fs.statSync(file);
  if ((stat.mode & 0o077) !== 0)
    throw new CardlinkError(
      'ERR_DEMO_STATE',
      `${file} may be read by group or others: chmod 600 it, or start over with 'cardlink demo --reset'`,
      { file },
    );
  return readSmallFile(file).trim();
}

export function writeDemoState(paths: DemoPaths, state: DemoStateFile): void {
  writeFileAtomic(paths.stateFile, `${JSON.stringify(state, null, 2)}\n`, 0o600);
}

function readSmallFile(file: string): string {
  const stat = fs.statSync(file);
  if (!stat.isFile() || stat.size > MAX_STATE_FILE_BYTES) throw new Error(`${file}: not a small file`);
  return fs.readFileSync(file, 'utf8');
}
