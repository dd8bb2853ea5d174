/**
 * What the card server knows of a card's PIN beyond its verifier and counter: whether it was never
 * set (`cards.pin_unset`, a card made with no PIN known to anyone) and the verifiers of the PINs it
 * had before (`pin_history`), so a profile's `pin.history` can refuse their reuse. Verifiers only
 * (server/keys/pin-verifier.ts: a keyed MAC over a salt and the PIN), never a PIN.
 */
import { CardNotFoundError } from './errors.js';
import { asBuffer, nowIso, type FencedCard } from './cards.js';
import type { Queryable } from './storage.js';

export interface PinRecord {
  readonly cardId: string;
  readonly userId: string;
  readonly tenantId: string;
  /** The card's profile as stored with it (JSON). */
  readonly profile: unknown;
  readonly unset: boolean;
  /** The current PIN's verifier (of a random value while `unset`). */
  readonly verifier: Buffer;
  readonly retriesRemaining: number;
  readonly sessionEpoch: number;
  /** Earlier PINs' verifiers, newest first. */
  readonly history: readonly Buffer[];
}

/** The card's PIN record with up to `historyLimit` earlier verifiers. CardNotFoundError when absent. */
export async function readPinRecord(q: Queryable, cardId: string, historyLimit: number): Promise<PinRecord> {
  const row = await q.db
    .selectFrom('cards')
    .select([
      'id',
      'user_id',
      'tenant_id',
      'profile',
      'pin_unset',
      'pin_verifier',
      'pin_retries_remaining',
      'session_epoch',
    ])
    .where('id', '=', cardId)
    .executeTakeFirst();
  if (!row) throw new CardNotFoundError(cardId);
  const history =
    historyLimit > 0
      ? await q.db
          .selectFrom('pin_history')
          .select('verifier')
          .where('card_id', '=', cardId)
          .orderBy('seq', 'desc')
          .limit(historyLimit)
          .execute()
      : [];
  return {
    cardId: row.id,
    userId: row.user_id,
    tenantId: row.tenant_id,
    profile: JSON.parse(row.profile) as unknown,
    unset: Number(row.pin_unset) === 1,
    verifier: row.pin_verifier,
    retriesRemaining: Number(row.pin_retries_remaining),
    sessionEpoch: Number(row.session_epoch),
    history: history.map((h) => h.verifier),
  };
}

/**
 * After a new PIN was set in `card.tx`: the card's PIN is no longer unset, and `previous` (the
 * verifier it replaced; none when the PIN was unset) joins the history, of which only the newest
 * `keep` entries stay.
 */
export async function recordPinReplaced(
  card: FencedCard,
  previous: Uint8Array | undefined,
  keep: number,
): Promise<void> {
  const db = card.tx.db;
  await db.updateTable('cards').set({ pin_unset: 0 }).where('id', '=', card.cardId).execute();
  if (previous && keep > 0) {
    const last = await db
      .selectFrom('pin_history')
      .select((eb) => eb.fn.max('seq').as('seq'))
      .where('card_id', '=', card.cardId)
      .executeTakeFirst();
    const seq = Number(last?.seq ?? 0) + 1;
    await db
      .insertInto('pin_history')
      .values({ card_id: card.cardId, seq, verifier: asBuffer(previous), replaced_at: nowIso() })
      .execute();
    await db
      .deleteFrom('pin_history')
      .where('card_id', '=', card.cardId)
      .where('seq', '<=', seq - keep)
      .execute();
  } else if (keep === 0) {
    await db.deleteFrom('pin_history').where('card_id', '=', card.cardId).execute();
  }
}

/** Where a history verifier sits: the card and its sequence number (the table's key). */
export interface PinHistoryPlace {
  readonly cardId: string;
  readonly seq: number;
}

/** A history verifier with its place, for the PIN key versions in use (server/keys/rewrap.ts). */
export interface PinHistoryVerifier extends PinHistoryPlace {
  readonly verifier: Buffer;
}

/** Up to `limit` history verifiers of every card in (card id, seq) order, after `after` when given. */
export async function listPinHistoryVerifiers(
  q: Queryable,
  limit: number,
  after?: PinHistoryPlace,
): Promise<PinHistoryVerifier[]> {
  const rows = await q.db
    .selectFrom('pin_history')
    .select(['card_id', 'seq', 'verifier'])
    .$if(after !== undefined, (qb) =>
      qb.where((eb) =>
        eb.or([
          eb('card_id', '>', after!.cardId),
          eb.and([eb('card_id', '=', after!.cardId), eb('seq', '>', after!.seq)]),
        ]),
      ),
    )
    .orderBy('card_id')
    .orderBy('seq')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ cardId: r.card_id, seq: Number(r.seq), verifier: r.verifier }));
}
