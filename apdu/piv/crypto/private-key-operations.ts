import { constants, createPublicKey, diffieHellman, privateDecrypt, type KeyObject } from 'node:crypto';
import { p256, p384 } from '@noble/curves/nist.js';
import type { KeyAlgorithm } from '../card-state.js';
import { CardStateError } from './errors.js';
import { CURVES, isEcAlgorithm, keyAlgorithmOf, type EcAlgorithm } from './key-algorithms.js';
import { loadNativeEcdsa } from './native-ecdsa.js';

/**
 * Private-key operations a PIV card performs in GENERAL AUTHENTICATE (SP 800-73-4 Part 2 section
 * 3.2.4): the raw RSA operation (the host pads), ECDSA over a digest the host computed, and ECDH.
 * Pure functions on node:crypto KeyObjects; nothing is stored here.
 */

/**
 * Longest ECDSA input accepted: the longest SHA-2 digest (SHA-512, 64 bytes). Longer input is
 * truncated to the curve size anyway, so more bytes would only be work for nothing.
 */
export const MAX_ECDSA_INPUT_BYTES = 64;

const NOBLE_CURVES = { ECCP256: p256, ECCP384: p384 } as const;

/** A private key parsed once, ready for many operations (parsing a key costs ~350 µs). */
export interface PreparedSigner {
  readonly algorithm: KeyAlgorithm;
  /**
   * RSA: the raw private operation on a modulus-sized block (must be numerically below the modulus).
   * EC: ECDSA over `input` taken as the message digest, DER signature (SEQUENCE { r, s }).
   */
  sign(input: Uint8Array): Uint8Array;
}

/** Parses what `sign` needs out of `privateKey` once (RSA modulus; EC private scalar). */
export function prepareSigner(privateKey: KeyObject): PreparedSigner {
  requirePrivate(privateKey);
  const algorithm = keyAlgorithmOf(privateKey);
  if (isEcAlgorithm(algorithm)) {
    const native = loadNativeEcdsa();
    if (native) {
      const der = privateKey.export({ format: 'der', type: 'pkcs8' });
      const key = native.loadKey(der);
      der.fill(0);
      const bytes = CURVES[algorithm].bytes;
      return {
        algorithm,
        sign: (input) => {
          const digest = ecdsaInputToCurveSize(input, bytes);
          const signature = native.signDigest(
            key,
            Buffer.from(digest.buffer, digest.byteOffset, digest.length),
          );
          return new Uint8Array(signature.buffer, signature.byteOffset, signature.length);
        },
      };
    }
  }
  const jwk = privateKey.export({ format: 'jwk' });
  if (isEcAlgorithm(algorithm)) {
    const scalar = leftPad(base64url(jwk.d), CURVES[algorithm].bytes);
    return { algorithm, sign: (input) => ecdsaSignDigest(algorithm, scalar, input) };
  }
  const modulus = stripLeadingZeros(base64url(jwk.n));
  return { algorithm, sign: (input) => rsaRawPrivate(privateKey, modulus, input) };
}

/**
 * The RSA private-key operation `input^d mod n` with no padding (the host built the padding).
 * `modulus` is the big-endian modulus without leading zeros; `input` must be exactly as long and
 * numerically smaller.
 */
