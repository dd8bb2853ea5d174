import { CardlinkError } from '../../../protocol/errors.js';

/**
 * Why a card-state or PIV crypto operation refused its input. Stable strings: the PIV card maps
 * them to status words in `status-mapping.ts` (for instance `INPUT_LENGTH` -> 6A80, `SLOT_EMPTY`
 * -> 6A88 as SP 800-73-4 Part 2 section 3.2.4 asks), tests match them.
 */
export type CardStateErrorReason =
  /** Input of the wrong length (RSA block, ECDSA digest, cipher block, EC point, PIN/PUK). */
  | 'INPUT_LENGTH'
  /** Input of the right length but outside the allowed values (RSA block >= modulus). */
  | 'INPUT_RANGE'
  /** A peer EC point that is not an uncompressed point on the slot's curve. */
  | 'EC_POINT_INVALID'
  /** The operation does not fit the key (ECDH with an RSA key, imported key of another algorithm). */
  | 'KEY_TYPE_MISMATCH'
  /** A key type, size or curve cardlink does not support. */
  | 'UNSUPPORTED_ALGORITHM'
  /** Key material of the wrong length, out of range, inconsistent or weak. */
  | 'KEY_INVALID'
  /** A slot number that holds no key in PIV (not 9A, 9C, 9D, 9E, 82..95). */
  | 'SLOT_INVALID'
  /** The slot holds no key (`6A88`, SW_NO_KEY_IN_SLOT). */
  | 'SLOT_EMPTY'
  /** A data object tag outside 1..3 bytes, or a value over the store's size limit. */
  | 'OBJECT_INVALID'
  /** A PIN or PUK whose length is outside the allowed range. */
  | 'REFERENCE_DATA_LENGTH'
  /** A new PIN the card's PIN policy refuses (`pin-policy.ts`; context `refusal` says which rule). */
  | 'PIN_POLICY';

/**
 * The error every PIV card-state store and crypto helper throws for refused input. The message and
 * context never carry key material, PINs or payloads: only lengths, slot numbers and algorithms.
 */
export class CardStateError extends CardlinkError {
  readonly reason: CardStateErrorReason;

  constructor(
    reason: CardStateErrorReason,
    message: string,
    context: Record<string, string | number | boolean> = {},
  ) {
    super('ERR_CARD_STATE', message, { ...context, reason });
    this.name = 'CardStateError';
    this.reason = reason;
  }
}
