/**
 * Private keys by slot, sealed in the database (`server/keys/sealing.ts`).
 *
 * - generate / importKey: the key pair is made (or parsed) before any transaction opens; then one
 *   fenced transaction seals the PKCS#8 key (AES-256-GCM under a fresh data key, AAD = tenant,
 *   card, slot and the card version this transaction gives the card), stores it with the public
 *   key and appends the audit entry. The session caches the prepared signer once it commits.
 * - sign / deriveSharedSecret: the first use in a session unseals the key and parses it into a
 *   prepared signer; later uses take it from the session cache. Every operation queues an audit
 *   entry (slot, algorithm, SHA-256 and length of the input, never the input) in the command's
 *   unit, which commits it, fenced, before the result leaves the unit: no signature without its
 *   audit entry, and none for a session that was taken over. The entries of operations that write
 *   nothing else commit in batches with their command records (record-batch.ts).
 */
import { createHash, createPrivateKey, type KeyObject } from 'node:crypto';
import type { KeyAlgorithm, KeyOrigin, KeySlotStore, PinPolicy, SlotKeyInfo } from '../../apdu/piv/index.js';
import {
  checkKeyAlgorithm,
  checkKeySlot,
  checkPinPolicy,
  copySlotKeyInfo,
  importedPrivateKey,
  slotKeyInfo,
  KEY_ALGORITHMS,
  KEY_ORIGINS,
  PIN_POLICIES,
} from '../../apdu/piv/index.js';
import {
  CardStateError,
  keyAlgorithmOf,
  generateKeyPair,
  spkiOf,
  deriveSharedSecret,
  prepareSigner,
} from '../../apdu/piv/crypto/index.js';
import { ARCHIVED_SLOT, prepareArchive, publicKeySha256, storeArchive } from '../archival/key-archive.js';
import { loadRecoveryCertificate } from '../archival/recovery-certificate.js';
import { AUDIT_EVENTS, privateKeyOperationDetails } from '../audit/audit-log.js';
import { SealedKeyInvalidError } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import { detachArchivedKeys, findCardKey, putCardKey, type CardKeyRecord } from '../storage/index.js';
import type { CommandUnit } from './command-unit.js';
import type { CachedPrivateKey } from './session-cache.js';
import { keyLocation, slotName, type StoreContext } from './store-context.js';

/** Touch policy stored with every key: cardlink has no touch sensor (Yubico policy "never"). */
export const STORED_TOUCH_POLICY = 'never';

export function keyStore(ctx: StoreContext): KeySlotStore {
  return {
    info(slot) {
      return ctx.call(async (unit) => {
        checkKeySlot(slot);
        const info = await slotInfo(ctx, unit, slot);
        return info ? copySlotKeyInfo(info) : undefined;
      });
    },

    generate(slot, algorithm, pinPolicy) {
      return ctx.call(async (unit) => {
        checkKeySlot(slot);
        checkKeyAlgorithm(algorithm);
        checkPinPolicy(pinPolicy);
        const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
        return storeKey(
          ctx,
          unit,
          slot,
          privateKey,
          slotKeyInfo(algorithm, publicKeySpki, pinPolicy, 'generated'),
        );
      });
    },

    importKey(slot, algorithm, pkcs8, pinPolicy) {
      return ctx.call(async (unit) => {
        checkKeySlot(slot);
        checkKeyAlgorithm(algorithm);
        checkPinPolicy(pinPolicy);
        const privateKey = importedPrivateKey(slot, algorithm, pkcs8);
        return storeKey(
          ctx,
          unit,
          slot,
          privateKey,
          slotKeyInfo(algorithm, spkiOf(privateKey), pinPolicy, 'imported'),
        );
      });
    },

    sign(slot, input) {
      return ctx.call(async (unit) => {
        checkKeySlot(slot);
        const key = await privateKeyOf(ctx, unit, slot);
        const result = key.signer.sign(input); // refuses bad input before anything is written
        await ctx.audit(
          unit,
          AUDIT_EVENTS.keyUsed,
          privateKeyOperationDetails(slot, key.algorithm, input, { operation: 'sign' }),
          { lazy: true },
        );
        return new Uint8Array(result);
      });
    },

    deriveSharedSecret(slot, peerPoint) {
      return ctx.call(async (unit) => {
        checkKeySlot(slot);
        const key = await privateKeyOf(ctx, unit, slot);
        const secret = deriveSharedSecret(key.privateKey, peerPoint);
        await ctx.audit(
          unit,
          AUDIT_EVENTS.keyUsed,
          privateKeyOperationDetails(slot, key.algorithm, peerPoint, { operation: 'ecdh' }),
          { lazy: true },
        );
        return new Uint8Array(secret);
      });
    },
  };
}

