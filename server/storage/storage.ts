/**
 * The card server's database: one Kysely code path over SQLite (better-sqlite3) and PostgreSQL (pg).
 *
 * - `openStorage(url)` connects; `migrate(storage)` (migrations.ts) brings the schema up to date.
 * - Every state change runs in one `transaction(fn)`; repository functions take the `Tx` it hands
 *   out, reads take any `Queryable` (the storage itself or a `Tx`).
 * - SQLite serves one process: the file is opened in exclusive locking mode, a second server
 *   process on the same file fails to open it. Inside the process, Kysely runs every query and
 *   transaction of the one connection in turn, so never open a transaction (or use `storage.db`)
 *   from inside another one: it would wait for itself.
 * - PostgreSQL serves many nodes: a pool of `poolSize` connections, and one extra connection that
 *   LISTENs for card-claim notifications once someone subscribes.
 *
 * Durability: a transaction resolves once it is durable (on SQLite, the WAL fsynced on the thread
 * pool, shared by concurrent commits: wal-sync.ts; on PostgreSQL, its commit). A transaction that
 * calls `tx.relaxDurability()` resolves at its commit and reaches the disk within
 * `LAZY_SYNC_DELAY_MS` (PostgreSQL: `synchronous_commit = off` for that transaction): safe from a
 * process crash at once, from a power cut shortly after. docs/security-model.md says what uses it.
 *
 * Lock order inside a transaction (to keep PostgreSQL free of deadlocks): the card's row first
 * (`fenceCard`, `claimCard`), then its keys, objects and commands, the audit chain head last.
 */
