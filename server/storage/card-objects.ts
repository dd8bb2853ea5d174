/**
 * PIV data objects by BER-TLV tag (`0x5FC102` CHUID, certificates, ...). Values are the content
 * of tag 53 as the card returns it; they are public (GET DATA needs no PIN for most), so they are
 * stored in the clear.
 */
import { MAX_DATA_OBJECT_BYTES } from '../../apdu/piv/index.js';
import { StorageError } from './errors.js';
import { asBuffer, nowIso, type FencedCard } from './cards.js';
import type { Queryable } from './storage.js';

/** Largest object value stored: the card states' limit (a certificate object with chain fits easily). */
export const MAX_CARD_OBJECT_BYTES = MAX_DATA_OBJECT_BYTES;

export async function getCardObject(q: Queryable, cardId: string, tag: number): Promise<Buffer | undefined> {
  const row = await q.db
    .selectFrom('card_objects')
    .select('value')
    .where('card_id', '=', cardId)
    .where('tag', '=', tag)
    .executeTakeFirst();
  return row?.value;
}

export async function listCardObjectTags(q: Queryable, cardId: string): Promise<number[]> {
  const rows = await q.db
    .selectFrom('card_objects')
    .select('tag')
    .where('card_id', '=', cardId)
    .orderBy('tag')
    .execute();
  return rows.map((r) => r.tag);
}

/** Stores the object, or deletes it when `value` is empty (PUT DATA semantics). */
export async function putCardObject(card: FencedCard, tag: number, value: Uint8Array): Promise<void> {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xffffff)
    throw new StorageError('object tag out of range', { tag });
  if (value.length > MAX_CARD_OBJECT_BYTES) {
    throw new StorageError('object too large', { tag, length: value.length, limit: MAX_CARD_OBJECT_BYTES });
  }
  if (value.length === 0) {
    await card.tx.db
      .deleteFrom('card_objects')
      .where('card_id', '=', card.cardId)
      .where('tag', '=', tag)
      .execute();
    return;
  }
  const now = nowIso();
  await card.tx.db
    .insertInto('card_objects')
    .values({ card_id: card.cardId, tag, value: asBuffer(value), updated_at: now })
    .onConflict((oc) =>
      oc.columns(['card_id', 'tag']).doUpdateSet({ value: asBuffer(value), updated_at: now }),
    )
    .execute();
}
