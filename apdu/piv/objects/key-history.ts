import { concatBytes, encodeTlv, findTlv, parseTlvList } from '../../codec/ber-tlv.js';
import type { PivCardState } from '../card-state.js';
import { isRetiredSlot, KEY_REF, RETIRED_SLOT_COUNT } from '../constants.js';
import { OBJECT_TAG, retiredCertificateTag } from './catalogue.js';

/**
 * Key History Object (5FC10C), SP 800-73-4 Part 1 section 3.3.3 and Appendix A Table 19:
 * how many retired key management keys the card holds, with their certificates on the card
 * (keysWithOnCardCerts, tag C1) or only at an off-card URL (keysWithOffCardCerts, C2, + F3 URL).
 *
 * Middleware (OpenSC) reads the retired certificate containers 1..keysWithOnCardCerts, i.e. it
 * assumes the retired keys fill slots 82, 83, ... in order, as SP 800-73-4 asks issuers to do.
 *
 * cardlink's rule, applied whenever a retired slot gets a key or its certificate container is
 * written: keysWithOnCardCerts = the position (1-based, 82 = 1) of the highest retired slot that
 * holds both a key and a certificate; keysWithOffCardCerts = 0 (cardlink knows no off-card
 * certificates, so it never needs the F3 URL). When the slots are filled in order this is
 * exactly SP 800-73-4's count; with gaps it over-counts so that middleware still reaches every
 * key (the empty containers in between answer 6A82).
 */

export const KEY_HISTORY_TAG = {
  KEYS_WITH_ON_CARD_CERTS: 0xc1,
  KEYS_WITH_OFF_CARD_CERTS: 0xc2,
  OFF_CARD_CERT_URL: 0xf3,
  ERROR_DETECTION_CODE: 0xfe,
} as const;

export function encodeKeyHistory(keysWithOnCardCerts: number, keysWithOffCardCerts = 0): Uint8Array {
  for (const n of [keysWithOnCardCerts, keysWithOffCardCerts]) {
    if (!Number.isInteger(n) || n < 0 || n > RETIRED_SLOT_COUNT)
      throw new RangeError('key count out of 0..20');
  }
  return concatBytes([
    encodeTlv(KEY_HISTORY_TAG.KEYS_WITH_ON_CARD_CERTS, Uint8Array.of(keysWithOnCardCerts)),
    encodeTlv(KEY_HISTORY_TAG.KEYS_WITH_OFF_CARD_CERTS, Uint8Array.of(keysWithOffCardCerts)),
    encodeTlv(KEY_HISTORY_TAG.ERROR_DETECTION_CODE, new Uint8Array(0)),
  ]);
}

/** The two counts of a stored Key History value, or undefined when it does not parse. */
export function decodeKeyHistory(value: Uint8Array): { onCard: number; offCard: number } | undefined {
  try {
    const list = parseTlvList(value);
    const on = findTlv(list, KEY_HISTORY_TAG.KEYS_WITH_ON_CARD_CERTS)?.value;
    const off = findTlv(list, KEY_HISTORY_TAG.KEYS_WITH_OFF_CARD_CERTS)?.value;
    return { onCard: on?.length === 1 ? on[0]! : 0, offCard: off?.length === 1 ? off[0]! : 0 };
  } catch {
    return undefined;
  }
}

/**
 * keysWithOnCardCerts by the rule above, from the retired slots that hold both a key and a
 * certificate (other references are ignored).
 */
export function keyHistoryOnCardCount(retiredSlotsWithKeyAndCertificate: Iterable<number>): number {
  let highest = 0;
  for (const slot of retiredSlotsWithKeyAndCertificate)
    if (isRetiredSlot(slot)) highest = Math.max(highest, slot - KEY_REF.RETIRED_FIRST + 1);
  return highest;
}

/**
 * The retired slot a key management key being replaced moves to: the one after the highest
 * retired slot in use (SP 800-73-4 Part 1 section 3.3.3 fills 82, 83, ... in order, and the Key
 * History count above then stays exact), or undefined when 95 is in use (all 20 taken).
 */
export function nextRetiredSlot(retiredSlotsInUse: Iterable<number>): number | undefined {
  let highest = KEY_REF.RETIRED_FIRST - 1;
  for (const slot of retiredSlotsInUse) if (isRetiredSlot(slot)) highest = Math.max(highest, slot);
  return highest < KEY_REF.RETIRED_LAST ? highest + 1 : undefined;
}

/** keysWithOnCardCerts by the rule above. */
export async function countRetiredKeysWithCertificates(
  state: Pick<PivCardState, 'keys' | 'objects'>,
): Promise<number> {
  const filled: number[] = [];
  for (let i = 0; i < RETIRED_SLOT_COUNT; i++) {
    const [info, cert] = await Promise.all([
      state.keys.info(KEY_REF.RETIRED_FIRST + i),
      state.objects.get(retiredCertificateTag(i)),
    ]);
    if (info !== undefined && cert !== undefined && cert.length > 0) filled.push(KEY_REF.RETIRED_FIRST + i);
  }
  return keyHistoryOnCardCount(filled);
}

/**
 * Rewrites the Key History Object when its on-card count differs from the card's retired slots.
 * Leaves it alone when it already agrees (so an issuer-written F3 URL survives), and creates none
 * while there is nothing to report.
 */
export async function refreshKeyHistory(state: Pick<PivCardState, 'keys' | 'objects'>): Promise<void> {
  const onCard = await countRetiredKeysWithCertificates(state);
  const current = await state.objects.get(OBJECT_TAG.KEY_HISTORY);
  if (current === undefined || current.length === 0) {
    if (onCard > 0) await state.objects.put(OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(onCard));
    return;
  }
  const decoded = decodeKeyHistory(current);
  if (decoded?.onCard === onCard && decoded.offCard === 0) return;
  await state.objects.put(OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(onCard));
}
