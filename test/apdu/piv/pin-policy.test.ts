import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isTrivialPin, pinContentRefusal, type PinContentRules } from '../../../apdu/piv/index.js';

const bytes = (s: string) => new Uint8Array(Buffer.from(s, 'latin1'));
const RULES: PinContentRules = { minLength: 6, maxLength: 8, rejectTrivial: true };

describe('PIN policy content rules', () => {
  it('calls repeated digits and runs up or down by one trivial', () => {
    for (const pin of ['111111', '00000000', '123456', '12345678', '654321', '876543', '3456789', '9876543'])
      assert.equal(isTrivialPin(bytes(pin)), true, pin);
  });

  it('does not call other values trivial (no wrap-around, no mixed steps)', () => {
    for (const pin of ['890123', '123455', '135791', '112233', '121212', '97531864', '864213', '123465'])
      assert.equal(isTrivialPin(bytes(pin)), false, pin);
  });

  it('names the first rule a value breaks', () => {
    assert.equal(pinContentRefusal(RULES, bytes('12a456')), 'not-digits');
    assert.equal(pinContentRefusal(RULES, bytes('97531')), 'too-short');
    assert.equal(pinContentRefusal({ ...RULES, maxLength: 6 }, bytes('9753186')), 'too-long');
    assert.equal(pinContentRefusal(RULES, bytes('222222')), 'trivial');
    assert.equal(pinContentRefusal(RULES, bytes('97531864')), undefined);
  });

  it('lets trivial values through when the profile does not refuse them', () => {
    assert.equal(pinContentRefusal({ ...RULES, rejectTrivial: false }, bytes('123456')), undefined);
  });
});
