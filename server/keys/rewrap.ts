/**
 * KEK rotation over the database (`cardlink server rotate-kek`):
 *
 *   1. `provider.rotate()`                  new KEK version, used for every new wrap from now on
 *   2. `rewrapAll(storage, provider)`       every data key still under an older version is
 *                                           unwrapped and wrapped again under the current one
 *   3. `retireKekVersion(storage, provider, old)`  refuses while any row still uses `old`
 *
 * Step 2 never decrypts a private key or management key: sealed blobs stay byte for byte, only
 * their 32-byte data keys pass through this process's memory (and are zeroed after use). Each
 * row is updated only if it still holds the same key and KEK version as when it was read, so a key
 * replaced by a session meanwhile is left alone (it is already wrapped under the new KEK). The
 * crypto runs outside transactions; each batch commits in one.
 */
import type { Storage, Queryable } from '../storage/storage.js';
import { KeyProviderError, type KekProvider } from './kek-provider.js';
import { pinVerifierKeyVersion } from './pin-verifier.js';
import { rewrapSealed } from './sealing.js';
import { MANAGEMENT_KEY_SLOT, type SealedRecord } from '../storage/cards.js';

/** Rows read and rewrapped per transaction. */
export const REWRAP_BATCH_SIZE = 100;

export interface RewrapResult {
  /** Data keys now under the current KEK version. */
  readonly rewrapped: number;
  /** Rows changed by someone else between read and update (already under a newer wrap). */
  readonly skipped: number;
}

export async function rewrapAll(
  storage: Storage,
  provider: KekProvider,
  options: { batchSize?: number } = {},
): Promise<RewrapResult> {
  const batchSize = options.batchSize ?? REWRAP_BATCH_SIZE;
  const target = provider.currentVersion;
  let rewrapped = 0;
  let skipped = 0;

  // Slot keys, in (card_id, slot) order.
  let after: { cardId: string; slot: number } | undefined;
  for (;;) {
    const rows = await storage.db
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
      .where('card_keys.kek_version', '!=', target)
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
      .limit(batchSize)
      .execute();
    if (rows.length === 0) break;
    const updates: { cardId: string; slot: number; old: SealedRecord; next: SealedRecord }[] = [];
    for (const row of rows) {
      const old: SealedRecord = {
        sealed: row.sealed_private_key,
        wrappedDataKey: row.wrapped_data_key,
        kekVersion: row.kek_version,
        keyVersion: row.key_version,
      };
      const next = await rewrapSealed(provider, old, {
        tenantId: row.tenant_id,
        cardId: row.card_id,
        slot: row.slot,
      });
      updates.push({ cardId: row.card_id, slot: row.slot, old, next });
    }
    const changed = await storage.transaction(async (tx) => {
      let n = 0;
      for (const u of updates) {
        const result = await tx.db
          .updateTable('card_keys')
          .set({ wrapped_data_key: u.next.wrappedDataKey, kek_version: u.next.kekVersion })
          .where('card_id', '=', u.cardId)
          .where('slot', '=', u.slot)
          .where('key_version', '=', u.old.keyVersion)
          .where('kek_version', '=', u.old.kekVersion)
          .executeTakeFirst();
        n += Number(result.numUpdatedRows);
      }
      return n;
    });
    rewrapped += changed;
    skipped += updates.length - changed;
    const last = rows[rows.length - 1]!;
    after = { cardId: last.card_id, slot: last.slot };
  }

  // Management keys, in card id order.
  let afterCard: string | undefined;
  for (;;) {
    const rows = await storage.db
      .selectFrom('cards')
      .select(['id', 'tenant_id', 'mgmt_sealed', 'mgmt_wrapped_key', 'mgmt_kek_version', 'mgmt_key_version'])
      .where('mgmt_kek_version', '!=', target)
      .$if(afterCard !== undefined, (qb) => qb.where('id', '>', afterCard!))
      .orderBy('id')
      .limit(batchSize)
      .execute();
    if (rows.length === 0) break;
    const updates: { cardId: string; old: SealedRecord; next: SealedRecord }[] = [];
    for (const row of rows) {
      const old: SealedRecord = {
        sealed: row.mgmt_sealed,
        wrappedDataKey: row.mgmt_wrapped_key,
        kekVersion: row.mgmt_kek_version,
        keyVersion: row.mgmt_key_version,
      };
      const next = await rewrapSealed(provider, old, {
        tenantId: row.tenant_id,
        cardId: row.id,
        slot: MANAGEMENT_KEY_SLOT,
      });
      updates.push({ cardId: row.id, old, next });
    }
    const changed = await storage.transaction(async (tx) => {
      let n = 0;
      for (const u of updates) {
        const result = await tx.db
          .updateTable('cards')
          .set({ mgmt_wrapped_key: u.next.wrappedDataKey, mgmt_kek_version: u.next.kekVersion })
          .where('id', '=', u.cardId)
          .where('mgmt_key_version', '=', u.old.keyVersion)
          .where('mgmt_kek_version', '=', u.old.kekVersion)
          .executeTakeFirst();
        n += Number(result.numUpdatedRows);
      }
      return n;
    });
    rewrapped += changed;
    skipped += updates.length - changed;
    afterCard = rows[rows.length - 1]!.id;
  }
  return { rewrapped, skipped };
}

/** How many wrapped data keys (slot keys and management keys) each KEK version still protects. */
export async function kekVersionsInUse(q: Queryable): Promise<Map<number, number>> {
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
  for (const r of [...keys, ...mgmt])
    counts.set(r.kek_version, (counts.get(r.kek_version) ?? 0) + Number(r.n));
  return counts;
}

/** Retires a KEK version after checking that no wrapped key in the database still needs it. */
export async function retireKekVersion(
  storage: Storage,
  provider: KekProvider,
  version: number,
): Promise<void> {
  const inUse = (await kekVersionsInUse(storage)).get(version) ?? 0;
  if (inUse > 0)
    throw new KeyProviderError('KEK version still wraps data keys: run rewrapAll first', { version, inUse });
  await provider.retire(version);
}

/** How many PIN and PUK verifiers each PIN key version still checks. */
export async function pinKeyVersionsInUse(
  q: Queryable,
  batchSize = REWRAP_BATCH_SIZE,
): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  let after: string | undefined;
  for (;;) {
    const rows = await q.db
      .selectFrom('cards')
      .select(['id', 'pin_verifier', 'puk_verifier'])
      .$if(after !== undefined, (qb) => qb.where('id', '>', after!))
      .orderBy('id')
      .limit(batchSize)
      .execute();
    if (rows.length === 0) break;
    for (const r of rows) {
      for (const v of [r.pin_verifier, r.puk_verifier]) {
        const version = pinVerifierKeyVersion(v);
        counts.set(version, (counts.get(version) ?? 0) + 1);
      }
    }
    after = rows[rows.length - 1]!.id;
  }
  return counts;
}

/**
 * Retires a PIN key version once no verifier uses it. Verifiers move to the current version when
 * their PIN or PUK is next verified or set; cards that never see one keep the old version alive.
 */
export async function retirePinKeyVersion(
  storage: Storage,
  provider: KekProvider,
  version: number,
): Promise<void> {
  const inUse = (await pinKeyVersionsInUse(storage)).get(version) ?? 0;
  if (inUse > 0) throw new KeyProviderError('PIN key version still checks verifiers', { version, inUse });
  await provider.retirePinKey(version);
}
