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
 * crypto runs outside transactions; each batch commits in one. The SQL is
 * server/storage/wrapped-keys.ts.
 */
import { listPinHistoryVerifiers, type PinHistoryPlace } from '../storage/pin-history.js';
import { listReferenceVerifiers } from '../storage/reference-data.js';
import type { Storage, Queryable } from '../storage/storage.js';
import {
  countWrappedKeysByKekVersion,
  listKeysNotUnderKek,
  storeRewraps,
  WRAPPED_KEY_KINDS,
  type Rewrap,
  type WrappedKeyPlace,
} from '../storage/wrapped-keys.js';
import { KeyProviderError, type KekProvider } from './kek-provider.js';
import { pinVerifierKeyVersion } from './pin-verifier.js';
import { rewrapSealed } from './sealing.js';

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
  // Slot keys, then management keys; each in (card id, slot) order, one batch per transaction.
  for (const kind of WRAPPED_KEY_KINDS) {
    let after: WrappedKeyPlace | undefined;
    for (;;) {
      const rows = await listKeysNotUnderKek(storage, kind, target, batchSize, after);
      if (rows.length === 0) break;
      const rewraps: Rewrap[] = [];
      for (const row of rows) {
        const next = await rewrapSealed(provider, row.key, {
          tenantId: row.tenantId,
          cardId: row.cardId,
          slot: row.slot,
        });
        rewraps.push({
          cardId: row.cardId,
          slot: row.slot,
          old: row.key,
          wrappedDataKey: next.wrappedDataKey,
          kekVersion: next.kekVersion,
        });
      }
      const changed = await storage.transaction((tx) => storeRewraps(tx, kind, rewraps));
      rewrapped += changed;
      skipped += rewraps.length - changed;
      after = rows[rows.length - 1]!;
    }
  }
  return { rewrapped, skipped };
}

/** How many wrapped data keys (slot keys and management keys) each KEK version still protects. */
export function kekVersionsInUse(q: Queryable): Promise<Map<number, number>> {
  return countWrappedKeysByKekVersion(q);
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

/**
 * How many verifiers each PIN key version still checks: every card's PIN and PUK verifier and
 * every verifier in the PIN history (`pin_history`). The history counts as much as the current
 * ones: a history verifier is an HMAC of a PIN nobody presents any more, so it can never move to a
 * newer PIN key (unlike the data keys rewrapAll moves), and with its key retired the profile's
 * `pin.history` could no longer refuse that PIN.
 */
export async function pinKeyVersionsInUse(
  q: Queryable,
  batchSize = REWRAP_BATCH_SIZE,
): Promise<Map<number, number>> {
  const counts = new Map<number, number>();
  const count = (verifier: Uint8Array) => {
    const version = pinVerifierKeyVersion(verifier);
    counts.set(version, (counts.get(version) ?? 0) + 1);
  };
  let afterCard: string | undefined;
  for (;;) {
    const rows = await listReferenceVerifiers(q, batchSize, afterCard);
    if (rows.length === 0) break;
    for (const r of rows) {
      count(r.pin);
      count(r.puk);
    }
    afterCard = rows[rows.length - 1]!.cardId;
  }
  let afterEntry: PinHistoryPlace | undefined;
  for (;;) {
    const rows = await listPinHistoryVerifiers(q, batchSize, afterEntry);
    if (rows.length === 0) break;
    for (const r of rows) count(r.verifier);
    afterEntry = rows[rows.length - 1]!;
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
