import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { ManagementKeyAlgorithm } from '../card-state.js';
import { MANAGEMENT_BLOCK_BYTES, MANAGEMENT_KEY_BYTES } from '../constants.js';
import { CardStateError } from './errors.js';

/**
 * The card management key's block cipher (SP 800-78-5 Table 6-1; SP 800-73-4 Part 2 section
 * 3.2.4 challenge-response with key reference 9B). ECB, no padding: the callers exchange single
 * blocks (witness / challenge), so no chaining mode is involved.
 */

interface CipherSpec {
  /** OpenSSL cipher name. */
  readonly cipher: string;
  /** Key length in bytes. */
  readonly keyBytes: number;
  /** Cipher block length in bytes. */
  readonly blockBytes: number;
}

/**
 * SP 800-78-5 Table 6-1: algorithm ids 03 (3DES, 3-key, SP 800-67), 08/0A/0C (AES, FIPS 197).
 * Key and block lengths are those of `constants.ts`.
 */
export const MANAGEMENT_KEY_CIPHERS: Readonly<Record<ManagementKeyAlgorithm, CipherSpec>> = {
  '3DES': cipherSpec('3DES', 'des-ede3'),
  AES128: cipherSpec('AES128', 'aes-128-ecb'),
  AES192: cipherSpec('AES192', 'aes-192-ecb'),
  AES256: cipherSpec('AES256', 'aes-256-ecb'),
};

function cipherSpec(algorithm: ManagementKeyAlgorithm, cipher: string): CipherSpec {
  return {
    cipher,
    keyBytes: MANAGEMENT_KEY_BYTES[algorithm],
    blockBytes: MANAGEMENT_BLOCK_BYTES[algorithm],
  };
}

/**
 * Longest input of one cipher call. The challenge-response uses one block; a few more are allowed
 * for callers that batch, but the limit keeps a caller from handing over megabytes.
 */
export const MAX_MANAGEMENT_CIPHER_INPUT_BYTES = 64;

/** Block length of the algorithm (8 for 3DES, 16 for AES). */
export function managementKeyBlockSize(algorithm: ManagementKeyAlgorithm): number {
  return specOf(algorithm).blockBytes;
}

/**
 * Checks a management key before it is stored: exact length for the algorithm and, for 3DES, no
 * degenerate key. Throws CardStateError('KEY_INVALID') without saying anything about the bytes.
 *
 * 3DES is E(K3, D(K2, E(K1, x))). With K1 = K2 the first two steps cancel and what remains is
 * single DES under K3; with K2 = K3 the last two cancel, leaving single DES under K1. Single DES
 * has a 56-bit key, searchable exhaustively, so such a key only looks like 3DES. Keys are compared
 * without their parity bits (the low bit of each byte), which DES ignores. K1 = K3 (two-key 3DES,
 * keying option 2 of SP 800-67) is not degenerate and is accepted.
 */
export function validateManagementKey(algorithm: ManagementKeyAlgorithm, key: Uint8Array): void {
  const spec = specOf(algorithm);
  if (key.length !== spec.keyBytes) {
    throw new CardStateError('KEY_INVALID', 'management key has the wrong length for its algorithm', {
      algorithm,
      expected: spec.keyBytes,
      length: key.length,
    });
  }
  if (algorithm === '3DES') {
    if (sameDesKey(key, 0, 8) || sameDesKey(key, 8, 16)) {
      throw new CardStateError('KEY_INVALID', 'weak 3DES key: two adjacent DES keys are equal (single DES)', {
        algorithm,
      });
    }
  }
}

/** Encrypts whole blocks with the management key (ECB, no padding). */
export function encryptBlocks(
  algorithm: ManagementKeyAlgorithm,
  key: Uint8Array,
  data: Uint8Array,
): Uint8Array {
  return run(algorithm, key, data, true);
}

/** Decrypts whole blocks with the management key (ECB, no padding). */
export function decryptBlocks(
  algorithm: ManagementKeyAlgorithm,
  key: Uint8Array,
  data: Uint8Array,
): Uint8Array {
  return run(algorithm, key, data, false);
}

function run(
  algorithm: ManagementKeyAlgorithm,
  key: Uint8Array,
  data: Uint8Array,
  encrypt: boolean,
): Uint8Array {
  validateManagementKey(algorithm, key);
  const spec = specOf(algorithm);
  if (
    data.length === 0 ||
    data.length % spec.blockBytes !== 0 ||
    data.length > MAX_MANAGEMENT_CIPHER_INPUT_BYTES
  ) {
    throw new CardStateError('INPUT_LENGTH', 'cipher input must be whole blocks', {
      algorithm,
      block: spec.blockBytes,
      length: data.length,
    });
  }
  const c = encrypt ? createCipheriv(spec.cipher, key, null) : createDecipheriv(spec.cipher, key, null);
  c.setAutoPadding(false);
  const out = Buffer.concat([c.update(data), c.final()]);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

function specOf(algorithm: ManagementKeyAlgorithm): CipherSpec {
  const spec = (MANAGEMENT_KEY_CIPHERS as Record<string, CipherSpec | undefined>)[algorithm];
  if (!spec) {
    throw new CardStateError('UNSUPPORTED_ALGORITHM', 'unsupported management key algorithm', {
      algorithm: String(algorithm),
    });
  }
  return spec;
}

/** Whether the DES keys at `a` and `b` (8 bytes each) are equal, ignoring parity bits. */
function sameDesKey(key: Uint8Array, a: number, b: number): boolean {
  let diff = 0;
  for (let i = 0; i < 8; i++) diff |= (key[a + i]! ^ key[b + i]!) & 0xfe;
  return diff === 0;
}
