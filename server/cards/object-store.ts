/**
 * PIV data objects by tag, one row per tag. Values are public (certificates, CHUID, ...) and
 * stored in the clear; a write is fenced and audited with the tag and length.
 */
import type { DataObjectStore } from '../../apdu/piv/index.js';
import { checkDataObjectTag, checkDataObjectValue } from '../../apdu/piv/index.js';
import { getCardObject, putCardObject } from '../storage/index.js';
import type { StoreContext } from './store-context.js';

/** Audit event of a data object write (PUT DATA, Key History refresh). */
export const OBJECT_WRITTEN_EVENT = 'object.written';

export function objectStore(ctx: StoreContext): DataObjectStore {
  return {
    get(tag) {
      return ctx.call(async (unit) => {
        checkDataObjectTag(tag);
        const value = await getCardObject(await unit.reader(), ctx.fence.cardId, tag);
        return value === undefined ? undefined : new Uint8Array(value);
      });
    },
    put(tag, value) {
      return ctx.call(async (unit) => {
        checkDataObjectTag(tag);
        checkDataObjectValue(tag, value);
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
