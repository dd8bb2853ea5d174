import { createHash, webcrypto, type KeyObject } from 'node:crypto';
import { concatBytes } from '../../codec/ber-tlv.js';
import type { KeyAlgorithm } from '../card-state.js';
import { CardStateError } from '../crypto/errors.js';
import { CURVES, RSA_MODULUS_BITS, isEcAlgorithm, keyAlgorithmOf } from '../crypto/key-algorithms.js';
import { AsnEcSignatureFormatter } from './x509-toolkit.js';

/**
 * A WebCrypto provider for the X.509 toolkit (docs/x509.md) whose private key never leaves the key
 * store. The toolkit builds the to-be-signed structure (certificate, certificate request or CRL)
 * and calls `crypto.subtle.sign(algorithm, key, data)`; this provider hashes `data` and hands the
 * key store what a PIV GENERAL AUTHENTICATE signs:
 * - RSA: the modulus-sized EMSA-PKCS1-v1_5 block (RFC 8017 section 9.2), for the raw private-key
 *   operation (KeySlotStore.sign).
 * - EC: the hash, for a DER ECDSA signature (KeySlotStore.sign), which becomes the fixed-size
 *   r || s WebCrypto returns (the toolkit turns it back into DER for the structure it signs).
 * The hash is the one the key is used with everywhere else: SHA-256 for RSA and P-256, SHA-384 for
 * P-384 (SP 800-78-5 Table 3-2). The provider does what signing needs and nothing more: sign,
 * digest, getRandomValues (serial numbers) and exportKey of its own public key (requests embed it).
 */

type CryptoKey = webcrypto.CryptoKey;
type Crypto = webcrypto.Crypto;
type BufferSource = webcrypto.BufferSource;

/** Receives the block or hash to sign, returns the signature as the key store produces it. */
export type CertificateSigner = (input: Uint8Array) => Promise<Uint8Array>;

/** DigestInfo prefixes, RFC 8017 section 9.2 note 1. */
const DIGEST_INFO_PREFIX = {
  'SHA-256': Uint8Array.from(Buffer.from('3031300d060960864801650304020105000420', 'hex')),
  'SHA-384': Uint8Array.from(Buffer.from('3041300d060960864801650304020205000430', 'hex')),
} as const;

/** A WebCrypto hash name. */
export type CardKeyHash = keyof typeof DIGEST_INFO_PREFIX;

export interface CardSigningKey {
  readonly algorithm: KeyAlgorithm;
  /**
   * The toolkit's key pair: `privateKey` is the `signingKey` of certificates and CRLs (it names the
   * algorithm; the key itself stays in the key store); both go to certificate requests.
   */
  readonly keys: { readonly privateKey: CryptoKey; readonly publicKey: CryptoKey };
  /** The toolkit's `signingAlgorithm` (it adds the hash to the key's algorithm). */
  readonly signingAlgorithm: { readonly name: string; readonly hash: CardKeyHash };
  /** The toolkit's `crypto` argument; it signs with `keys.privateKey` only. */
  readonly crypto: Crypto;
}

/**
 * A signing key for the toolkit: `publicKey` is the slot's public key, `sign` the key store's
 * operation on the matching private key.
 */
