/**
 * A throwaway PostgreSQL database per test file on the real server (127.0.0.1:5432, trust auth,
 * user postgres; `test/prepare-machine.sh` sets it up). Nothing is skipped: when the server cannot
 * be reached the test fails and says so.
 *
 * Override the server with CARDLINK_TEST_PG_ADMIN_URL (a URL to an existing database whose user
 * may CREATE DATABASE).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';

/** Where tests create their databases, unless CARDLINK_TEST_PG_ADMIN_URL says otherwise. */
export const DEFAULT_PG_ADMIN_URL = 'postgres://postgres@127.0.0.1:5432/postgres';

/** Milliseconds to wait for the server before failing the test. */
export const PG_TEST_CONNECT_TIMEOUT_MS = 5_000;

export interface TestDatabase {
  /** Connection URL of the new, empty database. */
  readonly url: string;
  readonly name: string;
  /** Drops the database, closing any connection still open to it. */
  drop(): Promise<void>;
}

function adminUrl(): string {
  return process.env.CARDLINK_TEST_PG_ADMIN_URL ?? DEFAULT_PG_ADMIN_URL;
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const url = adminUrl();
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: PG_TEST_CONNECT_TIMEOUT_MS,
  });
  try {
    await client.connect();
  } catch (error) {
    const where = new URL(url);
    throw new Error(
      `PostgreSQL is not reachable at ${where.hostname}:${where.port || '5432'} as ${where.username || 'postgres'} ` +
        `(${(error as Error).message}). These tests need a running PostgreSQL server: run ` +
        'test/prepare-machine.sh, or set CARDLINK_TEST_PG_ADMIN_URL.',
      { cause: error },
    );
  }
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Creates a uniquely named empty database. Call `drop()` in an `after` hook. */
export async function createTestDatabase(prefix = 'cardlink_test'): Promise<TestDatabase> {
  const name = `${prefix}_${process.pid}_${randomBytes(6).toString('hex')}`.toLowerCase();
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`bad test database name ${name}`);
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(adminUrl());
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      await withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}
