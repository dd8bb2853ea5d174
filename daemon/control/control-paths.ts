/**
 * Where the control socket and its secret live, and how they are kept private.
 *
 * Both sit in the runtime directory: `$XDG_RUNTIME_DIR/cardlink`, or `/tmp/cardlink-<uid>` when
 * XDG_RUNTIME_DIR is unset. That directory must be a real directory (not a symlink) owned by the
 * current user with no permission for group or others: in /tmp anyone could have created it first,
 * and whoever controls it could stand in for the daemon and receive the user's tokens.
 *
 * The secret is CONTROL_SECRET_BYTES random bytes, base64url, followed by LF; the daemon writes a
 * new one at each start (mode 0600, temporary file + rename) and removes it when it stops.
 *
 * On Windows the socket is a named pipe, `\\.\pipe\cardlink-control-<16 hex>` (named after the
 * user's runtime directory), and the secret sits in `%LOCALAPPDATA%\cardlink`, which the profile's
 * ACLs keep to the user. There are no POSIX owners or mode bits to check there, and any user may
 * create a pipe of a given name while the daemon is down: the handshake's mutual proof of the secret
 * (control-proof.ts) is what keeps a client from talking to such a squatter.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { basename, dirname, isAbsolute, join, win32 } from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { CONTROL_SECRET_BYTES } from './control-protocol.js';

/** Name of the daemon's folder inside $XDG_RUNTIME_DIR. */
export const CONTROL_DIRECTORY_NAME = 'cardlink';
/** File name of the control socket in the runtime directory. */
export const CONTROL_SOCKET_NAME = 'control.sock';
/** File name of the secret in the runtime directory. */
export const CONTROL_SECRET_NAME = 'control.secret';
/** Largest secret file read, in bytes (the secret itself is 44). */
export const MAX_SECRET_FILE_BYTES = 1024;

export interface ControlPaths {
  runtimeDir: string;
  socketPath: string;
  secretFile: string;
}

export interface ControlPathOptions {
  /** Replaces the runtime directory (tests). */
  runtimeDir?: string;
  /** Replaces the socket path (tests). */
  socketPath?: string;
  /** Replaces the secret file (tests). */
  secretFile?: string;
  /** Environment to read XDG_RUNTIME_DIR (LOCALAPPDATA on Windows) from (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Default process.platform (tests give win32). */
  platform?: NodeJS.Platform;
}

/** Prefix of a Windows named pipe path; such a "socket" has no file and no directory of its own. */
const NAMED_PIPE_PREFIX = '\\\\.\\pipe\\';

export function isNamedPipePath(path: string): boolean {
  return path.startsWith(NAMED_PIPE_PREFIX);
}

/** Whether files here have POSIX owners and mode bits to check (not on Windows: ACLs there). */
export function hasPosixPermissions(platform: NodeJS.Platform = process.platform): boolean {
  return platform !== 'win32';
}

function currentUid(): number {
  if (typeof process.getuid !== 'function') {
    throw new CardlinkError(
      'ERR_CONTROL_UNAVAILABLE',
      'the control socket needs a POSIX system (no uid here)',
    );
  }
  return process.getuid();
}

/**
 * `$XDG_RUNTIME_DIR/cardlink` when XDG_RUNTIME_DIR is set to an absolute path, else
 * `/tmp/cardlink-<uid>`; on Windows `%LOCALAPPDATA%\cardlink`.
 */
export function controlRuntimeDirectory(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): string {
  if (platform === 'win32') {
    const local = env.LOCALAPPDATA;
    if (!local || !win32.isAbsolute(local))
      throw new CardlinkError(
        'ERR_CONTROL_UNAVAILABLE',
        'LOCALAPPDATA is not set to an absolute path: there is no per-user place for the control secret',
      );
    return win32.join(local, CONTROL_DIRECTORY_NAME);
  }
  const xdg = env.XDG_RUNTIME_DIR;
  if (xdg && isAbsolute(xdg)) return join(xdg, CONTROL_DIRECTORY_NAME);
  return `/tmp/cardlink-${currentUid()}`;
}

