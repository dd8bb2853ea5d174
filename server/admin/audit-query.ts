/**
 * `cardlink admin audit`: entries of the hash-chained audit log matching a filter, and the
 * chain's verification. The query is itself audited.
 */
import {
  verifyChain,
  appendAudit,
  type AuditEntry,
  type AuditFilter,
  type ChainVerification,
} from '../audit/audit-log.js';
import type { Storage } from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { ProfileError } from './profile.js';

/** Entries returned when the caller sets no limit. */
export const DEFAULT_AUDIT_QUERY_LIMIT = 100;
/** Most entries one query returns (use `exportJsonLines` for the whole log). */
export const MAX_AUDIT_QUERY_LIMIT = 10_000;

export interface AuditQueryResult {
  /** The newest `limit` matching entries, oldest first. */
  readonly entries: readonly AuditEntry[];
  /** The whole chain's check, unless `verify: false`. */
  readonly chain?: ChainVerification;
}

export async function queryAudit(options: {
  storage: Storage;
  filter?: AuditFilter;
  limit?: number;
  verify?: boolean;
  actor?: string;
}): Promise<AuditQueryResult> {
  const { storage } = options;
  const filter = options.filter ?? {};
  const limit = options.limit ?? DEFAULT_AUDIT_QUERY_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_AUDIT_QUERY_LIMIT) {
    throw new ProfileError('limit', `must be an integer from 1 to ${MAX_AUDIT_QUERY_LIMIT}`);
  }
  let query = storage.db.selectFrom('audit_log').selectAll();
  if (filter.fromId !== undefined) query = query.where('id', '>=', filter.fromId);
  if (filter.toId !== undefined) query = query.where('id', '<=', filter.toId);
  if (filter.cardId !== undefined) query = query.where('card_id', '=', filter.cardId);
  if (filter.eventType !== undefined) query = query.where('event_type', '=', filter.eventType);
  if (filter.actor !== undefined) query = query.where('actor', '=', filter.actor);
  if (filter.since !== undefined) query = query.where('created_at', '>=', filter.since);
  if (filter.until !== undefined) query = query.where('created_at', '<=', filter.until);
  const rows = await query.orderBy('id', 'desc').limit(limit).execute();
  const entries = rows.reverse().map((row): AuditEntry => ({
    id: row.id,
    time: row.created_at,
    actor: row.actor,
    eventType: row.event_type,
    cardId: row.card_id,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash.toString('hex'),
    hash: row.hash.toString('hex'),
  }));
  const chain = options.verify === false ? undefined : await verifyChain(storage);
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.auditQueried,
      details: {
        count: entries.length,
        ...(filter.cardId !== undefined ? { filterCardId: filter.cardId } : {}),
        ...(filter.eventType !== undefined ? { filterEventType: filter.eventType } : {}),
        ...(chain ? { chainOk: chain.ok } : {}),
      },
    }),
  );
  return { entries, ...(chain ? { chain } : {}) };
}
