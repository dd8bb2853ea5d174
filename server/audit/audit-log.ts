/**
 * The audit log: append-only and hash-chained, in the card server's database.
 *
 * Each entry stores `prev_hash` (the previous entry's hash; 32 zero bytes before the first) and
 * `hash = SHA-256(prev_hash || canonical entry)`, where the canonical entry is the JSON array
 * `[1, id, time, actor, eventType, cardId, details]` and `details` is the canonical JSON text
 * exactly as stored. Ids are consecutive from 1. Changing, deleting, inserting or reordering a
 * row breaks the chain at that row, which `verifyChain` reports; dropping the newest rows is
 * caught against the chain head row. To detect a rewrite of the whole chain (head included),
 * copy `auditChainHead()` somewhere the database's administrators cannot write, now and then.
 *
 * Appends happen inside the caller's transaction (the event commits with the state change it
 * describes, or not at all) and are serialized on the chain head row (`SELECT ... FOR UPDATE` on
 * PostgreSQL; SQLite runs one transaction at a time anyway), so the chain never forks. Take the
 * head lock last in a transaction: it is held until commit. The SQL is server/storage/audit.ts.
 *
 * Details never carry secrets: no PIN, PUK, key, token or payload. `append` refuses raw bytes and
 * member names that say "secret"; for private-key operations use `privateKeyOperationDetails`
 * (slot, algorithm and the SHA-256 of the input, never the input).
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import type { Writable } from 'node:stream';
import { CardlinkError } from '../../protocol/errors.js';
import {
  insertAuditRows,
  listAuditRows,
  lockAuditChainHead,
  readAuditChainHead,
  type AuditFilter,
  type AuditRowValues,
} from '../storage/audit.js';
import { AUDIT_GENESIS_HASH } from '../storage/migrations.js';
import type { AuditLogRow } from '../storage/schema.js';
import type { Queryable, Tx } from '../storage/storage.js';
import { canonicalJson } from './canonical-json.js';

/** Event types cardlink writes; other strings are accepted for extensions. */
export const AUDIT_EVENTS = {
  cardCreated: 'card.created',
  cardDeleted: 'card.deleted',
  cardClaimed: 'card.claimed',
  pinVerified: 'pin.verified',
  pinFailed: 'pin.failed',
  pinBlocked: 'pin.blocked',
  pinChanged: 'pin.changed',
  pinUnblocked: 'pin.unblocked',
  /** The user set the PIN after a fresh sign-in (first PIN, or a forgotten one replaced). */
  pinSetBySignIn: 'pin.set-by-sign-in',
  /** A set-PIN after a sign-in was refused (not fresh, not allowed, or the PIN policy). */
  pinSetRefused: 'pin.set-refused',
  keyGenerated: 'key.generated',
  keyImported: 'key.imported',
  keyUsed: 'key.used',
  managementKeyChanged: 'mgmt-key.changed',
  kekRotated: 'kek.rotated',
  /** The embedded issuing CA was generated (`cardlink admin ca init`). */
  caCreated: 'ca.created',
  /** An existing CA was imported (`cardlink admin ca import`). */
  caImported: 'ca.imported',
  /** A CRL was signed (after a revocation, or `cardlink admin ca crl`). */
  crlIssued: 'crl.issued',
  /** CA-issued keys and certificates were written to a card (`cardlink admin enroll`). */
  cardEnrolled: 'card.enrolled',
  /** A card's certificates were revoked (re-enrollment or erase). */
  certificatesRevoked: 'certificates.revoked',
  /**
   * A card's certificates were renewed (`cardlink admin renew`, or `renew --due` from a timer);
   * the details name the retired slot an old key management key moved to.
   */
  cardRenewed: 'card.renewed',
  /**
   * A key and its certificate from a PKCS#12 file were written to a slot (`cardlink admin
   * import-p12`); the details name the slot and the certificate, never key material.
   */
  pkcs12Imported: 'card.pkcs12-imported',
  /**
   * An archived key management key was handed out for recovery (`cardlink admin recover-key`):
   * the details name the archive, the certificate serial and the administrator's reason.
   */
  keyRecovered: 'key.recovered',
  deviceRegistered: 'device.registered',
  deviceApproved: 'device.approved',
  sessionOpened: 'session.opened',
} as const;

/** Rows read per query by `verifyChain` and `exportJsonLines`. */
export const AUDIT_READ_BATCH = 500;

