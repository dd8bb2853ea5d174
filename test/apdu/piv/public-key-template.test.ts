import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { publicKeyTemplateContent } from '../../../apdu/piv/public-key-template.js';

function spkiOf(key: KeyObject): Uint8Array {
  return new Uint8Array(key.export({ type: 'spki', format: 'der' }));
}

describe('public key template (7F49 content)', () => {
  for (const [algorithm, namedCurve, pointBytes] of [
    ['ECCP256', 'P-256', 65],
    ['ECCP384', 'P-384', 97],
  ] as const) {
    it(`${algorithm}: 86 holds the SPKI's uncompressed point`, () => {
      const { publicKey } = generateKeyPairSync('ec', { namedCurve });
      const spki = spkiOf(publicKey);
      const point = findTlv(parseTlvList(publicKeyTemplateContent(algorithm, spki)), 0x86)!.value;
      assert.equal(point.length, pointBytes);
      // The SPKI's BIT STRING ends with the same uncompressed point.
      assert.deepEqual(point, spki.subarray(spki.length - pointBytes));
    });
  }

  it('RSA2048: 81 and 82 rebuild the same public key', () => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const spki = spkiOf(publicKey);
    const tlvs = parseTlvList(publicKeyTemplateContent('RSA2048', spki));
    const b64u = (tag: number) => Buffer.from(findTlv(tlvs, tag)!.value).toString('base64url');
    const rebuilt = createPublicKey({ key: { kty: 'RSA', n: b64u(0x81), e: b64u(0x82) }, format: 'jwk' });
    assert.deepEqual(spkiOf(rebuilt), spki);
  });

  it('answers repeated keys from its cache with copies the caller may change', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = spkiOf(publicKey);
    const first = publicKeyTemplateContent('ECCP256', spki);
    const expected = Uint8Array.from(first);
    first.fill(0);
    assert.deepEqual(publicKeyTemplateContent('ECCP256', spki), expected);
  });

  it('refuses an SPKI of another key type, also after the SPKI was seen for its own', () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const spki = spkiOf(publicKey);
    publicKeyTemplateContent('ECCP256', spki);
    assert.throws(() => publicKeyTemplateContent('RSA2048', spki), /not an RSA key/);
  });
});
