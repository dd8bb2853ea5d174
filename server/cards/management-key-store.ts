/**
 * The card management key (key reference 9B), sealed in the card's row like a private key (AAD
 * slot 9B). The first cipher operation of a session unseals it into the session cache; `replace`
 * seals the new key in a fenced transaction with its audit entry, and the cache takes the new key
 * once that commits.
 */
import type { ManagementKeyAlgorithm, ManagementKeyStore } from '../../apdu/piv/index.js';
import {
  decryptBlocks,
  encryptBlocks,
  MANAGEMENT_KEY_CIPHERS,
  validateManagementKey,
} from '../../apdu/piv/crypto/index.js';
import { AUDIT_EVENTS } from '../audit/audit-log.js';
import { SealedKeyInvalidError } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import { getManagementKey, MANAGEMENT_KEY_SLOT, setManagementKey } from '../storage/index.js';
import type { CommandUnit } from './command-unit.js';
import type { CachedManagementKey } from './session-cache.js';
import { keyLocation, type StoreContext } from './store-context.js';

export function managementKeyStore(ctx: StoreContext): ManagementKeyStore {
  return {
    algorithm() {
      return ctx.call(async (unit) => (await managementKey(ctx, unit, false)).algorithm);
    },
    encryptBlock(block) {
      return ctx.call(async (unit) => {
        const m = await managementKey(ctx, unit, true);
        return encryptBlocks(m.algorithm, m.key!, block);
      });
    },
    decryptBlock(block) {
      return ctx.call(async (unit) => {
        const m = await managementKey(ctx, unit, true);
        return decryptBlocks(m.algorithm, m.key!, block);
      });
    },
    replace(algorithm, key) {
      return ctx.call(async (unit) => {
        validateManagementKey(algorithm, key); // refused before anything is written
        const copy = Buffer.from(key);
        await unit.write(async (card) => {
          ctx.cache.invalidateManagementKey();
          const sealed = await sealSecret(ctx.kek, copy, keyLocation(ctx, MANAGEMENT_KEY_SLOT), card.version);
          await setManagementKey(card, algorithm, sealed);
          await ctx.audit(unit, AUDIT_EVENTS.managementKeyChanged, { algorithm });
          unit.afterCommit(() => ctx.cache.putManagementKey({ algorithm, key: copy }, ctx.cache.generation));
        });
      });
    },
  };
}

/** The management key's algorithm, and with `unseal` its bytes, from the cache or the database. */
async function managementKey(
  ctx: StoreContext,
  unit: CommandUnit,
  unseal: boolean,
): Promise<CachedManagementKey> {
  const cached = ctx.cache.managementKey();
  if (cached && (cached.key || !unseal)) return cached;
  const generation = ctx.cache.generation;
  const row = await getManagementKey(await unit.reader(), ctx.fence.cardId);
  const algorithm = row.algorithm as ManagementKeyAlgorithm;
  if (!Object.hasOwn(MANAGEMENT_KEY_CIPHERS, algorithm)) {
    throw new SealedKeyInvalidError('card row holds an unknown management key algorithm');
  }
  if (!unseal) {
    return ctx.cache.putManagementKey({ algorithm }, generation);
  }
  const key = await unsealSecret(ctx.kek, row.key, keyLocation(ctx, MANAGEMENT_KEY_SLOT));
  try {
    validateManagementKey(algorithm, key);
  } catch {
    key.fill(0);
    throw new SealedKeyInvalidError('sealed management key does not fit its algorithm');
  }
  // When an invalidation raced the read, the value is not cached but still serves this one call.
  return ctx.cache.putManagementKey({ algorithm, key }, generation);
}