/** Member names refused in details (whole name or suffix, case-insensitive). */
const SECRET_NAME =
  /(^|_|-)(pin|puk|password|passphrase|secret|token|privatekey|mgmtkey|managementkey|key|plaintext|input)$/i;

const ENTRY_FORMAT = 1;

export interface AuditEvent {
  /** Who: `user:<id>`, `admin:<name>`, `system`. */
  readonly actor: string;
  readonly eventType: string;
  readonly cardId?: string | null;
  /** JSON-serializable, without secrets. */
  readonly details?: Readonly<Record<string, unknown>>;
}

export interface AuditEntry {
  readonly id: number;
  readonly time: string;
  readonly actor: string;
  readonly eventType: string;
  readonly cardId: string | null;
  readonly details: Record<string, unknown>;
  /** Hex. */
  readonly prevHash: string;
  /** Hex. */
  readonly hash: string;
}

export type ChainVerification =
  | { readonly ok: true; readonly count: number; readonly headHash: string }
  | {
      readonly ok: false;
      /** The first entry (by id) at which the chain does not hold. */
      readonly firstBadId: number;
      readonly reason: 'missing' | 'prev-hash-mismatch' | 'hash-mismatch' | 'truncated' | 'head-mismatch';
      /** Entries checked before the failure. */
      readonly count: number;
    };

/** Which entries `exportJsonLines` (and `cardlink admin audit`) return. */
export type { AuditFilter };

/** The hash of an entry given its predecessor's hash. */
export function entryHash(
  prevHash: Uint8Array,
  entry: {
    id: number;
    time: string;
    actor: string;
    eventType: string;
    cardId: string | null;
    details: string;
  },
): Buffer {
  const canonical = JSON.stringify([
    ENTRY_FORMAT,
    entry.id,
    entry.time,
    entry.actor,
    entry.eventType,
    entry.cardId,
    entry.details,
  ]);
  return createHash('sha256').update(prevHash).update(canonical, 'utf8').digest();
}

/** Details for a private-key operation: never the input, only its SHA-256. */
export function privateKeyOperationDetails(
  slot: number,
  algorithm: string,
  input: Uint8Array,
  extra: Readonly<Record<string, string | number | boolean>> = {},
): Record<string, string | number | boolean> {
  return {
    ...extra,
    slot: `0x${slot.toString(16).padStart(2, '0')}`,
    algorithm,
    inputSha256: createHash('sha256').update(input).digest('hex'),
    inputLength: input.length,
  };
}

/** An event checked for secrets and serialized, ready to be chained (`appendAudits`). */
export interface PreparedAuditEvent {
  readonly prepared: true;
  readonly actor: string;
  readonly eventType: string;
  readonly cardId: string | null;
  readonly details: Readonly<Record<string, unknown>>;
  /** Canonical JSON of `details`, exactly as stored and hashed. */
  readonly detailsText: string;
}

/**
 * Checks an event (no secrets in its details) and serializes it. Done before a transaction opens,
 * so a bad event fails alone instead of failing a batch it was to join.
 */
export function prepareAuditEvent(event: AuditEvent | PreparedAuditEvent): PreparedAuditEvent {
  if ('prepared' in event) return event;
  const details = event.details ?? {};
  refuseSecrets(details, 0);
  return {
    prepared: true,
    actor: event.actor,
    eventType: event.eventType,
    cardId: event.cardId ?? null,
    details,
    detailsText: canonicalJson(details),
  };
}

/** Appends an entry in the caller's transaction. */
export async function appendAudit(tx: Tx, event: AuditEvent | PreparedAuditEvent): Promise<AuditEntry> {
  return (await appendAudits(tx, [event]))[0]!;
}

/**
 * Appends entries, in order, in the caller's transaction: one read of the chain head, one insert
 * and one head update however many there are.
 */
export async function appendAudits(
  tx: Tx,
  events: readonly (AuditEvent | PreparedAuditEvent)[],
): Promise<AuditEntry[]> {
  if (events.length === 0) return [];
  const prepared = events.map(prepareAuditEvent);
  const current = await lockAuditChainHead(tx);
  if (!current) throw new CardlinkError('ERR_STORAGE', 'audit chain head missing (run migrate)');
  const time = new Date().toISOString();
  let prevHash = current.lastHash;
  let id = current.lastId;
  const entries: AuditEntry[] = [];
  const rows: AuditRowValues[] = [];
  for (const event of prepared) {
    id++;
    const entry = {
      id,
      time,
      actor: event.actor,
      eventType: event.eventType,
      cardId: event.cardId,
      details: event.detailsText,
    };
    const hash = entryHash(prevHash, entry);
    rows.push({ ...entry, prevHash, hash });
    entries.push({
      ...entry,
      details: { ...event.details },
      prevHash: prevHash.toString('hex'),
      hash: hash.toString('hex'),
    });
    prevHash = hash;
  }
  await insertAuditRows(tx, rows);
  return entries;
}

