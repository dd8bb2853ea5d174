/**
 * PIN and PUK retry counters and verifiers (SP 800-73-4 Part 2, 3.2.1: key references 80, 81).
 *
 * A try is consumed before the comparison, by one atomic statement that commits on its own:
 *
 *   UPDATE cards SET pin_retries_remaining = pin_retries_remaining - 1
 *   WHERE id = ? AND pin_retries_remaining > 0 AND session_epoch = ? RETURNING ...
 *
 * Only then is the candidate compared (outside any transaction: the comparison may call a key
 * provider or an HSM); a match restores the counter to its limit. Concurrent tries therefore
 * each cost one decrement, never fewer (a read-then-write would lose decrements), a crash after
 * the decrement keeps the try counted, and a blocked counter (0) never reaches the comparison.
 */
import { sql } from 'kysely';
import { CardNotFoundError, StorageError } from './errors.js';
import {
  asBuffer,
  fenceFailure,
  nowIso,
  type CardFence,
  type FencedCard,
  type RetryCounter,
} from './cards.js';
import type { Queryable, Storage, Tx } from './storage.js';

/** PIN (key reference 80) or PUK (key reference 81). */
export type ReferenceKind = 'pin' | 'puk';

/** The comparison's answer; `replacementVerifier` (on a match) upgrades the stored verifier. */
export interface CompareResult {
  readonly match: boolean;
  readonly replacementVerifier?: Uint8Array;
}

export type ReferenceVerifyResult =
  | { readonly ok: true; readonly remaining: number }
  /** Wrong value, or already blocked (remaining 0, nothing compared). */
  | { readonly ok: false; readonly remaining: number };

const COLUMNS = {
  pin: { verifier: 'pin_verifier', remaining: 'pin_retries_remaining', limit: 'pin_retries_limit' },
  puk: { verifier: 'puk_verifier', remaining: 'puk_retries_remaining', limit: 'puk_retries_limit' },
} as const;

/** A consumed try: the verifier to compare with, the tries left after it and the limit. */
export interface ConsumedTry {
  readonly verifier: Buffer;
  readonly remaining: number;
  readonly limit: number;
}

/**
 * Consumes a try of the card's `kind` in `tx` with one atomic statement (decrement where tries
 * remain and the epoch is the session's). Returns the verifier to compare with, or undefined when
 * the reference is blocked (nothing consumed). Throws `CardTakenOverError` / `CardNotFoundError`
 * for a stale session or a missing card. Commit `tx` before comparing (see `verifyReference`).
 */
export async function consumeReferenceTry(
  tx: Tx,
  fence: CardFence,
  kind: ReferenceKind,
): Promise<ConsumedTry | undefined> {
  const c = COLUMNS[kind];
  const { rows } = await sql<{ verifier: Buffer; remaining: number; retries_limit: number }>`
    update cards set ${sql.ref(c.remaining)} = ${sql.ref(c.remaining)} - 1
    where id = ${fence.cardId} and ${sql.ref(c.remaining)} > 0 and session_epoch = ${fence.epoch}
    returning ${sql.ref(c.verifier)} as verifier, ${sql.ref(c.remaining)} as remaining,
      ${sql.ref(c.limit)} as retries_limit`.execute(tx.db);
  const row = rows[0];
  if (row)
    return { verifier: row.verifier, remaining: Number(row.remaining), limit: Number(row.retries_limit) };
  const status = await tx.db
    .selectFrom('cards')
    .select('session_epoch')
    .where('id', '=', fence.cardId)
    .executeTakeFirst();
  if (!status || status.session_epoch !== fence.epoch) throw await fenceFailure(tx, fence);
  return undefined; // blocked
}

/**
 * After a match: restores the counter to its limit and stores `verifier` (the one compared with,
 * or its replacement under the current PIN key), fenced on the session's epoch.
 */
