import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SW } from '../../../apdu/codec/index.js';
import type { CardStateErrorReason } from '../../../apdu/piv/crypto/errors.js';
import { statusForCardStateError, SW_NO_KEY_IN_SLOT } from '../../../apdu/piv/status-mapping.js';

describe('status words for refused card-state input', () => {
  it('an empty slot is 6A88, as SP 800-73-4 Part 2 section 3.2.4 answers a key reference without a key', () => {
    assert.equal(SW_NO_KEY_IN_SLOT, 0x6a88);
    assert.equal(statusForCardStateError('SLOT_EMPTY'), SW_NO_KEY_IN_SLOT);
    assert.notEqual(statusForCardStateError('SLOT_EMPTY'), SW.FILE_NOT_FOUND);
  });

  it('maps every reason to its status word', () => {
    const expected: Record<CardStateErrorReason, number> = {
      INPUT_LENGTH: 0x6a80,
      INPUT_RANGE: 0x6a80,
      EC_POINT_INVALID: 0x6a80,
      KEY_TYPE_MISMATCH: 0x6a80,
      UNSUPPORTED_ALGORITHM: 0x6a80,
      KEY_INVALID: 0x6a80,
      REFERENCE_DATA_LENGTH: 0x6a80,
      PIN_POLICY: 0x6a80,
      SLOT_INVALID: 0x6a86,
      SLOT_EMPTY: 0x6a88,
      OBJECT_INVALID: 0x6a84,
    };
    for (const [reason, sw] of Object.entries(expected)) {
      assert.equal(statusForCardStateError(reason as CardStateErrorReason), sw, reason);
    }
    assert.equal(statusForCardStateError('SOMETHING_ELSE' as CardStateErrorReason), 0x6f00);
  });
});
