/**
 * The audit log's rows and its chain head (`audit_chain_head`, one row with id 1). What the rows
 * mean, how an entry's hash is computed and how the chain is checked is server/audit/audit-log.ts;
 * this file only reads and writes them.
 *
 * The head row is the append lock: `lockAuditChainHead` reads it `FOR UPDATE` on PostgreSQL
 * (SQLite runs one transaction at a time anyway), so two appends never fork the chain. Take it
 * last in a transaction (storage.ts's lock order): it is held until commit.
 */
import { compiledQuery } from './compiled-query.js';
import type { AuditLogRow } from './schema.js';
import type { Queryable, Tx } from './storage.js';

/** The chain head: the newest entry's id and hash (zero and the genesis hash before the first). */
export interface AuditChainHeadRecord {
  readonly lastId: number;
  readonly lastHash: Buffer;
}

/** An entry as stored: `details` is its canonical JSON text, hashed exactly as it is. */
export interface AuditRowValues {
  readonly id: number;
  readonly time: string;
  readonly actor: string;
  readonly eventType: string;
  readonly cardId: string | null;
  readonly details: string;
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

/** Which entries a listing returns; every member narrows it. */
export interface AuditFilter {
  readonly cardId?: string;
  readonly eventType?: string;
  readonly actor?: string;
  /** Inclusive id range. */
  readonly fromId?: number;
  readonly toId?: number;
  /** Inclusive ISO 8601 time range. */
  readonly since?: string;
  readonly until?: string;
}

// The statements of an append, compiled once (compiled-query.ts): appends run on every signature.
const CHAIN_HEAD_FOR_APPEND = compiledQuery((db, _p, _shape, dialect) => {
  const query = db.selectFrom('audit_chain_head').select(['last_id', 'last_hash']).where('id', '=', 1);
  return dialect === 'postgres' ? query.forUpdate() : query;
});
const INSERT_ENTRIES = compiledQuery((db, p, shape) =>
  db.insertInto('audit_log').values(
    Array.from({ length: shape }, (_, i) => ({
      id: p<number>(8 * i),
      created_at: p<string>(8 * i + 1),
      actor: p<string>(8 * i + 2),
      event_type: p<string>(8 * i + 3),
      card_id: p<string | null>(8 * i + 4),
      details: p<string>(8 * i + 5),
      prev_hash: p<Buffer>(8 * i + 6),
      hash: p<Buffer>(8 * i + 7),
    })),
  ),
);
const UPDATE_CHAIN_HEAD = compiledQuery((db, p) =>
  db
    .updateTable('audit_chain_head')
    .set({ last_id: p<number>(0), last_hash: p<Buffer>(1) })
    .where('id', '=', 1),
);

/** The chain head, locked until `tx` ends; undefined when the schema was never migrated. */
export async function lockAuditChainHead(tx: Tx): Promise<AuditChainHeadRecord | undefined> {
  const [head] = (await CHAIN_HEAD_FOR_APPEND.execute(tx, [])).rows;
  return head ? { lastId: head.last_id, lastHash: head.last_hash } : undefined;
}

/**
 * Inserts `rows` (already chained, consecutive ids after the locked head's) and moves the head to
 * the last of them: one insert and one update however many there are.
 */
export async function insertAuditRows(tx: Tx, rows: readonly AuditRowValues[]): Promise<void> {
  if (rows.length === 0) return;
  const values = rows.flatMap((r) => [
    r.id,
    r.time,
    r.actor,
    r.eventType,
    r.cardId,
    r.details,
    r.prevHash,
    r.hash,
  ]);
  await INSERT_ENTRIES.execute(tx, values, rows.length);
  const last = rows[rows.length - 1]!;
  await UPDATE_CHAIN_HEAD.execute(tx, [last.id, last.hash]);
}

/** The chain head, unlocked; undefined when the schema was never migrated. */
export async function readAuditChainHead(q: Queryable): Promise<AuditChainHeadRecord | undefined> {
  const head = await q.db
    .selectFrom('audit_chain_head')
    .select(['last_id', 'last_hash'])
    .where('id', '=', 1)
    .executeTakeFirst();
  return head ? { lastId: head.last_id, lastHash: head.last_hash } : undefined;
}

/**
 * Up to `limit` entries matching `filter`, by id: the oldest ones after `afterId` (ascending), or
 * with `newestFirst` the newest ones (descending). Page through the log with `afterId` set to the
 * last id of the previous page.
 */
export async function listAuditRows(
  q: Queryable,
  filter: AuditFilter,
  page: { limit: number; afterId?: number; newestFirst?: boolean },
): Promise<AuditLogRow[]> {
  let query = q.db.selectFrom('audit_log').selectAll();
  if (page.afterId !== undefined) query = query.where('id', '>', page.afterId);
  if (filter.fromId !== undefined) query = query.where('id', '>=', filter.fromId);
  if (filter.toId !== undefined) query = query.where('id', '<=', filter.toId);
  if (filter.cardId !== undefined) query = query.where('card_id', '=', filter.cardId);
  if (filter.eventType !== undefined) query = query.where('event_type', '=', filter.eventType);
  if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
  if (filter.since !== undefined) query = query.where('created_at', '>=', filter.since);
  if (filter.until !== undefined) query = query.where('created_at', '<=', filter.until);
  return query
    .orderBy('id', page.newestFirst === true ? 'desc' : 'asc')
    .limit(page.limit)
    .execute();
}
