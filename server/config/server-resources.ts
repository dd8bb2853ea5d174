/**
 * Opens what a configured server and the local admin commands both need: the database (migrated)
 * and the key-encryption key provider. The data directory is created 0700 on first use.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { KekProvider } from '../keys/kek-provider.js';
import { openKeyFileProvider } from '../keys/key-file-provider.js';
import { openPkcs11Provider } from '../keys/pkcs11-provider.js';
import { migrate, type MigrateResult } from '../storage/migrations.js';
import { openStorage, type Storage } from '../storage/storage.js';
import { ConfigError, type ServerConfig } from './server-config.js';

export interface ServerResources {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly migration: MigrateResult;
  close(): Promise<void>;
}

/** Longest PIN file read for the PKCS#11 token. */
const MAX_PIN_FILE_BYTES = 256;

/** Creates the data directory, private. (Storage creates a SQLite file's own directory.) */
export function ensureDataDir(config: ServerConfig): void {
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
}

/** Reads the HSM user PIN from its file, which must not be readable by group or others. */
function readPinFile(file: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch (error) {
    throw new ConfigError(
      'kek.pinFile',
      file,
      `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  if (!stat.isFile() || stat.size > MAX_PIN_FILE_BYTES)
    throw new ConfigError('kek.pinFile', file, 'must be a small regular file');
  if ((stat.mode & 0o077) !== 0)
    throw new ConfigError('kek.pinFile', file, 'must not be readable by group or others (chmod 600)');
  return fs.readFileSync(file, 'utf8').trim();
}

export async function openKek(
  config: ServerConfig,
  options: { create?: boolean } = {},
): Promise<KekProvider> {
  if (config.kek.provider === 'file') {
    fs.mkdirSync(path.dirname(config.kek.file), { recursive: true, mode: 0o700 });
    return openKeyFileProvider(config.kek.file, { create: options.create ?? true });
  }
  return openPkcs11Provider({
    modulePath: config.kek.module,
    tokenLabel: config.kek.tokenLabel,
    pin: readPinFile(config.kek.pinFile),
    create: options.create ?? true,
  });
}

/** Opens and migrates the database, then the KEK; closes what it opened when a later step fails. */
export async function openServerResources(config: ServerConfig): Promise<ServerResources> {
  ensureDataDir(config);
  const storage = await openStorage(config.databaseUrl);
  try {
    const migration = await migrate(storage);
    const kek = await openKek(config);
    return {
      storage,
      kek,
      migration,
      async close() {
        await kek.close();
        await storage.close();
      },
    };
  } catch (error) {
    await storage.close().catch(() => undefined);
    throw error;
  }
}
