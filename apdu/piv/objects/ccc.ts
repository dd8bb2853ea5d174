import { concatBytes, encodeTlv } from '../../codec/ber-tlv.js';

/**
 * Card Capability Container (5FC107), SP 800-73-4 Part 1 Appendix A Table 8. Kept for old macOS
 * drivers that want one. Its card identifier uses the GSC-IS RID, never the DoD CAC RID
 * A0 00 00 00 79: OpenSC would otherwise take the card for a dual CAC/PIV card.
 */

/** CCC tags (SP 800-73-4 Part 1 Table 8). */
export const CCC_TAG = {
  CARD_IDENTIFIER: 0xf0,
  CAPABILITY_CONTAINER_VERSION: 0xf1,
  CAPABILITY_GRAMMAR_VERSION: 0xf2,
  APPLICATIONS_CARD_URL: 0xf3,
  PKCS15: 0xf4,
  REGISTERED_DATA_MODEL_NUMBER: 0xf5,
  ACCESS_CONTROL_RULE_TABLE: 0xf6,
  CARD_APDUS: 0xf7,
  REDIRECTION_TAG: 0xfa,
  CAPABILITY_TUPLES: 0xfb,
  STATUS_TUPLES: 0xfc,
  NEXT_CCC: 0xfd,
  ERROR_DETECTION_CODE: 0xfe,
} as const;

/** GSC-IS RID that starts the card identifier (SP 800-73-4 Part 1 Table 8, tag F0). */
export const GSC_RID = Uint8Array.of(0xa0, 0x00, 0x00, 0x01, 0x16);
/** Manufacturer id "not registered" and card type 02 (GSC-IS 2.1 card type: Java card, the usual value). */
const MANUFACTURER_ID = 0xff;
const CARD_TYPE = 0x02;
/** Bytes of the card-specific part of the card identifier. */
export const CCC_CARD_ID_BYTES = 14;
/** Versions 2.1 (0x21) of the container and grammar; data model 0x10 is PIV (SP 800-73-4 Table 8). */
const VERSION_21 = 0x21;
const PIV_DATA_MODEL = 0x10;

/** A CCC whose card identifier ends in the first 14 bytes of `cardId` (the GUID). */
export function encodeCcc(cardId: Uint8Array): Uint8Array {
  if (cardId.length < CCC_CARD_ID_BYTES) throw new RangeError('CCC card id needs 14 bytes');
  const empty = new Uint8Array(0);
  return concatBytes([
    encodeTlv(
      CCC_TAG.CARD_IDENTIFIER,
      concatBytes([
        GSC_RID,
        Uint8Array.of(MANUFACTURER_ID, CARD_TYPE),
        cardId.subarray(0, CCC_CARD_ID_BYTES),
      ]),
    ),
    encodeTlv(CCC_TAG.CAPABILITY_CONTAINER_VERSION, Uint8Array.of(VERSION_21)),
    encodeTlv(CCC_TAG.CAPABILITY_GRAMMAR_VERSION, Uint8Array.of(VERSION_21)),
    encodeTlv(CCC_TAG.APPLICATIONS_CARD_URL, empty),
    encodeTlv(CCC_TAG.PKCS15, Uint8Array.of(0x00)),
    encodeTlv(CCC_TAG.REGISTERED_DATA_MODEL_NUMBER, Uint8Array.of(PIV_DATA_MODEL)),
    encodeTlv(CCC_TAG.ACCESS_CONTROL_RULE_TABLE, empty),
    encodeTlv(CCC_TAG.CARD_APDUS, empty),
    encodeTlv(CCC_TAG.REDIRECTION_TAG, empty),
    encodeTlv(CCC_TAG.CAPABILITY_TUPLES, empty),
    encodeTlv(CCC_TAG.STATUS_TUPLES, empty),
    encodeTlv(CCC_TAG.NEXT_CCC, empty),
    encodeTlv(CCC_TAG.ERROR_DETECTION_CODE, empty),
  ]);
}
