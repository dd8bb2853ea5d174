import { checkPrimeSync, createPrivateKey } from 'node:crypto';
import { p256, p384 } from '@noble/curves/nist.js';
import { CardStateError } from './errors.js';
import { CURVES, RSA_MODULUS_BITS, RSA_PUBLIC_EXPONENT, type EcAlgorithm } from './key-algorithms.js';

/**
 * PKCS#8 (RFC 5208) DER private keys built from the components a key import carries
 * (Yubico IMPORT ASYMMETRIC KEY: RSA primes, or the EC private scalar). node:crypto does the
 * encoding through a JWK import, which also checks the key's structure.
 */

/**
 * Miller-Rabin rounds (random bases) for each RSA prime on import. Each round passes a composite
 * with probability at most 1/4, so 10 rounds bound the error by 2^-20 even for chosen input.
 */
export const RSA_PRIME_CHECKS = 10;

export interface RsaComponents {
  /** First prime, big-endian. */
  readonly p: Uint8Array;
  /** Second prime, big-endian. */
  readonly q: Uint8Array;
  /** Public exponent, big-endian; 65537 when absent (the Yubico import sends none). */
  readonly e?: Uint8Array;
  /** When given (the Yubico import sends them), must equal d mod (p-1), d mod (q-1), q^-1 mod p. */
  readonly dP?: Uint8Array;
  readonly dQ?: Uint8Array;
  readonly qInv?: Uint8Array;
}

/**
 * PKCS#8 DER for the RSA key with primes p and q (RFC 8017 section 3.2): computes n, d (the
 * inverse of e modulo (p-1)(q-1)), dP, dQ and qInv. Refuses non-primes, p = q, a modulus other
 * than 2048 or 3072 bits, an exponent other than 65537 and CRT values that do not match.
 */
export function rsaPkcs8FromComponents(components: RsaComponents): Uint8Array {
  const p = toBigInt(components.p);
  const q = toBigInt(components.q);
  const e = components.e ? toBigInt(components.e) : BigInt(RSA_PUBLIC_EXPONENT);
  if (e !== BigInt(RSA_PUBLIC_EXPONENT)) {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'RSA public exponent other than 65537');
  }
  const n = p * q;
  const bits = n.toString(2).length;
  if (bits !== RSA_MODULUS_BITS.RSA2048 && bits !== RSA_MODULUS_BITS.RSA3072) {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported RSA modulus size', { bits });
  }
  if (
    p === q ||
    !checkPrimeSync(p, { checks: RSA_PRIME_CHECKS }) ||
    !checkPrimeSync(q, { checks: RSA_PRIME_CHECKS })
  ) {
    throw new CardStateError('KEY_INVALID', 'RSA factors are not two distinct primes');
  }
  const phi = (p - 1n) * (q - 1n);
  const d = modInverse(e, phi);
  const dP = d % (p - 1n);
  const dQ = d % (q - 1n);
  const qInv = modInverse(q, p);
  const given: [Uint8Array | undefined, bigint][] = [
    [components.dP, dP],
    [components.dQ, dQ],
    [components.qInv, qInv],
  ];
  for (const [bytes, value] of given) {
    if (bytes !== undefined && toBigInt(bytes) !== value) {
      throw new CardStateError('KEY_INVALID', 'RSA CRT values do not match the primes');
    }
  }
  const key = createPrivateKey({
    key: {
      kty: 'RSA',
      n: b64u(n),
      e: b64u(e),
      d: b64u(d),
      p: b64u(p),
      q: b64u(q),
      dp: b64u(dP),
      dq: b64u(dQ),
      qi: b64u(qInv),
    },
    format: 'jwk',
  });
  return new Uint8Array(key.export({ type: 'pkcs8', format: 'der' }));
}

/**
 * PKCS#8 DER for the EC key with private scalar `scalar` (big-endian, at most the curve size;
 * shorter is left-padded). The public point is computed here. Refuses 0 and values >= the order.
 */
export function ecPkcs8FromScalar(algorithm: EcAlgorithm, scalar: Uint8Array): Uint8Array {
  const curve = CURVES[algorithm];
  if (!curve) {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported EC algorithm', {
      algorithm: String(algorithm),
    });
  }
  if (scalar.length === 0 || scalar.length > curve.bytes) {
    throw new CardStateError('KEY_INVALID', 'EC private scalar has the wrong length', {
      algorithm,
      expected: curve.bytes,
      length: scalar.length,
    });
  }
  const d = new Uint8Array(curve.bytes);
  d.set(scalar, curve.bytes - scalar.length);
  const noble = algorithm === 'ECCP256' ? p256 : p384;
  if (!noble.utils.isValidSecretKey(d)) {
    throw new CardStateError('KEY_INVALID', 'EC private scalar out of range', { algorithm });
  }
  const point = noble.getPublicKey(d, false); // 04 || X || Y
  const key = createPrivateKey({
    key: {
      kty: 'EC',
      crv: curve.jwkCurve,
      d: Buffer.from(d).toString('base64url'),
      x: Buffer.from(point.subarray(1, 1 + curve.bytes)).toString('base64url'),
      y: Buffer.from(point.subarray(1 + curve.bytes)).toString('base64url'),
    },
    format: 'jwk',
  });
  d.fill(0);
  return new Uint8Array(key.export({ type: 'pkcs8', format: 'der' }));
}

function toBigInt(bytes: Uint8Array): bigint {
  if (bytes.length === 0) throw new CardStateError('KEY_INVALID', 'empty key component');
  return BigInt('0x' + Buffer.from(bytes).toString('hex'));
}

function b64u(value: bigint): string {
  let hex = value.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  return Buffer.from(hex, 'hex').toString('base64url');
}

/** a^-1 mod m by the extended Euclidean algorithm; throws when gcd(a, m) != 1. */
function modInverse(a: bigint, m: bigint): bigint {
  let [oldR, r] = [((a % m) + m) % m, m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const quotient = oldR / r;
    [oldR, r] = [r, oldR - quotient * r];
    [oldS, s] = [s, oldS - quotient * s];
  }
  if (oldR !== 1n) throw new CardStateError('KEY_INVALID', 'RSA exponent is not invertible for these primes');
  return ((oldS % m) + m) % m;
}
