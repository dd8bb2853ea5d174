/**
 * One client per card, and exactly-once commands.
 *
 * `claimCard` runs in the same transaction as the login that opens a session: it bumps the
 * card's session epoch, records the session and announces the claim (PostgreSQL NOTIFY on
 * `cardlink_card_claimed`, an in-process event on SQLite). The previous holder learns of it from
 * the announcement, or at the latest from its next write, which the fence (`fenceCard`) refuses.
 *
 * Exactly-once: a command that changes state is applied in one transaction together with
 * `recordCommand(session, seq, response)`. A client that resends `seq` after a reconnect gets the
 * recorded response from `findRecorded` instead of a second application.
 */
import { compiledQuery } from './compiled-query.js';
import { CommandAlreadyRecordedError, CardNotFoundError } from './errors.js';
import { asBuffer, nowIso, type FencedCard } from './cards.js';
import type { Queryable, Tx } from './storage.js';

/**
 * Prefix of the claim id (`sessions.id`) an administrator's `force-logout` claims a card with (the
 * rest is a fresh UUID): such a claim has no device, and is shown as the administrator's.
 */
export const ADMIN_CLAIM_PREFIX = 'admin:';

export interface ClaimRequest {
  readonly cardId: string;
  /** Unique per login; a reconnecting session may claim again with its own id. */
  readonly sessionId: string;
  readonly userId?: string;
  readonly deviceId?: string;
}

/**
 * Makes `sessionId` the card's only writer. Returns the new epoch; every earlier epoch is fenced
 * off from then on. Throws `CardNotFoundError` for an unknown card.
 */
export async function claimCard(tx: Tx, request: ClaimRequest): Promise<number> {
  const now = nowIso();
  const row = await tx.db
    .updateTable('cards')
    .set((eb) => ({
      session_epoch: eb('session_epoch', '+', 1),
      session_id: request.sessionId,
      updated_at: now,
    }))
    .where('id', '=', request.cardId)
    .returning('session_epoch')
    .executeTakeFirst();
  if (!row) throw new CardNotFoundError(request.cardId);
  const epoch = row.session_epoch;
  await tx.db
    .updateTable('sessions')
    .set({ ended_at: now })
    .where('card_id', '=', request.cardId)
    .where('ended_at', 'is', null)
    .where('id', '!=', request.sessionId)
    .execute();
  await tx.db
    .insertInto('sessions')
    .values({
      id: request.sessionId,
      card_id: request.cardId,
      user_id: request.userId ?? null,
      device_id: request.deviceId ?? null,
      epoch,
      created_at: now,
      ended_at: null,
    })
    .onConflict((oc) => oc.column('id').doUpdateSet({ epoch, ended_at: null }))
    .execute();
  await tx.publishCardClaimed({ cardId: request.cardId, epoch });
  return epoch;
}

/**
 * After `lockCardForChange`: the claim `claimId` takes a new epoch of the card, if it still holds
 * it (the card's `session_id`), so its reloaded state may write again. Returns the new epoch, or
 * undefined when the card was claimed by someone else meanwhile (or is gone). Announces nothing:
 * the claim is the same, no other holder loses anything.
 */
export async function reclaimCard(tx: Tx, cardId: string, claimId: string): Promise<number | undefined> {
  const row = await tx.db
    .updateTable('cards')
    .set((eb) => ({ session_epoch: eb('session_epoch', '+', 1), updated_at: nowIso() }))
    .where('id', '=', cardId)
    .where('session_id', '=', claimId)
    .returning('session_epoch')
    .executeTakeFirst();
  if (!row) return undefined;
  await tx.db
    .updateTable('sessions')
    .set({ epoch: row.session_epoch })
    .where('id', '=', claimId)
    .where('ended_at', 'is', null)
    .execute();
  return row.session_epoch;
}

/** Ids of the card's sessions that have not ended, oldest first. */
export async function listLiveSessionIds(q: Queryable, cardId: string): Promise<string[]> {
  const rows = await q.db
    .selectFrom('sessions')
    .select('id')
    .where('card_id', '=', cardId)
    .where('ended_at', 'is', null)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => r.id);
}

/** A claim (a `sessions` row) with the name of the device that made it. */
export interface ClaimRecord {
  /** The claim's (session's) id. */
  readonly id: string;
  readonly endedAt: string | null;
  /** Null for a claim without a device (an administrator's) or whose device is gone. */
  readonly deviceName: string | null;
}

/** The claim by its id, or the one that made the card's `epoch`. */
export async function findClaim(
  q: Queryable,
  by: { claimId: string } | { cardId: string; epoch: number },
): Promise<ClaimRecord | undefined> {
  let query = q.db
    .selectFrom('sessions')
    .leftJoin('devices', 'devices.id', 'sessions.device_id')
    .select(['sessions.id', 'sessions.ended_at', 'devices.name']);
  query =
    'claimId' in by
      ? query.where('sessions.id', '=', by.claimId)
      : query.where('sessions.card_id', '=', by.cardId).where('sessions.epoch', '=', by.epoch);
  const row = await query.executeTakeFirst();
  return row ? { id: row.id, endedAt: row.ended_at, deviceName: row.name } : undefined;
}

/** A user's card with its open claim, if any. */
export interface CardWithClaim {
  readonly cardId: string;
  readonly label: string;
  /** The claim holding the card, when it has not ended. */
  readonly claimId: string | null;
  /** That claim's device name (null without a device). */
  readonly deviceName: string | null;
}

