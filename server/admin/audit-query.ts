/**
 * `cardlink admin audit`: entries of the hash-chained audit log matching a filter, the chain's
 * verification and the export of entries as JSON lines. Each of them is itself audited.
 */
import type { Writable } from 'node:stream';
import {
  verifyChain,
  appendAudit,
  auditEntryOf,
  exportJsonLines,
  type AuditEntry,
  type AuditFilter,
  type ChainVerification,
} from '../audit/audit-log.js';
import { listAuditRows, type Storage } from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { ProfileError } from './profile.js';

/** Entries returned when the caller sets no limit. */
export const DEFAULT_AUDIT_QUERY_LIMIT = 100;
/** Most entries one query returns (use `exportAudit` for the whole log). */
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
  const rows = await listAuditRows(storage, filter, { limit, newestFirst: true });
  const entries = rows.reverse().map(auditEntryOf);
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

/** Verifies the whole chain (`verifyChain`) and audits the check with its outcome. */
export async function verifyAudit(options: { storage: Storage; actor?: string }): Promise<ChainVerification> {
  const { storage } = options;
  const result = await verifyChain(storage);
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.auditVerified,
      details: result.ok
        ? { ok: true, count: result.count }
        : { ok: false, count: result.count, firstBadId: result.firstBadId, reason: result.reason },
    }),
  );
  return result;
}

/**
 * Writes every entry matching `filter` to `stream` as JSON lines with their hashes
 * (`exportJsonLines`), then audits the export. Returns the number written.
 */
export async function exportAudit(options: {
  storage: Storage;
  stream: Writable;
  filter?: AuditFilter;
  actor?: string;
}): Promise<number> {
  const { storage } = options;
  const filter = options.filter ?? {};
  const written = await exportJsonLines(storage, options.stream, filter);
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.auditExported,
      details: {
        count: written,
        ...(filter.cardId !== undefined ? { filterCardId: filter.cardId } : {}),
        ...(filter.eventType !== undefined ? { filterEventType: filter.eventType } : {}),
      },
    }),
  );
  return written;
}
