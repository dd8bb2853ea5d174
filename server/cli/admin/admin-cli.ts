/**
 * What every `cardlink admin` subcommand shares: its options, who acts (the audit actor), opening
 * the database (and the KEK provider) from the server's own configuration, secrets from the
 * environment, and output that cannot smuggle control characters onto the terminal.
 */
import os from 'node:os';
import { escapeControlCharacters } from '../../../protocol/log.js';
import { DEFAULT_ADMIN_ACTOR, ProfileError } from '../../admin/index.js';
import { loadServerConfig, type ServerConfig } from '../../config/server-config.js';
import { ensureDataDir, openServerResources } from '../../config/server-resources.js';
import type { KekProvider } from '../../keys/kek-provider.js';
import { migrate, openStorage, type Storage } from '../../storage/index.js';

/**
 * Environment variables that supply a card's secrets. Never flags: a command line is visible to
 * every local user in `ps`. An empty variable counts as absent (the value is generated).
 */
export const SECRET_ENV = {
  pin: 'CARDLINK_PIN',
  puk: 'CARDLINK_PUK',
  managementKey: 'CARDLINK_MGMT_KEY',
} as const;

/** Options every `cardlink admin` subcommand takes. */
export interface AdminArgs {
  config: string | undefined;
  'data-dir': string | undefined;
  'database-url': string | undefined;
  json: boolean;
}

/** `admin:cli:<login name>`: who acted, as the audit log records it. */
export function adminActor(): string {
  try {
    const name = os.userInfo().username;
    return /^[A-Za-z0-9._-]{1,64}$/.test(name) ? `${DEFAULT_ADMIN_ACTOR}:${name}` : DEFAULT_ADMIN_ACTOR;
  } catch {
    return DEFAULT_ADMIN_ACTOR;
  }
}

/** The server's configuration as the subcommand's options and environment give it. */
export function configOf(args: AdminArgs): ServerConfig {
  return loadServerConfig({
    config: args.config,
    dataDir: args['data-dir'],
    databaseUrl: args['database-url'],
  });
}

/** Closes what was opened; a failure to close does not hide the action's own error. */
async function closingAfter<R, T>(
  resource: R & { close(): Promise<void> },
  fn: (r: R) => Promise<T>,
): Promise<T> {
  let result: T;
  try {
    result = await fn(resource);
  } catch (error) {
    await resource.close().catch(() => undefined);
    throw error;
  }
  await resource.close();
  return result;
}

/** The database alone (migrated), for subcommands that need no key. */
export async function withStorage<T>(args: AdminArgs, fn: (storage: Storage) => Promise<T>): Promise<T> {
  const config = configOf(args);
  ensureDataDir(config);
  const storage = await openStorage(config.databaseUrl);
  return closingAfter(storage, async (s) => {
    await migrate(s);
    return fn(s);
  });
}

/** The database and the KEK provider. */
export async function withResources<T>(
  args: AdminArgs,
  fn: (r: { storage: Storage; kek: KekProvider }) => Promise<T>,
): Promise<T> {
  const resources = await openServerResources(configOf(args));
  return closingAfter(resources, fn);
}

export function secretFromEnv(variable: string): string | undefined {
  const value = process.env[variable];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * Rewrites a policy error about a supplied secret so that it names the variable it came from
 * (the value is in neither message nor context).
 */
export function nameSecretSource(
  error: unknown,
  supplied: Partial<Record<keyof typeof SECRET_ENV, boolean>>,
): unknown {
  if (!(error instanceof ProfileError)) return error;
  const field = error.context['field'];
  if (typeof field !== 'string' || !(field in SECRET_ENV) || !supplied[field as keyof typeof SECRET_ENV]) {
    return error;
  }
  const variable = SECRET_ENV[field as keyof typeof SECRET_ENV];
  const problem = error.message.startsWith(`${field}: `)
    ? error.message.slice(field.length + 2)
    : error.message;
  return new ProfileError(field, `${problem} (environment variable ${variable})`, {
    ...error.context,
    source: `environment variable ${variable}`,
  });
}

/** Escapes control characters in a value from the database or the command line before printing it. */
export const e = escapeControlCharacters;

export function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** A PIV key reference as two hex digits (9A, 9C, ...). */
export const hexSlot = (slot: number): string => slot.toString(16).toUpperCase().padStart(2, '0');