/** The newest entry's id and hash: anchor it outside the database to detect a rewritten chain. */
export async function auditChainHead(q: Queryable): Promise<{ lastId: number; lastHash: string }> {
  const head = await readAuditChainHead(q);
  if (!head) throw new CardlinkError('ERR_STORAGE', 'audit chain head missing (run migrate)');
  return { lastId: head.lastId, lastHash: head.lastHash.toString('hex') };
}

/** Recomputes the whole chain up to the head as it was when the check began. */
export async function verifyChain(
  q: Queryable,
  options: { batchSize?: number } = {},
): Promise<ChainVerification> {
  const batchSize = options.batchSize ?? AUDIT_READ_BATCH;
  const head = await readAuditChainHead(q);
  if (!head) throw new CardlinkError('ERR_STORAGE', 'audit chain head missing (run migrate)');
  let expectedId = 1;
  let prevHash: Buffer = AUDIT_GENESIS_HASH;
  let count = 0;
  for (;;) {
    const rows = await listAuditRows(q, { fromId: expectedId, toId: head.lastId }, { limit: batchSize });
    if (rows.length === 0) break;
    for (const row of rows) {
      if (row.id !== expectedId) return { ok: false, firstBadId: expectedId, reason: 'missing', count };
      if (!row.prev_hash.equals(prevHash))
        return { ok: false, firstBadId: row.id, reason: 'prev-hash-mismatch', count };
      const hash = entryHash(row.prev_hash, {
        id: row.id,
        time: row.created_at,
        actor: row.actor,
        eventType: row.event_type,
        cardId: row.card_id,
        details: row.details,
      });
      if (!hash.equals(row.hash)) return { ok: false, firstBadId: row.id, reason: 'hash-mismatch', count };
      prevHash = row.hash;
      expectedId++;
      count++;
    }
  }
  if (expectedId - 1 !== head.lastId)
    return { ok: false, firstBadId: expectedId, reason: 'truncated', count };
  if (!prevHash.equals(head.lastHash))
    return { ok: false, firstBadId: head.lastId, reason: 'head-mismatch', count };
  return { ok: true, count, headHash: prevHash.toString('hex') };
}

/**
 * Writes the entries matching `filter` to `stream` as JSON lines, oldest first, with their hashes
 * (so a copy can be checked against the chain). Honours backpressure. Returns the number written.
 */
export async function exportJsonLines(
  q: Queryable,
  stream: Writable,
  filter: AuditFilter = {},
): Promise<number> {
  let afterId: number | undefined;
  let written = 0;
  for (;;) {
    const rows = await listAuditRows(q, filter, {
      limit: AUDIT_READ_BATCH,
      ...(afterId !== undefined ? { afterId } : {}),
    });
    if (rows.length === 0) break;
    for (const row of rows) {
      if (!stream.write(JSON.stringify(auditEntryOf(row)) + '\n')) await once(stream, 'drain');
      written++;
    }
    afterId = rows[rows.length - 1]!.id;
  }
  return written;
}

/** An entry as read from the database, its hashes in hex. */
export function auditEntryOf(row: AuditLogRow): AuditEntry {
  return {
    id: row.id,
    time: row.created_at,
    actor: row.actor,
    eventType: row.event_type,
    cardId: row.card_id,
    details: JSON.parse(row.details) as Record<string, unknown>,
    prevHash: row.prev_hash.toString('hex'),
    hash: row.hash.toString('hex'),
  };
}

function refuseSecrets(value: unknown, depth: number): void {
  if (value === null || typeof value !== 'object' || depth > 8) return;
  if (value instanceof Uint8Array) {
    throw new CardlinkError('ERR_INTERNAL', 'audit details must not carry raw bytes');
  }
  for (const [name, member] of Object.entries(value)) {
    if (!Array.isArray(value) && SECRET_NAME.test(name)) {
      throw new CardlinkError('ERR_INTERNAL', 'audit details must not carry secrets', { member: name });
    }
    refuseSecrets(member, depth + 1);
  }
}
