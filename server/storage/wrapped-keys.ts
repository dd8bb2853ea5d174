/**
 * The KEK-wrapped data keys, wherever they are stored: a slot's private key (`card_keys`), a
 * card's management key (`cards.mgmt_*`) or an issuing CA's key (`issuing_cas`). KEK rotation (server/keys/rewrap.ts) reads them in
 * batches and writes back new wraps of the same data keys; the sealed blobs are never touched.
 */
import { MANAGEMENT_KEY_SLOT, type SealedRecord } from './cards.js';
import { caKeyLocation, caIdOfKeyLocation } from './ca-key-location.js';
import type { Queryable, Tx } from './storage.js';

/** Where a wrapped data key is stored. */
export type WrappedKeyKind = 'slot' | 'management' | 'ca';

/** Every kind, in the order a rotation takes them. */
export const WRAPPED_KEY_KINDS: readonly WrappedKeyKind[] = ['slot', 'management', 'ca'];

/** A wrapped data key's place: the card and the PIV key reference (0x9B for a management key). */
export interface WrappedKeyPlace {
  readonly cardId: string;
  readonly slot: number;
}

export interface WrappedKeyRecord extends WrappedKeyPlace {
  readonly tenantId: string;
  readonly key: SealedRecord;
}

/** A new wrap of the data key `old` held when it was read. */
export interface Rewrap extends WrappedKeyPlace {
  readonly old: SealedRecord;
  readonly wrappedDataKey: Buffer;
  readonly kekVersion: number;
}

/**
 * Up to `limit` data keys of `kind` that are not wrapped under `kekVersion`, in (card id, slot)
 * order, after `after` when given.
 */
export async function listKeysNotUnderKek(
  q: Queryable,
  kind: WrappedKeyKind,
  kekVersion: number,
  limit: number,
  after?: WrappedKeyPlace,
): Promise<WrappedKeyRecord[]> {
  if (kind === 'ca') {
    const rows = await q.db
      .selectFrom('issuing_cas')
      .select(['id', 'sealed_private_key', 'wrapped_data_key', 'kek_version', 'key_version'])
      .where('kek_version', '!=', kekVersion)
      // A CA whose key is in the token has no wrapped data key.
      .where('id', 'not in', (eb) => eb.selectFrom('issuing_ca_token_keys').select('ca_id'))
      .$if(after !== undefined, (qb) => qb.where('id', '>', caIdOfKeyLocation(after!.cardId)))
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      ...caKeyLocation(row.id),
      key: {
        sealed: row.sealed_private_key,
        wrappedDataKey: row.wrapped_data_key,
        kekVersion: row.kek_version,
        keyVersion: Number(row.key_version),
      },
    }));
  }
  if (kind === 'management') {
    const rows = await q.db
      .selectFrom('cards')
      .select(['id', 'tenant_id', 'mgmt_sealed', 'mgmt_wrapped_key', 'mgmt_kek_version', 'mgmt_key_version'])
      .where('mgmt_kek_version', '!=', kekVersion)
      // One management key per card: its place follows `after` when the card does.
      .$if(after !== undefined, (qb) => qb.where('id', '>', after!.cardId))
      .orderBy('id')
      .limit(limit)
      .execute();
    return rows.map((row) => ({
      cardId: row.id,
      slot: MANAGEMENT_KEY_SLOT,
      tenantId: row.tenant_id,
      key: {
        sealed: row.mgmt_sealed,
        wrappedDataKey: row.mgmt_wrapped_key,
        kekVersion: row.mgmt_kek_version,
        keyVersion: row.mgmt_key_version,
      },
    }));
  }
  const rows = await q.db
    .selectFrom('card_keys')
    .innerJoin('cards', 'cards.id', 'card_keys.card_id')
    .select([
      'card_keys.card_id',
      'card_keys.slot',
      'cards.tenant_id',
      'card_keys.sealed_private_key',
      'card_keys.wrapped_data_key',
      'card_keys.kek_version',
      'card_keys.key_version',
    ])
    .where('card_keys.kek_version', '!=', kekVersion)
    .$if(after !== undefined, (qb) =>
      qb.where((eb) =>
        eb.or([
          eb('card_keys.card_id', '>', after!.cardId),
          eb.and([eb('card_keys.card_id', '=', after!.cardId), eb('card_keys.slot', '>', after!.slot)]),
        ]),
      ),
    )
    .orderBy('card_keys.card_id')
    .orderBy('card_keys.slot')
    .limit(limit)
    .execute();
  return rows.map((row) => ({
    cardId: row.card_id,
    slot: row.slot,
    tenantId: row.tenant_id,
    key: {
      sealed: row.sealed_private_key,
      wrappedDataKey: row.wrapped_data_key,
      kekVersion: row.kek_version,
      keyVersion: row.key_version,
    },
  }));
}

/**
 * Stores each rewrap whose row still holds the key version and KEK version it was read with (a
 * key a session replaced meanwhile is left alone). Returns how many rows changed.
 */
export async function storeRewraps(
  tx: Tx,
  kind: WrappedKeyKind,
  rewraps: readonly Rewrap[],
): Promise<number> {
  let changed = 0;
  for (const r of rewraps) {
    if (kind === 'ca') {
      const ca = await tx.db
        .updateTable('issuing_cas')
        .set({ wrapped_data_key: r.wrappedDataKey, kek_version: r.kekVersion })
        .where('id', '=', caIdOfKeyLocation(r.cardId))
        .where('key_version', '=', r.old.keyVersion)
        .where('kek_version', '=', r.old.kekVersion)
        .executeTakeFirst();
      changed += Number(ca.numUpdatedRows);
      continue;
    }
    const result =
      kind === 'management'
        ? await tx.db
            .updateTable('cards')
            .set({ mgmt_wrapped_key: r.wrappedDataKey, mgmt_kek_version: r.kekVersion })
            .where('id', '=', r.cardId)
            .where('mgmt_key_version', '=', r.old.keyVersion)
            .where('mgmt_kek_version', '=', r.old.kekVersion)
            .executeTakeFirst()
        : await tx.db
            .updateTable('card_keys')
            .set({ wrapped_data_key: r.wrappedDataKey, kek_version: r.kekVersion })
            .where('card_id', '=', r.cardId)
            .where('slot', '=', r.slot)
            .where('key_version', '=', r.old.keyVersion)
            .where('kek_version', '=', r.old.kekVersion)
            .executeTakeFirst();
    changed += Number(result.numUpdatedRows);
  }
  return changed;
}

/** How many wrapped data keys (slot keys, management keys, CA keys) each KEK version protects. */
export async function countWrappedKeysByKekVersion(q: Queryable): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  const keys = await q.db
    .selectFrom('card_keys')
    .select(['kek_version', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('kek_version')
    .execute();
  const mgmt = await q.db
    .selectFrom('cards')
    .select(['mgmt_kek_version as kek_version', (eb) => eb.fn.countAll<number>().as('n')])
    .groupBy('mgmt_kek_version')
    .execute();
  const ca = await q.db
    .selectFrom('issuing_cas')
    .select(['kek_version', (eb) => eb.fn.countAll<number>().as('n')])
    .where('id', 'not in', (eb) => eb.selectFrom('issuing_ca_token_keys').select('ca_id'))
    .groupBy('kek_version')
    .execute();
  for (const r of [...keys, ...mgmt, ...ca])
    counts.set(r.kek_version, (counts.get(r.kek_version) ?? 0) + Number(r.n));
  return counts;
}
