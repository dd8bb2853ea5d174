import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { findTlv, parseTlvList } from '../../../../apdu/codec/index.js';
import type { KeyAlgorithm } from '../../../../apdu/piv/card-state.js';

/** Host-side key helpers: public keys from a 7F49 template, PKCS#1 v1.5 padding done by the host. */

const b64u = (b: Uint8Array) => Buffer.from(b).toString('base64url');

export function publicKeyFromTemplate(algorithm: KeyAlgorithm, content: Uint8Array): KeyObject {
  const list = parseTlvList(content);
  if (algorithm === 'RSA2048' || algorithm === 'RSA3072') {
    return createPublicKey({
      key: { kty: 'RSA', n: b64u(findTlv(list, 0x81)!.value), e: b64u(findTlv(list, 0x82)!.value) },
      format: 'jwk',
    });
  }
  const point = findTlv(list, 0x86)!.value;
  const size = (point.length - 1) / 2;
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: algorithm === 'ECCP256' ? 'P-256' : 'P-384',
      x: b64u(point.subarray(1, 1 + size)),
      y: b64u(point.subarray(1 + size)),
    },
    format: 'jwk',
  });
}

/** DigestInfo prefix for SHA-256 (RFC 8017 section 9.2 note 1). */
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');

/** EMSA-PKCS1-v1_5 encoding of SHA-256(message) for a k-byte modulus (RFC 8017 section 9.2). */
export function pkcs1v15Sha256Block(message: Uint8Array, k: number): Uint8Array {
  const t = Buffer.concat([SHA256_DIGEST_INFO, createHash('sha256').update(message).digest()]);
  const block = new Uint8Array(k).fill(0xff);
  block[0] = 0x00;
  block[1] = 0x01;
  block[k - t.length - 1] = 0x00;
  block.set(t, k - t.length);
  return block;
}

export const ALGORITHM_IDS: Record<KeyAlgorithm, number> = {
  RSA2048: 0x07,
  RSA3072: 0x05,
  ECCP256: 0x11,
  ECCP384: 0x14,
};
export const SIZES: Record<KeyAlgorithm, number> = { RSA2048: 256, RSA3072: 384, ECCP256: 32, ECCP384: 48 };
