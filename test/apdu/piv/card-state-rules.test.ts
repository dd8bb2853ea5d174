/**
 * The input checks every card state shares (the in-memory state and the server's stores take them
 * from here, so one test covers the rule for both).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import {
  checkDataObjectTag,
  checkDataObjectValue,
  checkKeyAlgorithm,
  checkKeySlot,
  checkPinPolicy,
  copySlotKeyInfo,
  importedPrivateKey,
  MAX_DATA_OBJECT_BYTES,
  slotKeyInfo,
} from '../../../apdu/piv/card-state-rules.js';
import { KEY_SLOTS, keySlotTitle, retiredSlotNumber } from '../../../apdu/piv/constants.js';
import { CardStateError } from '../../../apdu/piv/crypto/errors.js';
import {
  canonicalReferenceValue,
  checkReferenceKind,
  referenceCandidate,
} from '../../../apdu/piv/reference-data.js';

const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;
const bytes = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

describe('card state rules: keys', () => {
  it('accepts exactly the 24 PIV key slots', () => {
    for (let slot = 0; slot <= 0xff; slot++) {
      if (KEY_SLOTS.includes(slot)) checkKeySlot(slot);
      else assert.throws(() => checkKeySlot(slot), reason('SLOT_INVALID'), slot.toString(16));
    }
    assert.throws(() => checkKeySlot(0x9a + 0.5), reason('SLOT_INVALID'));
  });

  it('refuses unknown algorithms and PIN policies', () => {
    checkKeyAlgorithm('ECCP384');
    assert.throws(() => checkKeyAlgorithm('RSA1024' as never), reason('UNSUPPORTED_ALGORITHM'));
    checkPinPolicy('always');
    assert.throws(() => checkPinPolicy('sometimes' as never), reason('INPUT_RANGE'));
  });

  it('imports a PKCS#8 key only as the algorithm it is', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const der = new Uint8Array(privateKey.export({ type: 'pkcs8', format: 'der' }));
    assert.equal(importedPrivateKey(0x9c, 'ECCP256', der).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.throws(() => importedPrivateKey(0x9c, 'ECCP384', der), reason('KEY_TYPE_MISMATCH'));
    assert.throws(() => importedPrivateKey(0x9c, 'ECCP256', der.subarray(1)), reason('KEY_INVALID'));
    const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).privateKey;
    const k1Der = new Uint8Array(k1.export({ type: 'pkcs8', format: 'der' }));
    assert.throws(() => importedPrivateKey(0x9c, 'ECCP256', k1Der), reason('UNSUPPORTED_ALGORITHM'));
  });

  it('slot info is frozen and handed out as copies', () => {
    const spki = Uint8Array.of(1, 2, 3);
    const info = slotKeyInfo('ECCP256', spki, 'never', 'generated');
    spki[0] = 9;
    assert.equal(info.publicKeySpki[0], 1);
    assert.ok(Object.isFrozen(info));
    const copy = copySlotKeyInfo(info);
    copy.publicKeySpki[0] = 7;
    assert.equal(info.publicKeySpki[0], 1);
  });

  it('names slots as SP 800-73-4 Part 1 Table 4b does', () => {
    assert.equal(keySlotTitle(0x9a), 'PIV Authentication');
    assert.equal(keySlotTitle(0x9e), 'Card Authentication');
    assert.equal(keySlotTitle(0x82), 'Retired Key 1');
    assert.equal(keySlotTitle(0x95), 'Retired Key 20');
    assert.equal(retiredSlotNumber(0x8b), 10);
    assert.throws(() => retiredSlotNumber(0x9a), RangeError);
  });
});

describe('card state rules: data objects', () => {
  it('takes 1..3 byte tags and values up to MAX_DATA_OBJECT_BYTES', () => {
    checkDataObjectTag(0x7e);
    checkDataObjectTag(0x5fc102);
    for (const tag of [0, -1, 0x1000000, 1.5, NaN]) {
      assert.throws(() => checkDataObjectTag(tag), reason('OBJECT_INVALID'), String(tag));
    }
    checkDataObjectValue(0x7e, new Uint8Array(MAX_DATA_OBJECT_BYTES));
    assert.throws(
      () => checkDataObjectValue(0x7e, new Uint8Array(MAX_DATA_OBJECT_BYTES + 1)),
      reason('OBJECT_INVALID'),
    );
    assert.throws(() => checkDataObjectValue(0x7e, 'text' as never), reason('OBJECT_INVALID'));
  });
});

describe('card state rules: PIN and PUK', () => {
  it('strips the FF padding of a candidate and refuses more than 8 bytes', () => {
    assert.deepEqual(referenceCandidate(Uint8Array.of(0x31, 0x32, 0xff, 0xff)), Uint8Array.of(0x31, 0x32));
    assert.deepEqual(referenceCandidate(new Uint8Array(0)), new Uint8Array(0));
    assert.throws(() => referenceCandidate(new Uint8Array(9)), reason('REFERENCE_DATA_LENGTH'));
    assert.throws(() => referenceCandidate('12345678' as never), reason('REFERENCE_DATA_LENGTH'));
  });

  it('keeps a new value of 6..8 bytes without its padding', () => {
    assert.deepEqual(canonicalReferenceValue(bytes('123456\xff\xff')), bytes('123456'));
    assert.deepEqual(canonicalReferenceValue(bytes('12345678')), bytes('12345678'));
    assert.throws(() => canonicalReferenceValue(bytes('12345\xff\xff\xff')), reason('REFERENCE_DATA_LENGTH'));
    assert.throws(() => canonicalReferenceValue(bytes('123456789')), reason('REFERENCE_DATA_LENGTH'));
  });

  it('knows only the PIN and the PUK', () => {
    checkReferenceKind('pin');
    checkReferenceKind('puk');
    assert.throws(() => checkReferenceKind('global' as never), reason('INPUT_RANGE'));
  });
});
