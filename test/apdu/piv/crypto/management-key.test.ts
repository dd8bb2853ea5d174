import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  decryptBlocks,
  encryptBlocks,
  managementKeyBlockSize,
  validateManagementKey,
} from '../../../../apdu/piv/crypto/management-key.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;

describe('management key block cipher', () => {
  it('3DES matches the SP 800-67 Rev. 1 Appendix B example', () => {
    const key = hex('0123456789ABCDEF 23456789ABCDEF01 456789ABCDEF0123');
    const plain = new TextEncoder().encode('The qufck brown fox jump'); // sic, as in the spec
    const cipher = hex('A826FD8CE53B855F CCE21C8112256FE6 68D5C05DD9B6B900');
    assert.equal(toHex(encryptBlocks('3DES', key, plain)), toHex(cipher));
    assert.deepEqual(decryptBlocks('3DES', key, cipher), plain);
  });

  it('AES-128/192/256 match FIPS 197 Appendix C', () => {
    const plain = hex('00112233445566778899aabbccddeeff');
    const cases = [
      ['AES128', 16, '69c4e0d86a7b0430d8cdb78070b4c55a'],
      ['AES192', 24, 'dda97ca4864cdfe06eaf70a0ec0d7191'],
      ['AES256', 32, '8ea2b7ca516745bfeafc49904b496089'],
    ] as const;
    for (const [alg, n, expected] of cases) {
      const key = Uint8Array.from({ length: n }, (_, i) => i);
      assert.equal(toHex(encryptBlocks(alg, key, plain)), expected, alg);
      assert.deepEqual(decryptBlocks(alg, key, hex(expected)), plain, alg);
    }
  });

  it('reports block sizes', () => {
    assert.equal(managementKeyBlockSize('3DES'), 8);
    assert.equal(managementKeyBlockSize('AES256'), 16);
  });

  it('refuses keys of the wrong length for the algorithm', () => {
    assert.throws(() => validateManagementKey('3DES', new Uint8Array(16)), reason('KEY_INVALID'));
    assert.throws(() => validateManagementKey('AES128', new Uint8Array(24)), reason('KEY_INVALID'));
    assert.throws(() => validateManagementKey('AES192', new Uint8Array(32)), reason('KEY_INVALID'));
    assert.throws(() => validateManagementKey('AES256', new Uint8Array(16)), reason('KEY_INVALID'));
    assert.throws(
      () => validateManagementKey('DES' as never, new Uint8Array(8)),
      reason('UNSUPPORTED_ALGORITHM'),
    );
  });

  it('refuses 3DES keys that degenerate to single DES, ignoring parity bits', () => {
    const k1 = hex('0123456789ABCDEF');
    const k2 = hex('23456789ABCDEF01');
    const k3 = hex('456789ABCDEF0123');
    const key = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));
    // the Yubico factory default 0102..08 x3 is K1 = K2 = K3
    assert.throws(
      () => validateManagementKey('3DES', hex('0102030405060708'.repeat(3))),
      reason('KEY_INVALID'),
    );
    assert.throws(() => validateManagementKey('3DES', key(k1, k1, k3)), reason('KEY_INVALID'));
    assert.throws(() => validateManagementKey('3DES', key(k1, k2, k2)), reason('KEY_INVALID'));
    const k1Parity = k1.map((b) => b ^ 0x01); // differs only in parity bits
    assert.throws(() => validateManagementKey('3DES', key(k1, k1Parity, k3)), reason('KEY_INVALID'));
    validateManagementKey('3DES', key(k1, k2, k3));
    validateManagementKey('3DES', key(k1, k2, k1)); // two-key 3DES (keying option 2) is fine
    // the weak-key check also guards the cipher calls
    assert.throws(() => encryptBlocks('3DES', key(k1, k1, k3), new Uint8Array(8)), reason('KEY_INVALID'));
  });

  it('refuses input that is not whole blocks', () => {
    const key = new Uint8Array(16).fill(7);
    for (const n of [0, 1, 8, 15, 17, 80]) {
      assert.throws(() => encryptBlocks('AES128', key, new Uint8Array(n)), reason('INPUT_LENGTH'), String(n));
      assert.throws(() => decryptBlocks('AES128', key, new Uint8Array(n)), reason('INPUT_LENGTH'), String(n));
    }
    assert.equal(encryptBlocks('AES128', key, new Uint8Array(32)).length, 32);
  });

  it('keeps key bytes out of error messages and context', () => {
    const key = hex('0102030405060708'.repeat(3));
    try {
      validateManagementKey('3DES', key);
      assert.fail('accepted');
    } catch (e) {
      const err = e as CardStateError;
      assert.doesNotMatch(err.message + JSON.stringify(err.context), /0102|010203/);
    }
  });
});
