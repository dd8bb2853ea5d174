/**
 * The default key provider: versioned 256-bit keys in a local JSON file.
 *
 * - Created on first start with mode 0600 (directory 0700), one KEK and one PIN key.
 * - Refused (`ERR_KEY_FILE_INSECURE`) when group or others have any permission on it, when it is
 *   not a regular file (symlinks are not followed) or when another user owns it: a key file others
 *   can read is a key others have.
 * - Rewritten atomically (temporary file, fsync, rename) on rotation and retirement. Retired
 *   versions keep their number (without key) so a version number is never reused.
 *
 * Whoever can read the file and the database has every key: keep the file off the database host's
 * backups, or use PKCS#11. Other server processes see a rotation when they next meet an unknown
 * version (they reload the file); restart them to make them wrap under the new version.
 */
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { constants as fsConstants, promises as fs } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import {
  checkRetirable,
  GCM_IV_BYTES,
  GCM_TAG_BYTES,
  KEK_WRAP_DOMAIN,
  KEY_BYTES,
  KeyProviderError,
  SealedKeyInvalidError,
  VersionedKeys,
  type KekProvider,
  type WrappedDataKey,
} from './kek-provider.js';

/** The `format` field of a key file this code reads and writes. */
export const KEY_FILE_FORMAT = 'cardlink-keyfile/1';

/** Largest key file read, in bytes (thousands of versions fit). */
export const MAX_KEY_FILE_BYTES = 1024 * 1024;

interface KeyEntry {
  version: number;
  createdAt: string;
  /** Base64 of 32 bytes; absent once retired. */
  key?: string;
  retiredAt?: string;
}

interface KeyFileContent {
  format: typeof KEY_FILE_FORMAT;
  kek: KeyEntry[];
  pinKey: KeyEntry[];
}

export interface KeyFileProviderOptions {
  /** Create the file when missing (default true). */
  create?: boolean;
}

export class KeyFileInsecureError extends CardlinkError {
  constructor(message: string, context: Record<string, string | number | boolean>) {
    super('ERR_KEY_FILE_INSECURE', message, context);
    this.name = 'KeyFileInsecureError';
  }
}

/** Opens (and on first start creates) the key file at `path`. */
export async function openKeyFileProvider(
  path: string,
  options: KeyFileProviderOptions = {},
): Promise<KekProvider> {
  const provider = new KeyFileProvider(path);
  await provider.load(options.create ?? true);
  return provider;
}

class KeyFileProvider extends VersionedKeys<Buffer> implements KekProvider {
  readonly kind = 'keyfile';
  private content: KeyFileContent | undefined;

  constructor(private readonly path: string) {
    super();
  }

