import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  chooseProtocolVersion,
  encodeFrame,
  MAX_APDU_BYTES,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  SUPPORTED_PROTOCOL_VERSIONS,
} from '../../../protocol/wire/index.js';

describe('wire protocol versions and limits', () => {
  it('chooses the highest common version, or none', () => {
    assert.equal(chooseProtocolVersion([1]), PROTOCOL_VERSION);
    assert.equal(chooseProtocolVersion([3, 1, 2], [1, 2]), 2);
    assert.equal(chooseProtocolVersion([7, 9]), undefined);
    assert.equal(chooseProtocolVersion([]), undefined);
    assert.ok(SUPPORTED_PROTOCOL_VERSIONS.includes(PROTOCOL_VERSION));
  });
  it('fits the largest APDU frame in the largest frame', () => {
    const frame = encodeFrame({
      type: 'APDU_RESULT',
      id: 1,
      flags: 0,
      handle: 0,
      response: new Uint8Array(MAX_APDU_BYTES),
    });
    assert.ok(frame.length <= MAX_FRAME_BYTES);
  });
});