export function rsaRawPrivate(privateKey: KeyObject, modulus: Uint8Array, input: Uint8Array): Uint8Array {
  if (input.length !== modulus.length) {
    throw new CardStateError('INPUT_LENGTH', 'RSA input must be exactly the modulus length', {
      expected: modulus.length,
      length: input.length,
    });
  }
  if (compareBigEndian(input, modulus) >= 0) {
    throw new CardStateError('INPUT_RANGE', 'RSA input is not below the modulus', { length: input.length });
  }
  const out = privateDecrypt({ key: privateKey, padding: constants.RSA_NO_PADDING }, input);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * The pure-JavaScript ECDSA used where the OpenSSL addon (native-ecdsa.ts) is not built.
 * ECDSA (FIPS 186-5 section 6.4) over `input` taken as the digest: deterministic k (RFC 6979), s
 * not normalised to the low half (plain ECDSA as OpenSSL produces and verifies it), DER output.
 * `input` is converted per SEC 1 section 4.1.3 step 5: shorter than the curve it counts as its
 * integer value (left-padded with zeros), longer it is cut to the curve's leftmost bits.
 */
export function ecdsaSignDigest(algorithm: EcAlgorithm, scalar: Uint8Array, input: Uint8Array): Uint8Array {
  const digest = ecdsaInputToCurveSize(input, CURVES[algorithm].bytes);
  return NOBLE_CURVES[algorithm].sign(digest, scalar, { prehash: false, lowS: false, format: 'der' });
}

/**
 * SEC 1 bits2int for the byte-aligned curves P-256/P-384: left-pads a short digest with zeros and
 * keeps the leftmost `bytes` of a long one. Refuses empty input and input over MAX_ECDSA_INPUT_BYTES.
 */
export function ecdsaInputToCurveSize(input: Uint8Array, bytes: number): Uint8Array {
  if (input.length === 0 || input.length > MAX_ECDSA_INPUT_BYTES) {
    throw new CardStateError('INPUT_LENGTH', 'ECDSA input must be 1..64 bytes', { length: input.length });
  }
  if (input.length >= bytes) return new Uint8Array(input.subarray(0, bytes));
  return leftPad(input, bytes);
}

/**
 * ECDH (SP 800-56A section 5.7.1.2): the x coordinate of d * peer. The peer point must be
 * uncompressed (`04 || X || Y`, SP 800-73-4 Part 2 section 3.2.4 tag 85) and on the key's curve;
 * a point that is not is refused before any key operation (invalid-curve attacks).
 */
export function deriveSharedSecret(privateKey: KeyObject, peerPoint: Uint8Array): Uint8Array {
  requirePrivate(privateKey);
  const algorithm = keyAlgorithmOf(privateKey);
  if (!isEcAlgorithm(algorithm)) {
    throw new CardStateError('KEY_TYPE_MISMATCH', 'ECDH needs an EC key', { algorithm });
  }
  const curve = CURVES[algorithm];
  const expected = 1 + 2 * curve.bytes;
  if (peerPoint.length !== expected) {
    throw new CardStateError('INPUT_LENGTH', 'peer point has the wrong length', {
      expected,
      length: peerPoint.length,
    });
  }
  if (peerPoint[0] !== 0x04) {
    throw new CardStateError('EC_POINT_INVALID', 'peer point is not uncompressed', { algorithm });
  }
  try {
    // Throws unless the point is on the curve and not the point at infinity.
    NOBLE_CURVES[algorithm].Point.fromBytes(peerPoint);
  } catch {
    throw new CardStateError('EC_POINT_INVALID', 'peer point is not on the curve', { algorithm });
  }
  const publicKey = createPublicKey({
    key: {
      kty: 'EC',
      crv: curve.jwkCurve,
      x: Buffer.from(peerPoint.subarray(1, 1 + curve.bytes)).toString('base64url'),
      y: Buffer.from(peerPoint.subarray(1 + curve.bytes)).toString('base64url'),
    },
    format: 'jwk',
  });
  const secret = diffieHellman({ privateKey, publicKey });
  return new Uint8Array(secret.buffer, secret.byteOffset, secret.length);
}

function requirePrivate(key: KeyObject): void {
  if (key.type !== 'private') {
    throw new CardStateError('KEY_TYPE_MISMATCH', 'a private key is required', { type: key.type });
  }
}

function base64url(value: string | undefined): Uint8Array {
  if (value === undefined) throw new CardStateError('KEY_INVALID', 'key export lacks a component');
  return new Uint8Array(Buffer.from(value, 'base64url'));
}

function leftPad(bytes: Uint8Array, length: number): Uint8Array {
  if (bytes.length > length)
    throw new CardStateError('KEY_INVALID', 'value longer than expected', { length });
  const out = new Uint8Array(length);
  out.set(bytes, length - bytes.length);
  return out;
}

function stripLeadingZeros(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return bytes.slice(i);
}

/** Compares two equal-length big-endian unsigned integers. */
function compareBigEndian(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}