  async load(create: boolean): Promise<void> {
    let text: string | undefined;
    try {
      text = await readPrivateFile(this.path);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !create)
        throw asProviderError(error, this.path);
    }
    if (text === undefined) {
      const now = new Date().toISOString();
      const fresh: KeyFileContent = {
        format: KEY_FILE_FORMAT,
        kek: [{ version: 1, createdAt: now, key: randomBytes(KEY_BYTES).toString('base64') }],
        pinKey: [{ version: 1, createdAt: now, key: randomBytes(KEY_BYTES).toString('base64') }],
      };
      await fs.mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
      try {
        await writeNewFile(this.path, fresh, 'wx');
      } catch (error) {
        // Another process created it first: use theirs.
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw asProviderError(error, this.path);
      }
      text = await readPrivateFile(this.path);
    }
    this.apply(parseKeyFile(text, this.path));
  }

  private apply(content: KeyFileContent): void {
    this.content = content;
    this.keks = activeKeys(content.kek);
    this.pinKeys = activeKeys(content.pinKey);
  }

  wrap(dataKey: Uint8Array, aad: Uint8Array): Promise<WrappedDataKey> {
    const kekVersion = this.currentVersion;
    const kek = this.keks.get(kekVersion)!;
    const iv = randomBytes(GCM_IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', kek, iv, { authTagLength: GCM_TAG_BYTES });
    cipher.setAAD(Buffer.concat([KEK_WRAP_DOMAIN, aad]));
    const wrapped = Buffer.concat([iv, cipher.update(dataKey), cipher.final(), cipher.getAuthTag()]);
    return Promise.resolve({ kekVersion, wrapped });
  }

  async unwrap(wrapped: WrappedDataKey, aad: Uint8Array): Promise<Buffer> {
    const kek = await this.key(this.keks, 'KEK', wrapped.kekVersion);
    const w = wrapped.wrapped;
    if (w.length < GCM_IV_BYTES + GCM_TAG_BYTES) throw new SealedKeyInvalidError('wrapped key too short');
    const decipher = createDecipheriv('aes-256-gcm', kek, w.subarray(0, GCM_IV_BYTES), {
      authTagLength: GCM_TAG_BYTES,
    });
    decipher.setAAD(Buffer.concat([KEK_WRAP_DOMAIN, aad]));
    decipher.setAuthTag(w.subarray(w.length - GCM_TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(w.subarray(GCM_IV_BYTES, w.length - GCM_TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw new SealedKeyInvalidError('wrapped data key does not authenticate', {
        kekVersion: wrapped.kekVersion,
      });
    }
  }

  async hmac(
    data: Uint8Array,
    version: number = this.pinKeyVersion,
  ): Promise<{ version: number; mac: Buffer }> {
    const key = await this.key(this.pinKeys, 'PIN key', version);
    return { version, mac: createHmac('sha256', key).update(data).digest() };
  }

  rotate(): Promise<number> {
    return this.update((c) => addVersion(c.kek));
  }

  rotatePinKey(): Promise<number> {
    return this.update((c) => addVersion(c.pinKey));
  }

  async retire(version: number): Promise<void> {
    checkRetirable('KEK', version, this.currentVersion, this.versions);
    await this.update((c) => retireVersion(c.kek, version));
  }

  async retirePinKey(version: number): Promise<void> {
    checkRetirable('PIN key', version, this.pinKeyVersion, this.pinKeyVersions);
    await this.update((c) => retireVersion(c.pinKey, version));
  }

  close(): Promise<void> {
    for (const k of [...this.keks.values(), ...this.pinKeys.values()]) k.fill(0);
    this.keks.clear();
    this.pinKeys.clear();
    return Promise.resolve();
  }

  /** The key of `version`, reloading the file once if another process added it. */
  private async key(keys: Map<number, Buffer>, what: string, version: number): Promise<Buffer> {
    let key = keys.get(version);
    if (!key) {
      this.apply(parseKeyFile(await readPrivateFile(this.path), this.path));
      key = (what === 'KEK' ? this.keks : this.pinKeys).get(version);
    }
    if (!key) throw new KeyProviderError(`unknown or retired ${what} version`, { version });
    return key;
  }

  /** Re-reads the file, applies `change`, writes it back atomically. */
  private async update(change: (content: KeyFileContent) => number): Promise<number> {
    const content = parseKeyFile(await readPrivateFile(this.path), this.path);
    const result = change(content);
    const tmp = join(dirname(this.path), `.${basename(this.path)}.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await writeNewFile(tmp, content, 'wx');
      await fs.rename(tmp, this.path);
    } catch (error) {
      await fs.rm(tmp, { force: true });
      throw asProviderError(error, this.path);
    }
    await syncDirectory(dirname(this.path));
    this.apply(content);
    return result;
  }
}

function addVersion(entries: KeyEntry[]): number {
  const version = Math.max(0, ...entries.map((e) => e.version)) + 1;
  entries.push({
    version,
    createdAt: new Date().toISOString(),
    key: randomBytes(KEY_BYTES).toString('base64'),
  });
  return version;
}

function retireVersion(entries: KeyEntry[], version: number): number {
  const entry = entries.find((e) => e.version === version);
  if (entry) {
    delete entry.key;
    entry.retiredAt = new Date().toISOString();
  }
  return version;
}

function activeKeys(entries: KeyEntry[]): Map<number, Buffer> {
  const map = new Map<number, Buffer>();
  for (const e of entries) if (e.key !== undefined) map.set(e.version, Buffer.from(e.key, 'base64'));
  return map;
}

/**
 * Reads the file without following a symlink and checks, on the open descriptor (no race with a
 * swap of the path), that it is a regular file of this user that nobody else may touch.
 */
async function readPrivateFile(path: string): Promise<string> {
  const handle = await fs.open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new KeyFileInsecureError('key file is not a regular file', { file: path });
    if ((st.mode & 0o077) !== 0) {
      throw new KeyFileInsecureError('key file is accessible to group or others (chmod 600 it)', {
        file: path,
        mode: (st.mode & 0o777).toString(8),
      });
    }
    const uid = process.geteuid?.();
    if (uid !== undefined && st.uid !== uid) {
      throw new KeyFileInsecureError('key file is owned by another user', { file: path, owner: st.uid });
    }
    if (st.size > MAX_KEY_FILE_BYTES)
      throw new KeyProviderError('key file too large', { file: path, size: st.size });
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

async function writeNewFile(path: string, content: KeyFileContent, flag: 'wx'): Promise<void> {
  const handle = await fs.open(path, flag, 0o600);
  try {
    await handle.writeFile(JSON.stringify(content, null, 2) + '\n', 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
}

async function syncDirectory(dir: string): Promise<void> {
  const handle = await fs.open(dir, fsConstants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function parseKeyFile(text: string, path: string): KeyFileContent {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new KeyProviderError('key file is not valid JSON', { file: path });
  }
  const c = parsed as Partial<KeyFileContent> | null;
  if (c?.format !== KEY_FILE_FORMAT || !Array.isArray(c.kek) || !Array.isArray(c.pinKey)) {
    throw new KeyProviderError('key file has an unknown format', { file: path });
  }
  for (const [name, entries] of [
    ['kek', c.kek],
    ['pinKey', c.pinKey],
  ] as const) {
    const seen = new Set<number>();
    for (const e of entries) {
      if (!Number.isSafeInteger(e.version) || e.version < 1 || seen.has(e.version)) {
        throw new KeyProviderError('key file has a bad version number', { file: path, section: name });
      }
      seen.add(e.version);
      if (e.key !== undefined && Buffer.from(e.key, 'base64').length !== KEY_BYTES) {
        throw new KeyProviderError('key file holds a key that is not 256 bits', {
          file: path,
          section: name,
          version: e.version,
        });
      }
    }
    if (!entries.some((e) => e.key !== undefined)) {
      throw new KeyProviderError('key file has no usable key', { file: path, section: name });
    }
  }
  return c as KeyFileContent;
}

function asProviderError(error: unknown, path: string): Error {
  if (error instanceof CardlinkError) return error;
  const code = (error as NodeJS.ErrnoException).code ?? 'unknown';
  if (code === 'ELOOP') return new KeyFileInsecureError('key file is a symbolic link', { file: path });
  return new KeyProviderError('cannot use the key file', { file: path, errno: code }, { cause: error });
}