import { EventEmitter } from 'node:events';
import { mkdirSync, openSync, closeSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import {
  CompiledQuery,
  Kysely,
  PostgresDialect,
  SqliteDialect,
  sql,
  type QueryResult,
  type Transaction,
} from 'kysely';
import pg from 'pg';
import { CardlinkError } from '../../protocol/errors.js';
import { parseDatabaseUrl, type DatabaseLocation } from './database-url.js';
import { StorageError } from './errors.js';
import type { Database } from './schema.js';
import { withStatementCache, type PreparingDatabase } from './statement-cache.js';
import { BACKSTOP_WAL_PAGES, WalCheckpointer } from './wal-checkpoint.js';
import { WalSync } from './wal-sync.js';

export type SqlDialect = 'sqlite' | 'postgres';

/** Default number of pooled PostgreSQL connections per server process. */
export const DEFAULT_PG_POOL_SIZE = 10;

/** Milliseconds a PostgreSQL connection attempt may take before it fails. */
export const PG_CONNECT_TIMEOUT_MS = 5_000;

/** Milliseconds before the LISTEN connection is re-established after it broke. */
export const LISTEN_RECONNECT_DELAY_MS = 1_000;

/**
 * Milliseconds SQLite waits for the file's lock at open (a previous server process may still be
 * exiting). The one connection holds the lock exclusively afterwards, so nothing waits later.
 */
export const SQLITE_LOCK_WAIT_MS = 250;

/** The PostgreSQL NOTIFY channel announcing that a card was claimed; payload `<cardId>:<epoch>`. */
export const CARD_CLAIMED_CHANNEL = 'cardlink_card_claimed';

/**
 * The PostgreSQL NOTIFY channel announcing that an administrator changed a card's contents
 * (enrollment) without taking it from its holder; payload `<cardId>:<epoch>`.
 */
export const CARD_CHANGED_CHANNEL = 'cardlink_card_changed';

/**
 * A card was claimed by a session: holders of an older epoch have lost it. With `changed`, the
 * card's keys or objects were replaced instead (`lockCardForChange`): the holder keeps the card,
 * reloads it and tells its client (CARD_CHANGED).
 */
export interface CardClaimedEvent {
  readonly cardId: string;
  readonly epoch: number;
  readonly changed?: true;
}

export type CardClaimedListener = (event: CardClaimedEvent) => void;

/** Anything queries can run on: the storage (autocommit) or an open transaction. */
export interface Queryable {
  readonly db: Kysely<Database>;
  readonly dialect: SqlDialect;
  /**
   * Runs SQL already compiled for `dialect` (compiled-query.ts). Inside a SQLite transaction it
   * goes straight to the prepared statement: the transaction holds the one connection, and
   * Kysely's per-query executor cost more than the statements on the signing path.
   */
  executeCompiled<R>(sqlText: string, parameters: readonly unknown[]): Promise<QueryResult<R>>;
}

/** An open transaction, handed to the function given to `Storage.transaction`. */
export interface Tx extends Queryable {
  readonly db: Transaction<Database>;
  /** Runs `fn` once the transaction has committed (never when it rolls back). */
  afterCommit(fn: () => void): void;
  /**
   * Lets the transaction resolve at its commit, before its writes are flushed to disk (they are
   * within a short delay; a process crash loses nothing, a power cut may lose them). Only for
   * writes whose loss leaves nothing inconsistent: the record of a private-key operation.
   */
  relaxDurability(): void;
  /**
   * Announces a claim to every listener on every node, delivered only if the transaction commits
   * (PostgreSQL NOTIFY; an in-process event on SQLite).
   */
  publishCardClaimed(event: CardClaimedEvent): Promise<void>;
}

export interface Storage extends Queryable {
  /** Runs `fn` in one transaction: all of its writes commit together or none does. */
  transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T>;
  /** fsyncs this process made to make commits durable (SQLite's WAL; always 0 on PostgreSQL). */
  diskFlushes(): number;
  /** WAL checkpoints run while the database was idle (wal-checkpoint.ts; always 0 on PostgreSQL). */
  idleCheckpoints(): number;
  /** Subscribes to card claims; resolves once the subscription is live. Returns the unsubscribe. */
  onCardClaimed(listener: CardClaimedListener): Promise<() => Promise<void>>;
  close(): Promise<void>;
}

export interface OpenStorageOptions {
  /** PostgreSQL only: pooled connections (default `DEFAULT_PG_POOL_SIZE`). */
  poolSize?: number;
  /** Errors of background connections (idle pool clients, the LISTEN connection). */
  onBackgroundError?: (error: Error) => void;
}

/** Opens the database named by `url` (see `parseDatabaseUrl`). Run `migrate` before use. */
export async function openStorage(url: string, options: OpenStorageOptions = {}): Promise<Storage> {
  const location = parseDatabaseUrl(url);
  return location.dialect === 'sqlite' ? openSqlite(location, options) : openPostgres(location, options);
}

/** Resolves when the database answers a trivial query (a readiness probe); rejects when it does not. */
export async function pingDatabase(q: Queryable): Promise<void> {
  await sql`select 1`.execute(q.db);
}

/** True when `error` is a unique or primary-key violation, on either database. */
export function isUniqueViolation(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === '23505' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY' || code === 'SQLITE_CONSTRAINT_UNIQUE';
}

/**
 * Wraps a database driver's error (PostgreSQL error, SQLite error, broken connection) in a
 * StorageError; anything else, such as an error the transaction's own code threw, passes through.
 */
export function toStorageError(error: unknown, dialect: SqlDialect): unknown {
  if (!isDriverError(error)) return error;
  const code = (error as { code?: unknown }).code;
  const context: Record<string, string> = { dialect };
  if (typeof code === 'string') context.driverCode = code;
  return new StorageError('database operation failed', context, { cause: error });
}

function isDriverError(error: unknown): boolean {
  if (!(error instanceof Error) || error instanceof CardlinkError) return false;
  return (
    error instanceof pg.DatabaseError ||
    error.name === 'SqliteError' ||
    typeof (error as NodeJS.ErrnoException).syscall === 'string' ||
    /^Connection terminated|^timeout exceeded when trying to connect/.test(error.message)
  );
}

abstract class BaseStorage implements Storage {
  abstract readonly dialect: SqlDialect;

  constructor(
    readonly db: Kysely<Database>,
    protected readonly onBackgroundError: (error: Error) => void,
  ) {}

  executeCompiled<R>(sqlText: string, parameters: readonly unknown[]): Promise<QueryResult<R>> {
    return this.db.executeQuery<R>(CompiledQuery.raw(sqlText, [...parameters]));
  }

  /** How a transaction runs compiled SQL on its own connection (`Tx.executeCompiled`). */
  protected abstract compiledRunner(trx: Transaction<Database>): CompiledRunner;
  protected abstract publish(tx: TxImpl, event: CardClaimedEvent): Promise<void>;
  abstract onCardClaimed(listener: CardClaimedListener): Promise<() => Promise<void>>;
  abstract diskFlushes(): number;
  abstract idleCheckpoints(): number;
  /** Called inside the transaction, after `fn`, when it relaxed its durability. */
  protected abstract beforeRelaxedCommit(tx: TxImpl): Promise<void>;
  /** Called after the commit: resolves once the transaction is as durable as it asked. */
  protected abstract afterCommitted(relaxed: boolean): Promise<void>;

  async transaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const hooks: (() => void)[] = [];
    let result: T;
    let relaxed = false;
    try {
      result = await this.db.transaction().execute(async (trx) => {
        const tx = new TxImpl(trx, this.dialect, hooks, this, this.compiledRunner(trx));
        try {
          const value = await fn(tx);
          relaxed = tx.relaxed;
          if (relaxed) await this.beforeRelaxedCommit(tx);
          return value;
        } finally {
          // A query through a Tx kept past its transaction would run outside of it: refused.
          tx.ended = true;
        }
      });
      await this.afterCommitted(relaxed);
    } catch (error) {
      throw toStorageError(error, this.dialect);
    }
    // The transaction has committed: a failing hook must not make the caller think otherwise.
    for (const hook of hooks) {
      try {
        hook();
      } catch (error) {
        this.onBackgroundError(error instanceof Error ? error : new Error(String(error)));
      }
    }
    return result;
  }

  /** Called by TxImpl. */
  publishFrom(tx: TxImpl, event: CardClaimedEvent): Promise<void> {
    return this.publish(tx, event);
  }

  async close(): Promise<void> {
    await this.db.destroy();
  }
}

