/**
 * Where the tray keeps the refresh token of its sign-in between runs, so that a restart of the
 * tray, the daemon or the machine brings the cards back without a new sign-in while the token is
 * valid (docs/security-model.md, "The refresh token's owner").
 *
 * The desktop keyring first: the Secret Service on Linux (never the kernel keyring, gone at reboot),
 * the Keychain and the Credential Manager elsewhere, through @napi-rs/keyring as for the device
 * key. One entry per installation: service `cardlink refresh token`, account the daemon's state
 * directory; its secret is a small JSON object naming the issuer and client the token belongs to.
 * Only where the keyring cannot store it (no session bus, no Secret Service, no unlocked
 * collection) does the token go to a private file, `<stateDir>/tray-refresh-token.json`, mode 0600
 * in the 0700 state directory, written to a temporary file and renamed into place.
 *
 * Nothing else ever holds the token on disk: a save into the keyring deletes the file, and
 * `clear()` empties both.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AsyncEntry } from '@napi-rs/keyring';
import type { RefreshTokenStoreSetting } from '../daemon/config/daemon-config.js';
import { hasPosixPermissions } from '../daemon/control/control-paths.js';
import { CardlinkError } from '../protocol/errors.js';

export const REFRESH_TOKEN_KEYRING_SERVICE = 'cardlink refresh token';
export const REFRESH_TOKEN_FILE = 'tray-refresh-token.json';
/**
 * A keyring call may wait for the user to type the keyring's password into an unlock prompt: as
 * long as for the device key (device-key-keyring.ts), short of a hang.
 */
export const REFRESH_TOKEN_KEYRING_TIMEOUT_MS = 30_000;
/** Largest stored sign-in read back (refresh tokens are at most a few KiB, even as JWTs). */
export const MAX_STORED_SIGN_IN_BYTES = 16 * 1024;

/** A sign-in the tray can renew: the token and whom it was issued by and to. */
export interface StoredSignIn {
  readonly issuer: string;
  readonly clientId: string;
  readonly refreshToken: string;
}

export interface RefreshTokenStoreOptions {
  /** The daemon's state directory (the installation): names the keyring entry, holds the file. */
  stateDir: string;
  setting?: RefreshTokenStoreSetting;
  /** Overrides REFRESH_TOKEN_KEYRING_TIMEOUT_MS. */
  keyringTimeoutMs?: number;
}

function unavailable(message: string, cause?: unknown): CardlinkError {
  return new CardlinkError('ERR_TOKEN_STORE_UNAVAILABLE', message, {}, { cause });
}

function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** The stored JSON as a sign-in; undefined when it is not one (never quoted: it holds a token). */
function parseSignIn(text: string): StoredSignIn | undefined {
  try {
    const value = JSON.parse(text) as Record<string, unknown> | null;
    const { issuer, clientId, refreshToken } = value ?? {};
    if (typeof issuer === 'string' && typeof clientId === 'string' && typeof refreshToken === 'string')
      if (issuer && clientId && refreshToken) return { issuer, clientId, refreshToken };
  } catch {
    // not JSON
  }
  return undefined;
}

export class RefreshTokenStore {
  /** The store the last load or save used. */
  lastStore: 'keyring' | 'file' | undefined;
  /** Why the keyring could not be used at the last attempt (shown once by the tray). */
  keyringProblem: string | undefined;
  private readonly file: string;
  private readonly setting: RefreshTokenStoreSetting;
  private readonly timeoutMs: number;

  constructor(private readonly options: RefreshTokenStoreOptions) {
    this.file = path.join(options.stateDir, REFRESH_TOKEN_FILE);
    this.setting = options.setting ?? 'auto';
    this.timeoutMs = options.keyringTimeoutMs ?? REFRESH_TOKEN_KEYRING_TIMEOUT_MS;
  }

  /** The stored sign-in, if any: the keyring's, else the file's. */
  async load(): Promise<StoredSignIn | undefined> {
    if (this.setting !== 'file') {
      try {
        const secret = await (await this.entry()).getPassword(AbortSignal.timeout(this.timeoutMs));
        if (secret) {
          const signIn = parseSignIn(secret);
          this.lastStore = 'keyring';
          if (signIn) return signIn;
        }
      } catch (error) {
        this.keyringProblem = reasonOf(error);
        if (this.setting === 'keyring')
          throw unavailable(`the desktop keyring cannot be read: ${this.keyringProblem}`, error);
      }
    }
    if (this.setting === 'keyring') return undefined;
    const text = this.readFile();
    if (text === undefined) return undefined;
    this.lastStore = 'file';
    return parseSignIn(text);
  }

  /** Stores `signIn` (replacing what was there); returns where it went. */
  async save(signIn: StoredSignIn): Promise<'keyring' | 'file'> {
    const text = JSON.stringify(signIn);
    if (this.setting !== 'file') {
      try {
        await (await this.entry()).setPassword(text, AbortSignal.timeout(this.timeoutMs));
        this.keyringProblem = undefined;
        fs.rmSync(this.file, { force: true });
        return (this.lastStore = 'keyring');
      } catch (error) {
        this.keyringProblem = reasonOf(error);
        if (this.setting === 'keyring')
          throw unavailable(`the desktop keyring cannot store the sign-in: ${this.keyringProblem}`, error);
      }
    }
    this.writeFile(text);
    return (this.lastStore = 'file');
  }

  /** Forgets the stored sign-in in both places (sign-out, a token the IdP refused). */
  async clear(): Promise<void> {
    fs.rmSync(this.file, { force: true });
    if (this.setting === 'file') return;
    try {
      await (await this.entry()).deleteCredential(AbortSignal.timeout(this.timeoutMs));
    } catch (error) {
      this.keyringProblem = reasonOf(error);
    }
  }

  /** Loaded on first use: a platform without the library's binary has no keyring, not a broken tray. */
  private async entry(): Promise<AsyncEntry> {
    const { AsyncEntry } = await import('@napi-rs/keyring');
    return new AsyncEntry(REFRESH_TOKEN_KEYRING_SERVICE, this.options.stateDir, {
      linux: { store: 'secret-service' },
    });
  }

  /** The file's text; undefined when there is none. Refuses a file others could read or swap. */
  private readFile(): string | undefined {
    let stat: fs.Stats;
    try {
      stat = fs.lstatSync(this.file);
    } catch {
      return undefined;
    }
    if (!stat.isFile() || stat.size > MAX_STORED_SIGN_IN_BYTES)
      throw unavailable(`${this.file} is not a cardlink sign-in file; delete it and sign in again`);
    if (hasPosixPermissions() && (stat.mode & 0o077) !== 0)
      throw new CardlinkError(
        'ERR_KEY_FILE_INSECURE',
        `${this.file} is readable or writable by other users (mode ${(stat.mode & 0o777).toString(8)}); ` +
          'delete it and sign in again',
        { file: this.file },
      );
    return fs.readFileSync(this.file, 'utf8');
  }

  /** A fresh 0600 temporary file (O_EXCL, fsynced), renamed over the old one: never half a token. */
  private writeFile(text: string): void {
    fs.mkdirSync(this.options.stateDir, { recursive: true, mode: 0o700 });
    const temp = `${this.file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      const fd = fs.openSync(
        temp,
        fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
        0o600,
      );
      try {
        fs.writeSync(fd, text);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(temp, this.file);
    } finally {
      fs.rmSync(temp, { force: true });
    }
  }
}
