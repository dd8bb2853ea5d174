import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  derNamedBitString,
  derOid,
  derTime,
  derUnsignedInteger,
  derSmallInteger,
} from '../../../../apdu/piv/certificates/der.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('DER writer', () => {
  it('encodes object identifiers (X.690 section 8.19)', () => {
    assert.equal(hex(derOid('1.2.840.113549.1.1.11')), '06092a864886f70d01010b');
    assert.equal(hex(derOid('1.2.840.10045.4.3.2')), '06082a8648ce3d040302');
    assert.equal(hex(derOid('2.5.29.15')), '0603551d0f');
    assert.equal(hex(derOid('2.999.3')), '0603883703');
    assert.throws(() => derOid('3.1'));
    assert.throws(() => derOid('1'));
  });

  it('encodes minimal non-negative integers', () => {
    assert.equal(hex(derUnsignedInteger(Uint8Array.of(0, 0, 0x7f))), '02017f');
    assert.equal(hex(derUnsignedInteger(Uint8Array.of(0x80))), '02020080');
    assert.equal(hex(derUnsignedInteger(Uint8Array.of(0, 0))), '020100');
    assert.equal(hex(derSmallInteger(2)), '020102');
    assert.equal(hex(derSmallInteger(256)), '02020100');
  });

  it('encodes named bit strings without trailing zero bits (X.690 section 11.2.2)', () => {
    assert.equal(hex(derNamedBitString([0])), '03020780'); // digitalSignature
    assert.equal(hex(derNamedBitString([0, 1])), '030206c0'); // + nonRepudiation
    assert.equal(hex(derNamedBitString([2])), '03020520'); // keyEncipherment
    assert.equal(hex(derNamedBitString([4])), '03020308'); // keyAgreement
    assert.equal(hex(derNamedBitString([8])), '0303070080'); // decipherOnly
    assert.equal(hex(derNamedBitString([])), '030100');
  });

  it('encodes UTCTime before 2050 and GeneralizedTime after (RFC 5280 section 4.1.2.5)', () => {
    assert.equal(
      Buffer.from(derTime(new Date('2049-12-31T23:59:59.999Z')))
        .toString('latin1')
        .slice(2),
      '491231235959Z',
    );
    assert.equal(
      Buffer.from(derTime(new Date('2050-01-01T00:00:00Z')))
        .toString('latin1')
        .slice(2),
      '20500101000000Z',
    );
    assert.equal(derTime(new Date('2050-01-01T00:00:00Z'))[0], 0x18);
  });
});