/** Runs compiled SQL inside one open transaction. */
type CompiledRunner = <R>(sqlText: string, parameters: readonly unknown[]) => Promise<QueryResult<R>>;

class TxImpl implements Tx {
  relaxed = false;
  ended = false;

  constructor(
    readonly db: Transaction<Database>,
    readonly dialect: SqlDialect,
    private readonly hooks: (() => void)[],
    private readonly storage: BaseStorage,
    private readonly runCompiled: CompiledRunner,
  ) {}

  executeCompiled<R>(sqlText: string, parameters: readonly unknown[]): Promise<QueryResult<R>> {
    if (this.ended) {
      return Promise.reject(
        new StorageError('query on a transaction that has ended', { dialect: this.dialect }),
      );
    }
    return this.runCompiled<R>(sqlText, parameters);
  }

  afterCommit(fn: () => void): void {
    this.hooks.push(fn);
  }

  relaxDurability(): void {
    this.relaxed = true;
  }

  publishCardClaimed(event: CardClaimedEvent): Promise<void> {
    return this.storage.publishFrom(this, event);
  }
}

// ---------------------------------------------------------------------------------------------
// SQLite

class SqliteStorage extends BaseStorage {
  readonly dialect = 'sqlite' as const;
  private readonly events = new EventEmitter();

  constructor(
    db: Kysely<Database>,
    onBackgroundError: (error: Error) => void,
    private readonly database: BetterSqlite3.Database,
    /** The statements Kysely prepares too (one cache for both ways in). */
    private readonly statements: PreparingDatabase,
    /** Undefined for an in-memory database. */
    private readonly walSync: WalSync | undefined,
  ) {
    super(db, onBackgroundError);
    this.checkpointer = walSync
      ? new WalCheckpointer(
          // Through the connection lock: never inside a transaction someone has open.
          () =>
            db.connection().execute(async () => {
              database.pragma('wal_checkpoint(PASSIVE)');
            }),
          onBackgroundError,
        )
      : undefined;
  }

  private readonly checkpointer: WalCheckpointer | undefined;

  idleCheckpoints(): number {
    return this.checkpointer?.checkpoints ?? 0;
  }

  protected compiledRunner(): CompiledRunner {
    return this.runOnConnection;
  }

  /** Every SQLite transaction's runner: there is one connection, so one runner serves them all. */
  private readonly runOnConnection: CompiledRunner = <R>(sqlText: string, parameters: readonly unknown[]) => {
    // The transaction holds Kysely's one connection: nothing else runs on it until it ends.
    try {
      const statement = this.statements.prepare(sqlText);
      if (statement.reader) return Promise.resolve({ rows: statement.all(parameters) as R[] });
      const { changes } = statement.run(parameters);
      return Promise.resolve({ rows: [], numAffectedRows: BigInt(changes) });
    } catch (error) {
      return Promise.reject(error as Error);
    }
  };

  protected beforeRelaxedCommit(): Promise<void> {
    return Promise.resolve();
  }

  diskFlushes(): number {
    return this.walSync?.flushes ?? 0;
  }

