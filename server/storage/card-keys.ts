/**
 * Private keys by PIV slot, stored sealed (`server/keys/sealing.ts`): the database holds the
 * AES-GCM ciphertext of the PKCS#8 key, the KEK-wrapped data key and the KEK version, never the
 * key itself. A slot's key is sealed with the fenced card's version as key version, which the
 * seal's AAD binds together with tenant, card and slot.
 */
import { asBuffer, assertKeyVersion, nowIso, type FencedCard, type SealedRecord } from './cards.js';
import type { CardKeyRow } from './schema.js';
import type { Queryable } from './storage.js';

export interface CardKeyRecord {
  readonly cardId: string;
  readonly slot: number;
  readonly algorithm: string;
  /** SubjectPublicKeyInfo, DER. */
  readonly publicKeySpki: Buffer;
  readonly key: SealedRecord;
  readonly pinPolicy: string;
  readonly touchPolicy: string;
  readonly origin: string;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface NewCardKey {
  readonly slot: number;
  readonly algorithm: string;
  readonly publicKeySpki: Uint8Array;
  /** Sealed with key version `card.version`. */
  readonly key: SealedRecord;
  readonly pinPolicy: string;
  readonly touchPolicy: string;
  readonly origin: string;
}

export async function findCardKey(
  q: Queryable,
  cardId: string,
  slot: number,
): Promise<CardKeyRecord | undefined> {
  const row = await q.db
    .selectFrom('card_keys')
    .selectAll()
    .where('card_id', '=', cardId)
    .where('slot', '=', slot)
    .executeTakeFirst();
  return row ? toRecord(row) : undefined;
}

export async function listCardKeys(q: Queryable, cardId: string): Promise<CardKeyRecord[]> {
  const rows = await q.db
    .selectFrom('card_keys')
    .selectAll()
    .where('card_id', '=', cardId)
    .orderBy('slot')
    .execute();
  return rows.map(toRecord);
}

/** How many slots of the card hold a key. */
export async function countCardKeys(q: Queryable, cardId: string): Promise<number> {
  const row = await q.db
    .selectFrom('card_keys')
    .select((eb) => eb.fn.countAll<number>().as('n'))
    .where('card_id', '=', cardId)
    .executeTakeFirst();
  return Number(row?.n ?? 0);
}

/** Stores (or replaces) the slot's key. */
export async function putCardKey(card: FencedCard, key: NewCardKey): Promise<void> {
  assertKeyVersion(card, key.key);
  const now = nowIso();
  const values = {
    algorithm: key.algorithm,
    public_key_spki: asBuffer(key.publicKeySpki),
    sealed_private_key: key.key.sealed,
    wrapped_data_key: key.key.wrappedDataKey,
    kek_version: key.key.kekVersion,
    key_version: key.key.keyVersion,
    pin_policy: key.pinPolicy,
    touch_policy: key.touchPolicy,
    origin: key.origin,
    updated_at: now,
  };
  await card.tx.db
    .insertInto('card_keys')
    .values({ card_id: card.cardId, slot: key.slot, created_at: now, ...values })
    .onConflict((oc) => oc.columns(['card_id', 'slot']).doUpdateSet(values))
    .execute();
}

/** Deletes the slot's key (its sealed blob and wrapped data key). Returns false if there was none. */
export async function deleteCardKey(card: FencedCard, slot: number): Promise<boolean> {
  const result = await card.tx.db
    .deleteFrom('card_keys')
    .where('card_id', '=', card.cardId)
    .where('slot', '=', slot)
    .executeTakeFirst();
  return result.numDeletedRows > 0n;
}

function toRecord(row: CardKeyRow): CardKeyRecord {
  return {
    cardId: row.card_id,
    slot: row.slot,
    algorithm: row.algorithm,
    publicKeySpki: row.public_key_spki,
    key: {
      sealed: row.sealed_private_key,
      wrappedDataKey: row.wrapped_data_key,
      kekVersion: row.kek_version,
      keyVersion: row.key_version,
    },
    pinPolicy: row.pin_policy,
    touchPolicy: row.touch_policy,
    origin: row.origin,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
