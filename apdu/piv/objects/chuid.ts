import { concatBytes, encodeTlv } from '../../codec/ber-tlv.js';
import { encodeFascN, NON_FEDERAL_FASCN, type FascN } from './fasc-n.js';

/**
 * Card Holder Unique Identifier (container 5FC102), SP 800-73-4 Part 1 Appendix A Table 9.
 * cardlink writes FASC-N, GUID, expiration date, an empty issuer signature and an empty error
 * detection code; the optional organizational identifier, DUNS and cardholder UUID are left out.
 * Windows' and macOS' PIV drivers need a CHUID to accept a card; they key their caches on the GUID.
 */

/** CHUID tags (SP 800-73-4 Part 1 Table 9). */
export const CHUID_TAG = {
  FASCN: 0x30,
  GUID: 0x34,
  EXPIRATION_DATE: 0x35,
  /** Issuer asymmetric signature: mandatory tag; empty means "not signed" (no content signing key). */
  ISSUER_SIGNATURE: 0x3e,
  ERROR_DETECTION_CODE: 0xfe,
} as const;

/** GUID length (SP 800-73-4 Part 1 Table 9, tag 34). */
export const GUID_BYTES = 16;

export interface ChuidOptions {
  readonly guid: Uint8Array;
  /** Printed as YYYYMMDD (UTC). */
  readonly expires: Date;
  /** Default NON_FEDERAL_FASCN (agency code 9999). */
  readonly fascn?: FascN;
}

export function encodeChuid(options: ChuidOptions): Uint8Array {
  if (options.guid.length !== GUID_BYTES) throw new RangeError('CHUID GUID must be 16 bytes');
  return concatBytes([
    encodeTlv(CHUID_TAG.FASCN, encodeFascN(options.fascn ?? NON_FEDERAL_FASCN)),
    encodeTlv(CHUID_TAG.GUID, options.guid),
    encodeTlv(CHUID_TAG.EXPIRATION_DATE, expirationDate(options.expires)),
    encodeTlv(CHUID_TAG.ISSUER_SIGNATURE, new Uint8Array(0)),
    encodeTlv(CHUID_TAG.ERROR_DETECTION_CODE, new Uint8Array(0)),
  ]);
}

/** YYYYMMDD in ASCII (SP 800-73-4 Part 1 Table 9, tag 35). */
function expirationDate(date: Date): Uint8Array {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new RangeError('CHUID expiration date is not a date');
  const text =
    String(date.getUTCFullYear()).padStart(4, '0') +
    String(date.getUTCMonth() + 1).padStart(2, '0') +
    String(date.getUTCDate()).padStart(2, '0');
  if (text.length !== 8) throw new RangeError('CHUID expiration year out of range');
  return new TextEncoder().encode(text);
}
