import type { KeyObject } from 'node:crypto';
import type { KeyAlgorithm } from '../card-state.js';
import { KEY_SIZE_BYTES } from '../constants.js';
import { CardStateError } from './errors.js';

/** The RSA public exponent cardlink generates and expects on import (F4 = 65537). */
export const RSA_PUBLIC_EXPONENT = 65537;

/** RSA modulus sizes in bits, SP 800-78-5 Table 6-2 (algorithm ids 07 and 05). */
export const RSA_MODULUS_BITS: Readonly<Record<'RSA2048' | 'RSA3072', number>> = {
  RSA2048: KEY_SIZE_BYTES.RSA2048 * 8,
  RSA3072: KEY_SIZE_BYTES.RSA3072 * 8,
};

export type EcAlgorithm = 'ECCP256' | 'ECCP384';
export type RsaAlgorithm = 'RSA2048' | 'RSA3072';

export interface CurveInfo {
  /** OpenSSL / node:crypto name of the curve. */
  readonly namedCurve: 'prime256v1' | 'secp384r1';
  /** JWK `crv` (RFC 7518 section 6.2.1.1). */
  readonly jwkCurve: 'P-256' | 'P-384';
  /** Bytes of a field element, of the private scalar and of the group order. */
  readonly bytes: number;
  /** The hash that matches the curve's strength (SP 800-78-5 Table 3-2). */
  readonly hash: 'sha256' | 'sha384';
}

/** SP 800-78-5 Table 6-2: algorithm ids 11 (P-256) and 14 (P-384). */
export const CURVES: Readonly<Record<EcAlgorithm, CurveInfo>> = {
  ECCP256: { namedCurve: 'prime256v1', jwkCurve: 'P-256', bytes: KEY_SIZE_BYTES.ECCP256, hash: 'sha256' },
  ECCP384: { namedCurve: 'secp384r1', jwkCurve: 'P-384', bytes: KEY_SIZE_BYTES.ECCP384, hash: 'sha384' },
};

export function isEcAlgorithm(algorithm: KeyAlgorithm): algorithm is EcAlgorithm {
  return algorithm === 'ECCP256' || algorithm === 'ECCP384';
}

export function isRsaAlgorithm(algorithm: KeyAlgorithm): algorithm is RsaAlgorithm {
  return algorithm === 'RSA2048' || algorithm === 'RSA3072';
}

/** The PIV algorithm of a node:crypto key (private or public); refuses anything else. */
export function keyAlgorithmOf(key: KeyObject): KeyAlgorithm {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'rsa' && details) {
    if (details.publicExponent !== BigInt(RSA_PUBLIC_EXPONENT)) {
      throw new CardStateError('UNSUPPORTED_ALGORITHM', 'RSA public exponent other than 65537');
    }
    if (details.modulusLength === RSA_MODULUS_BITS.RSA2048) return 'RSA2048';
    if (details.modulusLength === RSA_MODULUS_BITS.RSA3072) return 'RSA3072';
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported RSA modulus size', {
      bits: details.modulusLength ?? 0,
    });
  }
  if (key.asymmetricKeyType === 'ec' && details) {
    if (details.namedCurve === 'prime256v1') return 'ECCP256';
    if (details.namedCurve === 'secp384r1') return 'ECCP384';
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported EC curve', {
      curve: details.namedCurve ?? '',
    });
  }
  throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported key type', {
    type: key.asymmetricKeyType ?? '',
  });
}