/** The socket and secret paths, with the options' replacements applied. */
export function controlPaths(options: ControlPathOptions = {}): ControlPaths {
  const platform = options.platform ?? process.platform;
  const runtimeDir = options.runtimeDir ?? controlRuntimeDirectory(options.env, platform);
  if (platform === 'win32') {
    // One pipe per user: its name comes from the user's own runtime directory.
    const id = createHash('sha256').update(runtimeDir.toLowerCase()).digest('hex').slice(0, 16);
    return {
      runtimeDir,
      socketPath: options.socketPath ?? `${NAMED_PIPE_PREFIX}cardlink-control-${id}`,
      secretFile: options.secretFile ?? win32.join(runtimeDir, CONTROL_SECRET_NAME),
    };
  }
  return {
    runtimeDir,
    socketPath: options.socketPath ?? join(runtimeDir, CONTROL_SOCKET_NAME),
    secretFile: options.secretFile ?? join(runtimeDir, CONTROL_SECRET_NAME),
  };
}

function insecure(path: string, why: string, context: Record<string, string | number | boolean> = {}) {
  return new CardlinkError('ERR_KEY_FILE_INSECURE', `${path}: ${why}`, { path, ...context });
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Checks that `dir` is a directory (not a symlink) owned by the current user with no group or other
 * permission bits; throws ERR_KEY_FILE_INSECURE naming the path otherwise. ENOENT passes through.
 */
export async function checkPrivateDirectory(dir: string): Promise<void> {
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) throw insecure(dir, 'must be a directory (symlinks are not followed)');
  if (!hasPosixPermissions()) return;
  const uid = currentUid();
  if (st.uid !== uid) {
    throw insecure(dir, `is owned by uid ${st.uid}, not by the current user (uid ${uid})`, {
      owner: st.uid,
      uid,
    });
  }
  if ((st.mode & 0o077) !== 0) {
    throw insecure(dir, `has mode ${octal(st.mode)}; group and others must have no access (chmod 700)`, {
      mode: octal(st.mode),
    });
  }
}

/**
 * Creates `dir` with mode 0700 when it is missing (parents too), else checks it as
 * checkPrivateDirectory does. Throws ERR_KEY_FILE_INSECURE naming the path when it is not private.
 */
export async function ensurePrivateDirectory(dir: string): Promise<void> {
  const created = await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  // The umask may have taken bits away from the new directory; it is ours, so set them exactly.
  if (created !== undefined) await fs.chmod(dir, 0o700);
  await checkPrivateDirectory(dir);
}

/** A new secret: CONTROL_SECRET_BYTES random bytes as base64url. */
export function generateControlSecret(): string {
  return randomBytes(CONTROL_SECRET_BYTES).toString('base64url');
}

/**
 * Writes `secret` to `file` atomically with mode 0600: a new temporary file in the same directory
 * (O_CREAT|O_EXCL, never follows a link), fsync, then rename over `file`.
 */
export async function writeControlSecret(file: string, secret: string): Promise<void> {
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const flags = fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW;
  const fh = await fs.open(temp, flags, 0o600);
  try {
    try {
      await fh.chmod(0o600); // exactly 0600, whatever the umask
      await fh.writeFile(`${secret}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(temp, file);
  } catch (error) {
    await fs.rm(temp, { force: true });
    throw error;
  }
}

/** Generates a new secret and writes it to `file` (writeControlSecret); returns it. */
export async function createControlSecret(file: string): Promise<string> {
  const secret = generateControlSecret();
  await writeControlSecret(file, secret);
  return secret;
}

/**
 * Reads the secret from `file`: a regular file (not a symlink) owned by the current user with no
 * group or other permission (else ERR_KEY_FILE_INSECURE). Errno errors (ENOENT, EACCES) pass through.
 */
export async function readControlSecret(file: string): Promise<string> {
  const fh = await fs.open(file, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw insecure(file, 'must be a regular file');
    if (hasPosixPermissions()) {
      const uid = currentUid();
      if (st.uid !== uid)
        throw insecure(file, `is owned by uid ${st.uid}, not by the current user (uid ${uid})`);
      if ((st.mode & 0o077) !== 0) throw insecure(file, `has mode ${octal(st.mode)}; it must be 0600`);
    }
    if (st.size > MAX_SECRET_FILE_BYTES) {
      throw new CardlinkError('ERR_CONTROL_AUTH', `${file}: not a control secret (too large)`, {
        path: file,
      });
    }
    const buf = Buffer.alloc(MAX_SECRET_FILE_BYTES);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).toString('utf8').trim();
  } finally {
    await fh.close();
  }
}
