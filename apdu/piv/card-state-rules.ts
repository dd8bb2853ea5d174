import { createPrivateKey, type KeyObject } from 'node:crypto';
import type { KeyAlgorithm, KeyOrigin, PinPolicy, SlotKeyInfo } from './card-state.js';
import { isKeySlot, KEY_ALGORITHMS, PIN_POLICIES } from './constants.js';
import { CardStateError } from './crypto/errors.js';
import { keyAlgorithmOf } from './crypto/key-algorithms.js';

/**
 * The checks every PivCardState implementation makes on its input (the in-memory state in
 * `memory-card-state.ts`, the server's persistent stores in `server/cards/`), defined once so
 * that a card answers the same whichever store holds it. Each refuses with a CardStateError
 * whose reason the card maps to a status word (`status-mapping.ts`). PIN/PUK checks are in
 * `reference-data.ts`.
 */

/**
 * Largest data object value a card state keeps (16 KiB). Not a PIV number: a bound that keeps a
 * caller from filling a store. Through the card a value is smaller anyway, since PUT DATA carries
 * it in one command of at most MAX_CHAINED_COMMAND_BYTES (16 KiB) with its tags.
 */
export const MAX_DATA_OBJECT_BYTES = 16 * 1024;

/** `SLOT_INVALID` for anything but 9A, 9C, 9D, 9E and 82..95. */
export function checkKeySlot(slot: number): void {
  if (!isKeySlot(slot)) {
    throw new CardStateError('SLOT_INVALID', 'not a PIV key slot', {
      slot: Number.isInteger(slot) ? slot : -1,
    });
  }
}

/** `UNSUPPORTED_ALGORITHM` for an algorithm outside KEY_ALGORITHMS. */
export function checkKeyAlgorithm(algorithm: KeyAlgorithm): void {
  if (!KEY_ALGORITHMS.includes(algorithm)) {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported key algorithm', {
      algorithm: String(algorithm),
    });
  }
}

/** `INPUT_RANGE` for a PIN policy outside PIN_POLICIES. */
export function checkPinPolicy(policy: PinPolicy): void {
  if (!PIN_POLICIES.includes(policy)) {
    throw new CardStateError('INPUT_RANGE', 'unknown PIN policy', { policy: String(policy) });
  }
}

/**
 * The private key a key import hands over as PKCS#8 DER, checked to be of `algorithm`:
 * `KEY_INVALID` when it is not a PKCS#8 private key, `UNSUPPORTED_ALGORITHM` for a key cardlink
 * cannot hold (another curve, modulus or exponent), `KEY_TYPE_MISMATCH` for another algorithm.
 */
export function importedPrivateKey(slot: number, algorithm: KeyAlgorithm, pkcs8: Uint8Array): KeyObject {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' });
  } catch {
    throw new CardStateError('KEY_INVALID', 'not a PKCS#8 private key', { slot });
  }
  const actual = keyAlgorithmOf(privateKey);
  if (actual !== algorithm) {
    throw new CardStateError('KEY_TYPE_MISMATCH', 'imported key is of another algorithm', {
      slot,
      algorithm,
      actual,
    });
  }
  return privateKey;
}

/** A frozen SlotKeyInfo holding its own copy of the public key. */
export function slotKeyInfo(
  algorithm: KeyAlgorithm,
  publicKeySpki: Uint8Array,
  pinPolicy: PinPolicy,
  origin: KeyOrigin,
): SlotKeyInfo {
  return Object.freeze({ algorithm, publicKeySpki: new Uint8Array(publicKeySpki), pinPolicy, origin });
}

/** A copy for a caller: changing the public key it holds changes nothing in the store. */
export function copySlotKeyInfo(info: SlotKeyInfo): SlotKeyInfo {
  return { ...info, publicKeySpki: new Uint8Array(info.publicKeySpki) };
}

/** `OBJECT_INVALID` for a data object tag outside 1..3 bytes. */
export function checkDataObjectTag(tag: number): void {
  if (!Number.isInteger(tag) || tag <= 0 || tag > 0xffffff) {
    throw new CardStateError('OBJECT_INVALID', 'data object tag must be 1 to 3 bytes', {
      tag: Number.isFinite(tag) ? tag : -1,
    });
  }
}

/** `OBJECT_INVALID` for a value that is not bytes or is longer than MAX_DATA_OBJECT_BYTES. */
export function checkDataObjectValue(tag: number, value: Uint8Array): void {
  if (!(value instanceof Uint8Array) || value.length > MAX_DATA_OBJECT_BYTES) {
    throw new CardStateError('OBJECT_INVALID', 'data object too large', {
      tag,
      length: value instanceof Uint8Array ? value.length : -1,
      limit: MAX_DATA_OBJECT_BYTES,
    });
  }
}
