/**
 * PIN and PUK verifiers: what the database stores instead of a PIN.
 *
 * verifier = format 1 || PIN key version (uint32) || salt (16 random bytes) || HMAC-SHA-256 under
 * the provider's PIN key of (domain || card id || kind || salt || PIN).
 *
 * A PIN has at most 10^8 values (8 digits), so any unkeyed hash, even a slow one, falls to an
 * offline search once the database leaks. Keyed by a secret that stays in the key provider (an
 * HSM object with PKCS#11), the verifier is useless without the provider, and every guess has to
 * go through the card's retry counter. The card id and kind in the MAC stop a verifier copied onto
 * another card (or from PUK to PIN) from working there.
 *
 * A verifier made under an older PIN key version still verifies (while that version exists), and
 * a successful check returns a replacement under the current version (`replacementVerifier`), so
 * verifiers migrate as PINs are used.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { CompareResult, ReferenceKind } from '../storage/reference-data.js';
import { SealedKeyInvalidError, type KekProvider } from './kek-provider.js';

export const PIN_VERIFIER_FORMAT = 1;
/** Salt bytes per verifier. */
export const PIN_VERIFIER_SALT_BYTES = 16;
const MAC_BYTES = 32;
/** Total verifier length: format, version, salt, MAC. */
export const PIN_VERIFIER_BYTES = 1 + 4 + PIN_VERIFIER_SALT_BYTES + MAC_BYTES;

const DOMAIN = Buffer.from('cardlink/pin-verifier/v1\0', 'latin1');

/** Whose verifier: the card and PIN or PUK. */
export interface VerifierContext {
  readonly cardId: string;
  readonly kind: ReferenceKind;
}

function macInput(context: VerifierContext, salt: Uint8Array, value: Uint8Array): Buffer {
  const card = Buffer.from(context.cardId, 'utf8');
  const length = Buffer.alloc(4);
  length.writeUInt32BE(card.length);
  return Buffer.concat([
    DOMAIN,
    length,
    card,
    Buffer.from(context.kind, 'latin1'),
    Buffer.of(0),
    salt,
    value,
  ]);
}

/** A fresh verifier for `value` under the current PIN key. */
export async function createPinVerifier(
  provider: KekProvider,
  context: VerifierContext,
  value: Uint8Array,
): Promise<Buffer> {
  const salt = randomBytes(PIN_VERIFIER_SALT_BYTES);
  const { version, mac } = await provider.hmac(macInput(context, salt, value));
  const out = Buffer.alloc(PIN_VERIFIER_BYTES);
  out[0] = PIN_VERIFIER_FORMAT;
  out.writeUInt32BE(version, 1);
  salt.copy(out, 5);
  mac.copy(out, 5 + PIN_VERIFIER_SALT_BYTES);
  return out;
}

/** The PIN key version a verifier was made with. */
export function pinVerifierKeyVersion(verifier: Uint8Array): number {
  if (verifier.length !== PIN_VERIFIER_BYTES || verifier[0] !== PIN_VERIFIER_FORMAT) {
    throw new SealedKeyInvalidError('PIN verifier has an unknown format');
  }
  return Buffer.from(verifier.buffer, verifier.byteOffset, verifier.byteLength).readUInt32BE(1);
}

/**
 * Compares `candidate` with the verifier in constant time. On a match made under an older PIN
 * key, also returns a verifier under the current one. Suits `verifyReference`'s `compare`.
 */
export async function checkPinVerifier(
  provider: KekProvider,
  context: VerifierContext,
  verifier: Uint8Array,
  candidate: Uint8Array,
): Promise<CompareResult> {
  const version = pinVerifierKeyVersion(verifier);
  const salt = verifier.subarray(5, 5 + PIN_VERIFIER_SALT_BYTES);
  const stored = verifier.subarray(5 + PIN_VERIFIER_SALT_BYTES);
  const { mac } = await provider.hmac(macInput(context, salt, candidate), version);
  if (!timingSafeEqual(mac, stored)) return { match: false };
  if (version === provider.pinKeyVersion) return { match: true };
  return { match: true, replacementVerifier: await createPinVerifier(provider, context, candidate) };
}