export function cardSigningKey(publicKey: KeyObject, sign: CertificateSigner): CardSigningKey {
  if (publicKey.type !== 'public') throw new CardStateError('KEY_INVALID', 'a public key is expected');
  const algorithm = keyAlgorithmOf(publicKey);
  const hash: CardKeyHash =
    isEcAlgorithm(algorithm) && CURVES[algorithm].hash === 'sha384' ? 'SHA-384' : 'SHA-256';
  const keyAlgorithm = isEcAlgorithm(algorithm)
    ? { name: 'ECDSA', namedCurve: CURVES[algorithm].jwkCurve }
    : {
        name: 'RSASSA-PKCS1-v1_5',
        hash: { name: hash },
        modulusLength: RSA_MODULUS_BITS[algorithm],
        publicExponent: Uint8Array.of(1, 0, 1),
      };
  // Shaped like CryptoKeys (the toolkit reads `algorithm` and `type`); only this provider uses them.
  const handle = (type: 'private' | 'public', usages: string[]): CryptoKey =>
    Object.freeze({
      type,
      extractable: type === 'public',
      algorithm: keyAlgorithm,
      usages,
    }) as unknown as CryptoKey;
  const privateKey = handle('private', ['sign']);
  const publicHandle = handle('public', ['verify']);
  const spki = new Uint8Array(publicKey.export({ type: 'spki', format: 'der' }));

  const subtle = {
    async sign(signAlgorithm: { name?: string; hash?: unknown }, key: CryptoKey, data: BufferSource) {
      if (key !== privateKey) {
        throw new CardStateError('KEY_INVALID', 'the card key provider signs with its own key only');
      }
      if (signAlgorithm.name !== keyAlgorithm.name || hashName(signAlgorithm.hash) !== hash) {
        throw new CardStateError('UNSUPPORTED_ALGORITHM', 'signature algorithm does not match the card key', {
          algorithm,
        });
      }
      const digest = new Uint8Array(
        createHash(hash === 'SHA-384' ? 'sha384' : 'sha256')
          .update(bytesOf(data))
          .digest(),
      );
      if (!isEcAlgorithm(algorithm)) {
        const block = emsaPkcs1v15(
          concatBytes([DIGEST_INFO_PREFIX[hash], digest]),
          RSA_MODULUS_BITS[algorithm] / 8,
        );
        return (await sign(block)).slice().buffer;
      }
      return ecdsaDerToWebSignature(keyAlgorithm, await sign(digest), algorithm);
    },
    async exportKey(format: string, key: CryptoKey) {
      if (format !== 'spki' || key !== publicHandle) {
        throw new CardStateError('KEY_INVALID', 'the card key provider exports its public key as SPKI only');
      }
      return spki.slice().buffer;
    },
    digest(digestAlgorithm: webcrypto.AlgorithmIdentifier, data: BufferSource) {
      return webcrypto.subtle.digest(digestAlgorithm, data);
    },
  };
  const crypto = {
    subtle,
    getRandomValues: (array: Uint8Array): Uint8Array => webcrypto.getRandomValues(array),
  } as unknown as Crypto;
  return {
    algorithm,
    keys: { privateKey, publicKey: publicHandle },
    signingAlgorithm: { name: keyAlgorithm.name, hash },
    crypto,
  };
}

/** EMSA-PKCS1-v1_5 (RFC 8017 section 9.2 step 5): 00 01 FF..FF 00 || DigestInfo, `k` bytes. */
export function emsaPkcs1v15(digestInfo: Uint8Array, k: number): Uint8Array {
  if (digestInfo.length > k - 11)
    throw new CardStateError('INPUT_LENGTH', 'DigestInfo too long for the modulus');
  const em = new Uint8Array(k).fill(0xff);
  em[0] = 0x00;
  em[1] = 0x01;
  em[k - digestInfo.length - 1] = 0x00;
  em.set(digestInfo, k - digestInfo.length);
  return em;
}

/** A DER ECDSA-Sig-Value (RFC 5480 section 2.2.3) as WebCrypto's fixed-size r || s. */
function ecdsaDerToWebSignature(
  keyAlgorithm: { name: string; namedCurve?: string },
  der: Uint8Array,
  algorithm: KeyAlgorithm,
): ArrayBuffer {
  try {
    const web = new AsnEcSignatureFormatter().toWebSignature(keyAlgorithm, der);
    if (web) return web;
  } catch {
    // not a DER ECDSA-Sig-Value of this curve; reported below
  }
  throw new CardStateError('KEY_TYPE_MISMATCH', 'the key store returned no ECDSA signature for this curve', {
    algorithm,
  });
}

function hashName(hash: unknown): string | undefined {
  if (typeof hash === 'string') return hash.toUpperCase();
  if (hash && typeof hash === 'object' && 'name' in hash && typeof hash.name === 'string')
    return hash.name.toUpperCase();
  return undefined;
}

function bytesOf(data: BufferSource): Uint8Array {
  return ArrayBuffer.isView(data)
    ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    : new Uint8Array(data);
}