/** The user's cards, oldest first, each with the device of its claim when that has not ended. */
export async function listCardsWithClaim(q: Queryable, userId: string): Promise<CardWithClaim[]> {
  // One query: the LIST_CARDS request runs it at every daemon start.
  const rows = await q.db
    .selectFrom('cards')
    .leftJoin('sessions', (join) =>
      join.onRef('sessions.id', '=', 'cards.session_id').on('sessions.ended_at', 'is', null),
    )
    .leftJoin('devices', 'devices.id', 'sessions.device_id')
    .select(['cards.id', 'cards.label', 'sessions.id as claimId', 'devices.name'])
    .where('cards.user_id', '=', userId)
    .orderBy('cards.created_at')
    .execute();
  return rows.map((r) => ({ cardId: r.id, label: r.label, claimId: r.claimId, deviceName: r.name }));
}

/** Marks the session ended and forgets its recorded responses. Its epoch stays fenced. */
export async function endSession(tx: Tx, sessionId: string): Promise<void> {
  await tx.db.deleteFrom('applied_commands').where('session_id', '=', sessionId).execute();
  await tx.db
    .updateTable('sessions')
    .set({ ended_at: nowIso() })
    .where('id', '=', sessionId)
    .where('ended_at', 'is', null)
    .execute();
}

/**
 * Records the response of command `seq` of the session, in the transaction that applied the
 * command (pass the fenced card: the command's state change and its record commit together).
 * Throws `CommandAlreadyRecordedError` if `seq` was recorded before (call `findRecorded` first);
 * the transaction then rolls back.
 */
export async function recordCommand(
  card: FencedCard,
  sessionId: string,
  seq: number,
  response: Uint8Array,
): Promise<void> {
  const [refused] = await recordCommands(card.tx, [{ cardId: card.cardId, sessionId, seq, response }]);
  if (refused) throw new CommandAlreadyRecordedError(sessionId, seq);
}

/**
 * Replaces the recorded response of command `seq` (a provisional record, see
 * server/cards/command-unit.ts `checkpoint`), in the fenced card's transaction. Returns false when
 * there was no such record.
 */
export async function replaceRecordedResponse(
  card: FencedCard,
  sessionId: string,
  seq: number,
  response: Uint8Array,
): Promise<boolean> {
  const result = await card.tx.db
    .updateTable('applied_commands')
    .set({ response: asBuffer(response), created_at: nowIso() })
    .where('session_id', '=', sessionId)
    .where('seq', '=', seq)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) === 1;
}

/** One command response for `recordCommands`. */
export interface CommandRecord {
  readonly cardId: string;
  readonly sessionId: string;
  readonly seq: number;
  readonly response: Uint8Array;
}

/** Inserts `shape` records (values: session, seq, card, response, time for each). */
const RECORD_ROWS = compiledQuery((db, p, shape) =>
  db
    .insertInto('applied_commands')
    .values(
      Array.from({ length: shape }, (_, i) => ({
        session_id: p<string>(5 * i),
        seq: p<number>(5 * i + 1),
        card_id: p<string>(5 * i + 2),
        response: p<Buffer>(5 * i + 3),
        created_at: p<string>(5 * i + 4),
      })),
    )
    .onConflict((oc) => oc.columns(['session_id', 'seq']).doNothing())
    .returning(['session_id', 'seq']),
);

/**
 * `recordCommand` for several commands in one statement. A (session, seq) that is already
 * recorded is left as it was, and so is the second of two in `records`: for each record, in
 * order, whether it was refused, so the caller fails that command alone.
 */
export async function recordCommands(tx: Tx, records: readonly CommandRecord[]): Promise<boolean[]> {
  if (records.length === 0) return [];
  const now = nowIso();
  const { rows: inserted } = await RECORD_ROWS.execute(
    tx,
    records.flatMap((r) => [r.sessionId, r.seq, r.cardId, asBuffer(r.response), now]),
    records.length,
  );
  const done = new Set(inserted.map((row) => `${row.session_id} ${row.seq}`));
  // The first of two equal keys took the insert; `delete` hands it to that one only.
  return records.map((r) => !done.delete(`${r.sessionId} ${r.seq}`));
}

/** The recorded response of command `seq` of the session, if it was applied. */
export async function findRecorded(
  q: Queryable,
  sessionId: string,
  seq: number,
): Promise<Buffer | undefined> {
  const row = await q.db
    .selectFrom('applied_commands')
    .select('response')
    .where('session_id', '=', sessionId)
    .where('seq', '=', seq)
    .executeTakeFirst();
  return row?.response;
}

/** Forgets responses the client acknowledged (every `seq` up to and including `uptoSeq`). */
export async function acknowledgeCommands(tx: Tx, sessionId: string, uptoSeq: number): Promise<number> {
  const result = await tx.db
    .deleteFrom('applied_commands')
    .where('session_id', '=', sessionId)
    .where('seq', '<=', uptoSeq)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** Forgets responses recorded before `beforeIso` (housekeeping for sessions that never ended). */
export async function pruneAppliedCommands(tx: Tx, beforeIso: string): Promise<number> {
  const result = await tx.db
    .deleteFrom('applied_commands')
    .where('created_at', '<', beforeIso)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}
