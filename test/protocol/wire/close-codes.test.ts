import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { CLOSE, closeForFrameFault, describeCloseCode } from '../../../protocol/wire/index.js';

describe('wire close codes', () => {
  it('are distinct application codes (4000-4999) with short ASCII reasons', () => {
    const codes = Object.values(CLOSE).map((c) => c.code);
    assert.equal(new Set(codes).size, codes.length);
    for (const c of Object.values(CLOSE)) {
      assert.ok(c.code >= 4000 && c.code <= 4999, String(c.code));
      // RFC 6455 section 5.5: a control frame's payload is at most 125 bytes, 2 of them the code.
      assert.ok(Buffer.byteLength(c.reason) <= 123 && /^[\x20-\x7e]+$/.test(c.reason), c.reason);
    }
  });
  it('cover every condition the protocol closes for', () => {
    assert.deepEqual(Object.keys(CLOSE).sort(), [
      'AUTH_FAILED',
      'FRAME_TOO_LARGE',
      'HANDSHAKE_TIMEOUT',
      'IDLE_TIMEOUT',
      'MALFORMED_FRAME',
      'PROTOCOL_VIOLATION',
      'TAKEN_OVER',
      'TOKEN_EXPIRED',
      'TOO_MANY_IN_FLIGHT',
      'UNSUPPORTED_VERSION',
    ]);
  });
  it('describe a code and map decoder faults', () => {
    assert.equal(describeCloseCode(4004)?.name, 'TOKEN_EXPIRED');
    assert.equal(describeCloseCode(4004)?.advice, 'new-token');
    assert.equal(describeCloseCode(1000), undefined);
    assert.equal(closeForFrameFault('too_large').code, 4001);
    assert.equal(closeForFrameFault('truncated').code, 4000);
  });
});
