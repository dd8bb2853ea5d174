import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  ApduError,
  apduErrorCode,
  parseCommandApdu,
  SW,
  swVerifyFailed,
  verifyTriesLeft,
} from '../../../apdu/codec/index.js';
import { CardlinkError } from '../../../protocol/errors.js';

describe('ApduError: one stable code per ISO 7816-4 status word class', () => {
  const CASES: readonly [number, string][] = [
    [swVerifyFailed(2), 'ERR_APDU_WARNING'],
    [0x6281, 'ERR_APDU_WARNING'],
    [0x6400, 'ERR_APDU_EXECUTION_ERROR'],
    [SW.MEMORY_FAILURE, 'ERR_APDU_EXECUTION_ERROR'],
    [0x6600, 'ERR_APDU_EXECUTION_ERROR'],
    [SW.WRONG_LENGTH, 'ERR_APDU_WRONG_LENGTH'],
    [SW.LOGICAL_CHANNEL_NOT_SUPPORTED, 'ERR_APDU_CLA_FUNCTION_NOT_SUPPORTED'],
    [SW.SECURE_MESSAGING_NOT_SUPPORTED, 'ERR_APDU_CLA_FUNCTION_NOT_SUPPORTED'],
    [SW.LAST_COMMAND_OF_CHAIN_EXPECTED, 'ERR_APDU_CLA_FUNCTION_NOT_SUPPORTED'],
    [SW.SECURITY_STATUS_NOT_SATISFIED, 'ERR_APDU_COMMAND_NOT_ALLOWED'],
    [SW.AUTH_METHOD_BLOCKED, 'ERR_APDU_COMMAND_NOT_ALLOWED'],
    [SW.CONDITIONS_NOT_SATISFIED, 'ERR_APDU_COMMAND_NOT_ALLOWED'],
    [SW.INCORRECT_DATA, 'ERR_APDU_WRONG_PARAMETERS'],
    [SW.FILE_NOT_FOUND, 'ERR_APDU_WRONG_PARAMETERS'],
    [SW.INCORRECT_P1P2, 'ERR_APDU_WRONG_PARAMETERS'],
    [SW.REFERENCE_NOT_FOUND, 'ERR_APDU_WRONG_PARAMETERS'],
    [SW.WRONG_P1P2, 'ERR_APDU_WRONG_PARAMETERS'],
    [SW.WRONG_LE_00 | 0x10, 'ERR_APDU_WRONG_LE'],
    [SW.INS_NOT_SUPPORTED, 'ERR_APDU_INS_NOT_SUPPORTED'],
    [SW.CLA_NOT_SUPPORTED, 'ERR_APDU_CLA_NOT_SUPPORTED'],
    [SW.NO_PRECISE_DIAGNOSIS, 'ERR_APDU_NO_PRECISE_DIAGNOSIS'],
    // Outside the warning and error classes: no card code throws these.
    [SW.OK, 'ERR_APDU_MALFORMED'],
    [0x6110, 'ERR_APDU_MALFORMED'],
    [0x9100, 'ERR_APDU_MALFORMED'],
  ];

  for (const [sw, code] of CASES) {
    const hex = sw.toString(16).toUpperCase().padStart(4, '0');
    it(`${hex} -> ${code}`, () => {
      assert.equal(apduErrorCode(sw), code);
      const e = new ApduError(sw, 'refused', { slot: 0x9a });
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, code);
      assert.equal(e.sw, sw);
      assert.equal(e.context.sw, sw);
      assert.equal(e.context.slot, 0x9a);
      assert.match(e.message, new RegExp(`^${hex} .*: refused$`));
    });
  }

  it('every named status word in the error classes gets the code of its SW1 group', () => {
    const bySw1 = new Map<number, string>();
    for (const sw of Object.values(SW)) {
      if (sw === SW.OK || (sw & 0xff00) === 0x6100) continue;
      const code = apduErrorCode(sw);
      assert.notEqual(code, 'ERR_APDU_MALFORMED', sw.toString(16));
      const sw1 = sw >> 8;
      const earlier = bySw1.get(sw1);
      if (earlier !== undefined) assert.equal(code, earlier, `SW1 ${sw1.toString(16)}`);
      bySw1.set(sw1, code);
    }
  });

  it('the codec throws them: a malformed length field is ERR_APDU_WRONG_LENGTH', () => {
    assert.throws(
      () => parseCommandApdu(Uint8Array.of(0x00, 0xa4, 0x04, 0x00, 0x05, 0xa0)),
      (e: unknown) =>
        e instanceof ApduError && e.code === 'ERR_APDU_WRONG_LENGTH' && e.sw === SW.WRONG_LENGTH,
    );
  });
});

describe('verifyTriesLeft', () => {
  it('reads x of 63Cx and nothing else', () => {
    for (let x = 0; x <= 15; x++) assert.equal(verifyTriesLeft(0x63c0 | x), x);
    assert.equal(verifyTriesLeft(swVerifyFailed(99)), 15);
    assert.equal(verifyTriesLeft(SW.OK), undefined);
    assert.equal(verifyTriesLeft(0x6300), undefined);
    assert.equal(verifyTriesLeft(SW.AUTH_METHOD_BLOCKED), undefined);
  });
});