/** Seals and stores the key in one fenced transaction with its audit entry. */
async function storeKey(
  ctx: StoreContext,
  unit: CommandUnit,
  slot: number,
  privateKey: KeyObject,
  info: SlotKeyInfo,
): Promise<SlotKeyInfo> {
  const cached: CachedPrivateKey = {
    algorithm: info.algorithm,
    privateKey,
    signer: prepareSigner(privateKey),
  };
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  try {
    // Before anything is written: an unusable recovery certificate refuses the key (ERR_KEY_ARCHIVAL).
    const recovery =
      slot === ARCHIVED_SLOT && ctx.keyArchival.required
        ? await loadRecoveryCertificate(ctx.keyArchival.recoveryCertificate)
        : undefined;
    const archive = recovery
      ? prepareArchive(recovery, { slot, pkcs8, publicKeySpki: info.publicKeySpki })
      : undefined;
    await unit.write(async (card) => {
      ctx.cache.invalidateSlot(slot);
      if (slot === ARCHIVED_SLOT)
        await detachArchivedKeys(card.tx, card.cardId, slot, publicKeySha256(info.publicKeySpki));
      if (archive) await storeArchive(card.tx, card.cardId, archive);
      const sealed = await sealSecret(ctx.kek, pkcs8, keyLocation(ctx, slot), card.version);
      await putCardKey(card, {
        slot,
        algorithm: info.algorithm,
        publicKeySpki: info.publicKeySpki,
        key: sealed,
        pinPolicy: info.pinPolicy,
        touchPolicy: STORED_TOUCH_POLICY,
        origin: info.origin,
      });
      await ctx.audit(
        unit,
        info.origin === 'generated' ? AUDIT_EVENTS.keyGenerated : AUDIT_EVENTS.keyImported,
        {
          slot: slotName(slot),
          algorithm: info.algorithm,
          pinPolicy: info.pinPolicy,
          keyVersion: card.version,
          publicKeySha256: createHash('sha256').update(info.publicKeySpki).digest('hex'),
          ...(recovery ? { keyArchivedFor: recovery.sha256 } : {}),
        },
      );
      unit.afterCommit(() => {
        const generation = ctx.cache.generation;
        ctx.cache.putInfo(slot, info, generation);
        ctx.cache.putPrivateKey(slot, cached, generation);
      });
    });
  } finally {
    pkcs8.fill(0);
  }
  return copySlotKeyInfo(info);
}

async function slotInfo(
  ctx: StoreContext,
  unit: CommandUnit,
  slot: number,
): Promise<SlotKeyInfo | undefined> {
  const cached = ctx.cache.info(slot);
  if (cached !== undefined) return cached ?? undefined;
  const generation = ctx.cache.generation;
  const row = await findCardKey(await unit.reader(), ctx.fence.cardId, slot);
  const info = row ? infoOf(row) : null;
  ctx.cache.putInfo(slot, info, generation);
  return info ?? undefined;
}

/** The slot's key from the session cache, or unsealed from the database (then cached). */
async function privateKeyOf(ctx: StoreContext, unit: CommandUnit, slot: number): Promise<CachedPrivateKey> {
  const cached = ctx.cache.privateKey(slot);
  if (cached) return cached;
  const generation = ctx.cache.generation;
  const row = await findCardKey(await unit.reader(), ctx.fence.cardId, slot);
  if (!row) throw new CardStateError('SLOT_EMPTY', 'no key in slot', { slot });
  const info = infoOf(row);
  const pkcs8 = await unsealSecret(ctx.kek, row.key, keyLocation(ctx, slot));
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
  } catch {
    throw new SealedKeyInvalidError('sealed key is not a PKCS#8 private key', { slot });
  } finally {
    pkcs8.fill(0);
  }
  if (keyAlgorithmOf(privateKey) !== info.algorithm) {
    throw new SealedKeyInvalidError('sealed key does not match its slot algorithm', { slot });
  }
  const key: CachedPrivateKey = { algorithm: info.algorithm, privateKey, signer: prepareSigner(privateKey) };
  ctx.cache.putPrivateKey(slot, key, generation);
  return key;
}

/** Slot metadata from a row, refusing values this code never writes. */
function infoOf(row: CardKeyRecord): SlotKeyInfo {
  const algorithm = row.algorithm as KeyAlgorithm;
  const pinPolicy = row.pinPolicy as PinPolicy;
  const origin = row.origin as KeyOrigin;
  if (
    !KEY_ALGORITHMS.includes(algorithm) ||
    !PIN_POLICIES.includes(pinPolicy) ||
    !KEY_ORIGINS.includes(origin)
  ) {
    throw new SealedKeyInvalidError('key row holds an unknown algorithm, policy or origin', {
      slot: row.slot,
    });
  }
  return slotKeyInfo(algorithm, row.publicKeySpki, pinPolicy, origin);
}
