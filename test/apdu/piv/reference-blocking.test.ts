import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { referenceBlocking } from '../../../apdu/piv/reference-blocking.js';

const hex = (s: string) => Buffer.from(s.replace(/ /g, ''), 'hex');
const FIELD = '3132333435363738';
const VERIFY_PIN = hex(`00 20 00 80 08 ${FIELD}`);
const VERIFY_PUK = hex(`00 20 00 81 08 ${FIELD}`);
const VERIFY_STATUS = hex('00 20 00 80');
const VERIFY_FORGET = hex('00 20 FF 80');
const CHANGE_PIN = hex(`00 24 00 80 10 ${FIELD}${FIELD}`);
const CHANGE_PUK = hex(`00 24 00 81 10 ${FIELD}${FIELD}`);
const RESET_PIN = hex(`00 2C 00 80 10 ${FIELD}${FIELD}`);

describe('what an answer tells about a blocked PIN or PUK', () => {
  it('VERIFY: 6983 and 63C0 blocked; 9000 and 63Cx usable', () => {
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('6983')), { pin: true });
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('63C0')), { pin: true });
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('63C2')), { pin: false });
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('9000')), { pin: false });
    assert.deepEqual(referenceBlocking(VERIFY_STATUS, hex('6983')), { pin: true }, 'the status probe too');
    assert.deepEqual(referenceBlocking(VERIFY_PUK, hex('6983')), { puk: true });
  });

  it('VERIFY with P1 FF forgets the verification and tells nothing', () => {
    assert.deepEqual(referenceBlocking(VERIFY_FORGET, hex('9000')), {});
  });

  it('CHANGE REFERENCE DATA speaks of the reference it changes', () => {
    assert.deepEqual(referenceBlocking(CHANGE_PIN, hex('6983')), { pin: true });
    assert.deepEqual(referenceBlocking(CHANGE_PUK, hex('63C1')), { puk: false });
    assert.deepEqual(referenceBlocking(CHANGE_PIN, hex('9000')), { pin: false });
  });

  it('RESET RETRY COUNTER checks the PUK; success unblocks the PIN', () => {
    assert.deepEqual(referenceBlocking(RESET_PIN, hex('9000')), { pin: false, puk: false });
    assert.deepEqual(referenceBlocking(RESET_PIN, hex('63C2')), { puk: false });
    assert.deepEqual(referenceBlocking(RESET_PIN, hex('6983')), { puk: true });
    assert.deepEqual(referenceBlocking(hex(`00 2C 00 81 10 ${FIELD}${FIELD}`), hex('6983')), {});
  });

  it('other status words, references and instructions tell nothing', () => {
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('6A80')), {});
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('6F00')), {});
    assert.deepEqual(referenceBlocking(hex(`00 20 00 9B 08 ${FIELD}`), hex('6983')), {});
    assert.deepEqual(referenceBlocking(hex('00 87 11 9A 00'), hex('6983')), {});
    assert.deepEqual(referenceBlocking(hex('00 20'), hex('6983')), {}, 'too short a command');
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('69')), {}, 'no status word');
  });

  it('the status word is the answer’s last two bytes, after any data', () => {
    assert.deepEqual(referenceBlocking(VERIFY_PIN, hex('0102 6983')), { pin: true });
  });
});
