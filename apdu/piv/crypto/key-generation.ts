import { createPublicKey, generateKeyPair as generateNodeKeyPair, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { KeyAlgorithm } from '../card-state.js';
import { CardStateError } from './errors.js';
import {
  CURVES,
  RSA_MODULUS_BITS,
  RSA_PUBLIC_EXPONENT,
  isEcAlgorithm,
  isRsaAlgorithm,
} from './key-algorithms.js';

const generate = promisify(generateNodeKeyPair);

export interface GeneratedKeyPair {
  readonly privateKey: KeyObject;
  /** SubjectPublicKeyInfo, DER. */
  readonly publicKeySpki: Uint8Array;
}

/**
 * Generates a key pair for a PIV slot: RSA-2048/3072 with e = 65537, or EC on P-256/P-384.
 * Runs on the libuv thread pool, so an RSA-3072 generation (about a second) does not block.
 */
export async function generateKeyPair(algorithm: KeyAlgorithm): Promise<GeneratedKeyPair> {
  let privateKey: KeyObject;
  if (isRsaAlgorithm(algorithm)) {
    ({ privateKey } = await generate('rsa', {
      modulusLength: RSA_MODULUS_BITS[algorithm],
      publicExponent: RSA_PUBLIC_EXPONENT,
    }));
  } else if (isEcAlgorithm(algorithm)) {
    ({ privateKey } = await generate('ec', { namedCurve: CURVES[algorithm].namedCurve }));
  } else {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported key algorithm', {
      algorithm: String(algorithm),
    });
  }
  return { privateKey, publicKeySpki: spkiOf(privateKey) };
}

/** The DER SubjectPublicKeyInfo of a private or public key. */
export function spkiOf(key: KeyObject): Uint8Array {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return new Uint8Array(pub.export({ type: 'spki', format: 'der' }));
}
