import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  certificateObjectTag,
  decodeCertificateObject,
  encodeCertificateObject,
} from '../../../../apdu/piv/certificates/piv-certificate-object.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';

describe('PIV certificate objects', () => {
  it('encodes 70 cert 71 01 00 FE 00 and decodes it back', () => {
    const cert = new Uint8Array(300).fill(0xab);
    const obj = encodeCertificateObject(cert);
    assert.equal(Buffer.from(obj.subarray(0, 4)).toString('hex'), '7082012c');
    assert.equal(Buffer.from(obj.subarray(-5)).toString('hex'), '710100fe00');
    assert.deepEqual(decodeCertificateObject(obj), cert);
  });

  it('refuses objects without a certificate or with a compressed one', () => {
    const isInvalid = (e: unknown) => e instanceof CardStateError && e.reason === 'OBJECT_INVALID';
    assert.throws(() => decodeCertificateObject(Uint8Array.of(0x71, 1, 0, 0xfe, 0)), isInvalid);
    assert.throws(
      () => decodeCertificateObject(Uint8Array.of(0x70, 1, 0x30, 0x71, 1, 1, 0xfe, 0)),
      isInvalid,
    );
  });

  it('maps slots to their certificate objects (SP 800-73-4 Part 1 Table 3)', () => {
    assert.equal(certificateObjectTag(0x9a), 0x5fc105);
    assert.equal(certificateObjectTag(0x9c), 0x5fc10a);
    assert.equal(certificateObjectTag(0x9d), 0x5fc10b);
    assert.equal(certificateObjectTag(0x9e), 0x5fc101);
    assert.equal(certificateObjectTag(0x82), 0x5fc10d);
    assert.equal(certificateObjectTag(0x95), 0x5fc120);
    assert.equal(certificateObjectTag(0x9b), undefined);
    assert.equal(certificateObjectTag(0x96), undefined);
  });
});
