import { concatBytes } from '../codec/ber-tlv.js';
import { PIV_AID } from './constants.js';

/**
 * The card's Answer To Reset (ISO/IEC 7816-3 section 8.2). Its historical bytes carry the PIV
 * AID in compact-TLV form (category 80, tag F = application identifier, 9 bytes: the RID and
 * PIX without the version), which makes OpenSC classify the card as a plain PIV card (its
 * "PIV_II_HIST" type, no vendor quirks). Vendor ATRs are avoided on purpose: OpenSC maps them
 * to products with quirks (for example `3B 80 80 01 01` disables EC).
 *
 *   3B        TS: direct convention
 *   FB        T0: TA1 TB1 TC1 TD1 present, 11 historical bytes
 *   13        TA1: Fi/Di = 372/4
 *   00 00     TB1 (no programming voltage), TC1 (no extra guard time)
 *   81        TD1: TD2 present, protocol T=1
 *   31        TD2: TA3 TB3 present, protocol T=1
 *   FE 15     TA3: IFSC 254; TB3: BWI 1, CWI 5
 *   80 F9 ..  historical bytes
 *   TCK       XOR of T0 .. last historical byte (present because T=1 is offered)
 */

const ATR_INTERFACE_BYTES = Uint8Array.of(0x3b, 0xfb, 0x13, 0x00, 0x00, 0x81, 0x31, 0xfe, 0x15);
/** Compact-TLV category indicator, then tag F (application identifier) with length 9. */
const HISTORICAL_BYTES = concatBytes([Uint8Array.of(0x80, 0xf9), PIV_AID.subarray(0, 9)]);

/** ISO 7816-3 section 8.2.5: TCK makes the XOR of T0..TCK zero. */
export function atrCheckByte(atrWithoutTck: Uint8Array): number {
  let x = 0;
  for (let i = 1; i < atrWithoutTck.length; i++) x ^= atrWithoutTck[i]!;
  return x;
}

function buildAtr(): Uint8Array {
  const body = concatBytes([ATR_INTERFACE_BYTES, HISTORICAL_BYTES]);
  if ((body[1]! & 0x0f) !== HISTORICAL_BYTES.length)
    throw new Error('ATR T0 does not count the historical bytes');
  return concatBytes([body, Uint8Array.of(atrCheckByte(body))]);
}

/** `3B FB 13 00 00 81 31 FE 15 80 F9 A0 00 00 03 08 00 00 10 00 71`. Copy before changing. */
export const PIV_CARD_ATR: Uint8Array = buildAtr();
