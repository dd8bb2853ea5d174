import { ApduError, SW } from '../codec/index.js';
import { KEY_REF } from './constants.js';
import type { ReferenceKind } from './card-state.js';

/**
 * PIN and PUK as they travel in VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER
 * (SP 800-73-4 Part 2 section 2.4.3): exactly 8 bytes, the value (6 to 8 bytes) followed by FF
 * padding. Any byte value other than FF is allowed in the value (as YubiKeys do; SP 800-73-4's
 * "digits only" rule for the PIN is left to the issuer's PIN policy).
 */

/** Length of a PIN/PUK field on the wire. */
export const REFERENCE_FIELD_BYTES = 8;
/** Shortest PIN/PUK value without padding. */
export const REFERENCE_MIN_BYTES = 6;
export const REFERENCE_PAD = 0xff;

/**
 * The value inside one 8-byte field, padding removed. `6A80` when the field is not 8 bytes,
 * the value is shorter than 6 bytes, or a non-FF byte follows the padding.
 */
export function parseReferenceField(field: Uint8Array): Uint8Array {
  if (field.length !== REFERENCE_FIELD_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK field must be 8 bytes', { length: field.length });
  }
  let end = field.indexOf(REFERENCE_PAD);
  if (end < 0) end = REFERENCE_FIELD_BYTES;
  for (let i = end; i < REFERENCE_FIELD_BYTES; i++) {
    if (field[i] !== REFERENCE_PAD) throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK padding is not all FF');
  }
  if (end < REFERENCE_MIN_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK shorter than 6 bytes', { length: end });
  }
  return field.slice(0, end);
}

/** Pads a 6..8 byte value to the 8-byte wire field (for hosts and tests). */
export function padReferenceValue(value: Uint8Array): Uint8Array {
  if (value.length < REFERENCE_MIN_BYTES || value.length > REFERENCE_FIELD_BYTES) {
    throw new RangeError('PIN/PUK must be 6 to 8 bytes');
  }
  const out = new Uint8Array(REFERENCE_FIELD_BYTES).fill(REFERENCE_PAD);
  out.set(value);
  return out;
}

/** P2 of VERIFY / CHANGE REFERENCE DATA: 80 PIN, 81 PUK; anything else (00 global PIN, ...) 6A88. */
export function referenceKindOf(p2: number): ReferenceKind {
  if (p2 === KEY_REF.PIN) return 'pin';
  if (p2 === KEY_REF.PUK) return 'puk';
  throw new ApduError(SW.REFERENCE_NOT_FOUND, 'key reference is not the PIN or PUK', { p2 });
}
