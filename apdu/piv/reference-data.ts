import { ApduError, SW } from '../codec/index.js';
import { KEY_REF } from './constants.js';
import type { ReferenceKind } from './card-state.js';
import { CardStateError } from './crypto/errors.js';

/**
 * The PIN and PUK rules, defined once for the card (wire fields), every card state (the memory
 * state, the server's persistent store) and the tools that set a PIN (admin profiles, local-card).
 *
 * PIN and PUK travel in VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER (SP 800-73-4 Part 2
 * section 2.4.3) as exactly 8 bytes: the value (6 to 8 bytes) followed by FF padding. Any byte
 * value other than FF is allowed in the value (as YubiKeys do; SP 800-73-4's "digits only" rule
 * for the PIN is left to the issuer's PIN policy). Stores keep the value without its padding.
 */

/** Shortest PIN/PUK value, without padding (SP 800-73-4 Part 2 section 2.4.3). */
export const REFERENCE_DATA_MIN_BYTES = 6;
/** Longest PIN/PUK value, and the length of the padded field on the wire (SP 800-73-4 Part 2 section 2.4.3). */
export const REFERENCE_DATA_MAX_BYTES = 8;
/** The pad byte; trailing pad bytes are not part of the value (SP 800-73-4 Part 2 section 2.4.3). */
export const REFERENCE_DATA_PAD_BYTE = 0xff;
/** Tries before the PIN or PUK blocks when nothing else is configured (the YubiKey default too). */
export const DEFAULT_RETRY_LIMIT = 3;
/** Largest retry limit: the counter travels in one byte (Yubico SET PIN RETRIES INS FA, GET METADATA tag 06). */
export const MAX_RETRY_LIMIT = 255;

// --- On the wire (the card) --------------------------------------------------------------------

/**
 * The value inside one 8-byte field, padding removed. `6A80` when the field is not 8 bytes,
 * the value is shorter than 6 bytes, or a non-FF byte follows the padding.
 */
export function parseReferenceField(field: Uint8Array): Uint8Array {
  if (field.length !== REFERENCE_DATA_MAX_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK field must be 8 bytes', { length: field.length });
  }
  let end = field.indexOf(REFERENCE_DATA_PAD_BYTE);
  if (end < 0) end = REFERENCE_DATA_MAX_BYTES;
  for (let i = end; i < REFERENCE_DATA_MAX_BYTES; i++) {
    if (field[i] !== REFERENCE_DATA_PAD_BYTE) {
      throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK padding is not all FF');
    }
  }
  if (end < REFERENCE_DATA_MIN_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'PIN/PUK shorter than 6 bytes', { length: end });
  }
  return field.slice(0, end);
}

/** Pads a 6..8 byte value to the 8-byte wire field (for hosts and tests). */
export function padReferenceValue(value: Uint8Array): Uint8Array {
  if (value.length < REFERENCE_DATA_MIN_BYTES || value.length > REFERENCE_DATA_MAX_BYTES) {
    throw new RangeError('PIN/PUK must be 6 to 8 bytes');
  }
  const out = new Uint8Array(REFERENCE_DATA_MAX_BYTES).fill(REFERENCE_DATA_PAD_BYTE);
  out.set(value);
  return out;
}

/** P2 of VERIFY / CHANGE REFERENCE DATA: 80 PIN, 81 PUK; anything else (00 global PIN, ...) 6A88. */
export function referenceKindOf(p2: number): ReferenceKind {
  if (p2 === KEY_REF.PIN) return 'pin';
  if (p2 === KEY_REF.PUK) return 'puk';
  throw new ApduError(SW.REFERENCE_NOT_FOUND, 'key reference is not the PIN or PUK', { p2 });
}

// --- In a card state (the stores) --------------------------------------------------------------

/** `INPUT_RANGE` for a reference kind other than the PIN and the PUK. */
export function checkReferenceKind(kind: ReferenceKind): void {
  if (kind !== 'pin' && kind !== 'puk') {
    throw new CardStateError('INPUT_RANGE', 'unknown reference kind', { kind: String(kind) });
  }
}

/**
 * A PIN/PUK to compare, without its trailing FF padding. Longer than 8 bytes (or not bytes) is
 * `REFERENCE_DATA_LENGTH`: stores call this before they consume a try.
 */
export function referenceCandidate(candidate: Uint8Array): Uint8Array {
  if (!(candidate instanceof Uint8Array) || candidate.length > REFERENCE_DATA_MAX_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK candidate longer than 8 bytes', {
      length: candidate instanceof Uint8Array ? candidate.length : -1,
    });
  }
  return stripReferencePadding(candidate);
}

/** A new PIN/PUK without its padding, checked to be 6..8 bytes (`REFERENCE_DATA_LENGTH`). */
export function canonicalReferenceValue(value: Uint8Array): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length > REFERENCE_DATA_MAX_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK must be 6 to 8 bytes', {
      length: value instanceof Uint8Array ? value.length : -1,
    });
  }
  const canonical = stripReferencePadding(value);
  if (canonical.length < REFERENCE_DATA_MIN_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK must be 6 to 8 bytes', {
      length: canonical.length,
    });
  }
  return canonical;
}

/** The value without its trailing pad bytes (a view, not a copy). */
function stripReferencePadding(value: Uint8Array): Uint8Array {
  let end = value.length;
  while (end > 0 && value[end - 1] === REFERENCE_DATA_PAD_BYTE) end--;
  return value.subarray(0, end);
}