export async function restoreReference(
  tx: Tx,
  fence: CardFence,
  kind: ReferenceKind,
  verifier: Uint8Array,
): Promise<void> {
  const c = COLUMNS[kind];
  const { rows } = await sql<{ id: string }>`
    update cards set ${sql.ref(c.remaining)} = ${sql.ref(c.limit)}, ${sql.ref(c.verifier)} = ${asBuffer(verifier)}
    where id = ${fence.cardId} and session_epoch = ${fence.epoch}
    returning id`.execute(tx.db);
  if (rows.length === 0) throw await fenceFailure(tx, fence);
}

/**
 * Consumes a try of the card's `kind`, then asks `compare` whether the candidate matches the
 * stored verifier, and restores the counter on a match. Fenced on the session's epoch (a stale
 * session gets `CardTakenOverError` and consumes nothing). Takes the storage, not a transaction:
 * the decrement must commit before the comparison.
 */
export async function verifyReference(
  storage: Storage,
  fence: CardFence,
  kind: ReferenceKind,
  compare: (verifier: Buffer) => Promise<CompareResult>,
): Promise<ReferenceVerifyResult> {
  const consumed = await storage.transaction((tx) => consumeReferenceTry(tx, fence, kind));
  if (!consumed) return { ok: false, remaining: 0 };

  const result = await compare(consumed.verifier);
  if (!result.match) return { ok: false, remaining: consumed.remaining };

  await storage.transaction((tx) =>
    restoreReference(tx, fence, kind, result.replacementVerifier ?? consumed.verifier),
  );
  return { ok: true, remaining: consumed.limit };
}

export async function referenceStatus(
  q: Queryable,
  cardId: string,
  kind: ReferenceKind,
): Promise<RetryCounter> {
  const card = await q.db
    .selectFrom('cards')
    .select(['pin_retries_remaining', 'pin_retries_limit', 'puk_retries_remaining', 'puk_retries_limit'])
    .where('id', '=', cardId)
    .executeTakeFirst();
  if (!card) throw new CardNotFoundError(cardId);
  return kind === 'pin'
    ? { remaining: card.pin_retries_remaining, limit: card.pin_retries_limit }
    : { remaining: card.puk_retries_remaining, limit: card.puk_retries_limit };
}

/**
 * Sets a new verifier and restores the counter (CHANGE REFERENCE DATA after a verified current
 * value, RESET RETRY COUNTER after a verified PUK). `retriesLimit` changes the limit as well.
 */
export async function setReference(
  card: FencedCard,
  kind: ReferenceKind,
  verifier: Uint8Array,
  retriesLimit?: number,
): Promise<void> {
  const c = COLUMNS[kind];
  if (
    retriesLimit !== undefined &&
    (!Number.isInteger(retriesLimit) || retriesLimit < 1 || retriesLimit > 255)
  ) {
    throw new StorageError('retry limit must be 1..255', { kind, retriesLimit });
  }
  const limit = retriesLimit === undefined ? sql.ref(c.limit) : sql`${retriesLimit}`;
  await sql`
    update cards set ${sql.ref(c.verifier)} = ${asBuffer(verifier)}, ${sql.ref(c.limit)} = ${limit},
      ${sql.ref(c.remaining)} = ${limit}, updated_at = ${nowIso()}
    where id = ${card.cardId}`.execute(card.tx.db);
}

/** A card's stored PIN and PUK verifiers (server/keys/pin-verifier.ts), never the values. */
export interface ReferenceVerifiers {
  readonly cardId: string;
  readonly pin: Buffer;
  readonly puk: Buffer;
}

/** Up to `limit` cards' verifiers in card id order, after `afterCardId` when given. */
export async function listReferenceVerifiers(
  q: Queryable,
  limit: number,
  afterCardId?: string,
): Promise<ReferenceVerifiers[]> {
  const rows = await q.db
    .selectFrom('cards')
    .select(['id', 'pin_verifier', 'puk_verifier'])
    .$if(afterCardId !== undefined, (qb) => qb.where('id', '>', afterCardId!))
    .orderBy('id')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ cardId: r.id, pin: r.pin_verifier, puk: r.puk_verifier }));
}
