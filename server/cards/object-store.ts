/**
 * PIV data objects by tag, one row per tag. Values are public (certificates, CHUID, ...) and
 * stored in the clear; a write is fenced and audited with the tag and length.
 */
import type { DataObjectStore } from '../../apdu/piv/card-state.js';
import { CardStateError } from '../../apdu/piv/crypto/errors.js';
import { getCardObject, MAX_CARD_OBJECT_BYTES, putCardObject } from '../storage/index.js';
import type { StoreContext } from './store-context.js';

/** Audit event of a data object write (PUT DATA, Key History refresh). */
export const OBJECT_WRITTEN_EVENT = 'object.written';

export function objectStore(ctx: StoreContext): DataObjectStore {
  return {
    get(tag) {
      return ctx.call(async (unit) => {
        checkTag(tag);
        const value = await getCardObject(await unit.reader(), ctx.fence.cardId, tag);
        return value === undefined ? undefined : new Uint8Array(value);
      });
    },
    put(tag, value) {
      return ctx.call(async (unit) => {
        checkTag(tag);
        if (!(value instanceof Uint8Array) || value.length > MAX_CARD_OBJECT_BYTES) {
          throw new CardStateError('OBJECT_INVALID', 'data object too large', {
            tag,
            length: value instanceof Uint8Array ? value.length : -1,
            limit: MAX_CARD_OBJECT_BYTES,
          });
        }
        await unit.write(async (card) => {
          await putCardObject(card, tag, value);
          await ctx.audit(unit, OBJECT_WRITTEN_EVENT, {
            tag: `0x${tag.toString(16)}`,
            length: value.length,
          });
        });
      });
    },
  };
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag <= 0 || tag > 0xffffff) {
    throw new CardStateError('OBJECT_INVALID', 'data object tag must be 1 to 3 bytes', {
      tag: Number.isFinite(tag) ? tag : -1,
    });
  }
}