  protected afterCommitted(relaxed: boolean): Promise<void> {
    if (!this.walSync) return Promise.resolve();
    this.checkpointer?.noteCommit();
    if (!relaxed) return this.walSync.sync();
    this.walSync.syncSoon();
    return Promise.resolve();
  }

  override async close(): Promise<void> {
    await this.checkpointer?.close();
    await this.walSync?.close();
    await super.close();
    // Kysely only closes a database it has used: release the file (and its exclusive lock) always.
    if (this.database.open) this.database.close();
  }

  protected publish(tx: TxImpl, event: CardClaimedEvent): Promise<void> {
    tx.afterCommit(() => this.events.emit('claimed', event));
    return Promise.resolve();
  }

  onCardClaimed(listener: CardClaimedListener): Promise<() => Promise<void>> {
    this.events.on('claimed', listener);
    return Promise.resolve(() => {
      this.events.off('claimed', listener);
      return Promise.resolve();
    });
  }
}

function openSqlite(
  location: Extract<DatabaseLocation, { dialect: 'sqlite' }>,
  options: OpenStorageOptions,
): Storage {
  if (!location.memory && !existsSync(location.path)) {
    // The file holds sealed keys and PIN verifiers: create it private (SQLite gives its -wal file
    // the same mode).
    mkdirSync(dirname(location.path), { recursive: true, mode: 0o700 });
    closeSync(openSync(location.path, 'a', 0o600));
  }
  let database: BetterSqlite3.Database;
  try {
    database = new BetterSqlite3(location.path, { timeout: SQLITE_LOCK_WAIT_MS });
    // Exclusive locking before WAL: no shared-memory index, and no second process on the file.
    database.pragma('locking_mode = EXCLUSIVE');
    database.pragma('journal_mode = WAL');
    // Commits are atomic and survive a process crash without an fsync; WalSync fsyncs the WAL
    // off the event loop before a durable transaction resolves (a counted PIN try must survive a
    // power cut), shared by concurrent commits.
    database.pragma('synchronous = NORMAL');
    // Checkpoints run when the server idles (wal-checkpoint.ts); this is the backstop.
    database.pragma(`wal_autocheckpoint = ${BACKSTOP_WAL_PAGES}`);
    database.pragma('foreign_keys = ON');
    // Take the lock now, so a second process fails here and not at its first query.
    database.exec('BEGIN IMMEDIATE; COMMIT');
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new StorageError(
      code === 'SQLITE_BUSY'
        ? 'the SQLite database is in use by another process'
        : 'cannot open the SQLite database',
      { dialect: 'sqlite', file: location.path, driverCode: typeof code === 'string' ? code : 'unknown' },
      { cause: error },
    );
  }
  const onBackgroundError = options.onBackgroundError ?? (() => undefined);
  const statements = withStatementCache(database);
  return new SqliteStorage(
    new Kysely<Database>({ dialect: new SqliteDialect({ database: statements }) }),
    onBackgroundError,
    database,
    statements,
    location.memory ? undefined : new WalSync(location.path, onBackgroundError),
  );
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL

/** pg type OID of int8 (bigint): parsed to a number, refusing values beyond 2^53. */
const PG_INT8_OID = 20;

const pgTypes = {
  getTypeParser(oid: number, format?: 'text' | 'binary') {
    if (oid === PG_INT8_OID && format !== 'binary') {
      return (value: string): number => {
        const n = Number(value);
        if (!Number.isSafeInteger(n))
          throw new StorageError('bigint column beyond 2^53', { dialect: 'postgres' });
        return n;
      };
    }
    // eslint-disable-next-line @typescript-eslint/no-explicit-any
    return (pg.types.getTypeParser as any)(oid, format);
  },
} as pg.CustomTypesConfig;

class PostgresStorage extends BaseStorage {
  readonly dialect = 'postgres' as const;
  private readonly listeners = new Set<CardClaimedListener>();
  private listenClient: pg.Client | undefined;
  private listenReady: Promise<void> | undefined;
  private closing = false;

  constructor(
    db: Kysely<Database>,
    private readonly connectionString: string,
    onBackgroundError: (error: Error) => void,
  ) {
    super(db, onBackgroundError);
  }

  protected compiledRunner(trx: Transaction<Database>): CompiledRunner {
    return <R>(sqlText: string, parameters: readonly unknown[]) =>
      trx.executeQuery<R>(CompiledQuery.raw(sqlText, [...parameters]));
  }

  protected async beforeRelaxedCommit(tx: TxImpl): Promise<void> {
    // PostgreSQL's own per-transaction asynchronous commit: no inconsistency on a crash, the
    // commit may be lost for up to three times wal_writer_delay after a power cut.
    await sql`set local synchronous_commit = off`.execute(tx.db);
  }

  protected afterCommitted(): Promise<void> {
    return Promise.resolve();
  }

  diskFlushes(): number {
    return 0;
  }

  idleCheckpoints(): number {
    return 0;
  }

  protected async publish(tx: TxImpl, event: CardClaimedEvent): Promise<void> {
    // NOTIFY inside the transaction: PostgreSQL delivers it on commit only.
    const channel = event.changed ? CARD_CHANGED_CHANNEL : CARD_CLAIMED_CHANNEL;
    await sql`select pg_notify(${channel}, ${`${event.cardId}:${event.epoch}`})`.execute(tx.db);
  }

  async onCardClaimed(listener: CardClaimedListener): Promise<() => Promise<void>> {
    this.listeners.add(listener);
    try {
      await this.ensureListening();
    } catch (error) {
      this.listeners.delete(listener);
      throw toStorageError(error, 'postgres');
    }
    return async () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) await this.stopListening();
    };
  }

  private ensureListening(): Promise<void> {
    this.listenReady ??= this.connectListener().catch((error: unknown) => {
      this.listenReady = undefined;
      throw error;
    });
    return this.listenReady;
  }

  private async connectListener(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.connectionString,
      types: pgTypes,
      connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    });
    client.on('notification', (message) => {
      const changed = message.channel === CARD_CHANGED_CHANNEL;
      if ((!changed && message.channel !== CARD_CLAIMED_CHANNEL) || message.payload === undefined) return;
      const parsed = parseClaimPayload(message.payload);
      if (parsed === undefined) return;
      const event: CardClaimedEvent = changed ? { ...parsed, changed: true } : parsed;
      for (const listener of [...this.listeners]) listener(event);
    });
    const broken = (error?: Error): void => {
      if (this.listenClient !== client) return;
      this.listenClient = undefined;
      this.listenReady = undefined;
      if (this.closing) return;
      if (error) this.onBackgroundError(error);
      // Claims made while disconnected are not replayed: the fence on every write stays the
      // authority, the notification only lets the old holder stop sooner.
      setTimeout(() => {
        if (!this.closing && this.listeners.size > 0)
          this.ensureListening().catch((e: Error) => this.onBackgroundError(e));
      }, LISTEN_RECONNECT_DELAY_MS).unref();
    };
    client.on('error', broken);
    client.on('end', () => broken());
    await client.connect();
    await client.query(`LISTEN ${CARD_CLAIMED_CHANNEL}`);
    await client.query(`LISTEN ${CARD_CHANGED_CHANNEL}`);
    this.listenClient = client;
  }

  private async stopListening(): Promise<void> {
    const client = this.listenClient;
    this.listenClient = undefined;
    this.listenReady = undefined;
    if (client) await client.end().catch(() => undefined);
  }

  override async close(): Promise<void> {
    this.closing = true;
    this.listeners.clear();
    await this.stopListening();
    await super.close();
  }
}

function parseClaimPayload(payload: string): CardClaimedEvent | undefined {
  const colon = payload.lastIndexOf(':');
  if (colon <= 0) return undefined;
  const epoch = Number(payload.slice(colon + 1));
  if (!Number.isSafeInteger(epoch)) return undefined;
  return { cardId: payload.slice(0, colon), epoch };
}

async function openPostgres(
  location: Extract<DatabaseLocation, { dialect: 'postgres' }>,
  options: OpenStorageOptions,
): Promise<Storage> {
  const onBackgroundError = options.onBackgroundError ?? (() => undefined);
  const pool = new pg.Pool({
    connectionString: location.connectionString,
    max: options.poolSize ?? DEFAULT_PG_POOL_SIZE,
    connectionTimeoutMillis: PG_CONNECT_TIMEOUT_MS,
    types: pgTypes,
  });
  // An idle client that loses its connection is dropped by the pool; report, never crash.
  pool.on('error', onBackgroundError);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  try {
    await sql`select 1`.execute(db);
  } catch (error) {
    await db.destroy().catch(() => undefined);
    throw new StorageError('cannot connect to PostgreSQL', { dialect: 'postgres' }, { cause: error });
  }
  return new PostgresStorage(db, location.connectionString, onBackgroundError);
}
