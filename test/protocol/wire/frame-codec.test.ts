import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeFrame,
  encodeFrame,
  FRAME_TYPE,
  FrameMalformedError,
  MAX_APDU_BYTES,
  MAX_FRAME_BYTES,
  MAX_NAME_BYTES,
  type Frame,
  type FrameType,
} from '../../../protocol/wire/index.js';
import { CardlinkError } from '../../../protocol/errors.js';
import { anyFrame, frameOf } from '../../../fuzz/frame-arbitraries.js';
import {
  mutatedFrameProperty,
  randomBytesProperty,
  roundTripVerdict,
  validHeaderProperty,
} from '../../../fuzz/frame-codec.js';
import type { FuzzProperty, Verdict } from '../../../fuzz/property.js';

/**
 * fast-check runs per fuzz property; override with CARDLINK_WIRE_FUZZ_CASES. The properties are
 * fuzz/frame-codec.ts's; `npm run fuzz` runs them with 1 000 000 cases each (bench/fuzz-depth.ts).
 */
const FUZZ_CASES = Number(process.env['CARDLINK_WIRE_FUZZ_CASES'] ?? 20_000);
/** fast-check seed; override with CARDLINK_WIRE_FUZZ_SEED to replay a failure. */
const SEED = process.env['CARDLINK_WIRE_FUZZ_SEED']
  ? Number(process.env['CARDLINK_WIRE_FUZZ_SEED'])
  : undefined;
const fuzz = (numRuns: number) => (SEED === undefined ? { numRuns } : { numRuns, seed: SEED });

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));

function malformed(fault?: string) {
  return (e: unknown) => {
    assert.ok(e instanceof FrameMalformedError, `expected FrameMalformedError, got ${String(e)}`);
    assert.ok(e instanceof CardlinkError);
    assert.equal(e.code, 'ERR_FRAME_MALFORMED');
    if (fault) assert.equal(e.fault, fault);
    return true;
  };
}

const expectOk = (verdict: Verdict) => {
  if (!verdict.ok) assert.fail(`${verdict.kind}: ${verdict.detail}`);
};
const holds = <T>(p: FuzzProperty<T>, numRuns: number) =>
  fc.assert(
    fc.property(p.arbitrary, (x) => expectOk(p.check(x))),
    fuzz(numRuns),
  );

/** Decodes, or returns the typed error; anything else thrown fails the test. */
function decodeOrError(bytes: Uint8Array): Frame | FrameMalformedError {
  try {
    return decodeFrame(bytes);
  } catch (e) {
    if (e instanceof FrameMalformedError && e.code === 'ERR_FRAME_MALFORMED') return e;
    throw e;
  }
}

describe('wire frame codec', () => {
  it('lays out the header as type, flags, id (big-endian) and the payload after it', () => {
    assert.deepEqual(encodeFrame({ type: 'PING', id: 0x01020304, flags: 0 }), hex('40 00 01020304'));
    assert.deepEqual(
      encodeFrame({ type: 'APDU', id: 7, flags: 1, handle: 2, command: hex('00A40400') }),
      hex('20 01 00000007  00000002  00000004 00A40400'),
    );
    assert.deepEqual(
      encodeFrame({ type: 'HELLO', id: 0, flags: 0, versions: [1, 2], clientName: 'd' }),
      hex('01 00 00000000  02 0001 0002  0001 64'),
    );
    assert.deepEqual(
      encodeFrame({ type: 'ERROR', id: 9, flags: 0, code: 'ERR_X', message: '' }),
      hex('7f 00 00000009  0005 4552525f58  0000  0000'),
    );
  });

  it('lays out ENROLL and ENROLLED, and refuses an ENROLLED with 0 or more than 24 certificates either way', () => {
    assert.deepEqual(
      encodeFrame({ type: 'ENROLL', id: 5, flags: 0, handle: 2 }),
      hex('18 00 00000005  00000002'),
    );
    const enrolled: Frame = { type: 'ENROLLED', id: 5, flags: 0, handle: 2, certificates: 4 };
    assert.deepEqual(encodeFrame(enrolled), hex('19 00 00000005  00000002  04'));
    assert.deepEqual(decodeFrame(encodeFrame(enrolled)), enrolled);
    for (const certificates of [0, 25, 1.5]) {
      assert.throws(() => encodeFrame({ ...enrolled, certificates } as Frame), FrameMalformedError);
    }
    for (const count of ['00', '19', 'ff']) {
      const refused = decodeOrError(hex(`19 00 00000005  00000002  ${count}`));
      assert.ok(refused instanceof FrameMalformedError, `certificates 0x${count} is refused`);
    }
  });

  it('carries the name of the device that took a card as a field of ERR_CARD_TAKEN_OVER', () => {
    const code = Buffer.from('ERR_CARD_TAKEN_OVER').toString('hex');
    const frame: Frame = {
      type: 'ERROR',
      id: 3,
      flags: 0,
      code: 'ERR_CARD_TAKEN_OVER',
      message: 'm',
      byDeviceName: 'desk',
    };
    const bytes = hex(`7f 00 00000003  0013 ${code}  0001 6d  0004 6465736b`);
    assert.deepEqual(encodeFrame(frame), bytes);
    assert.deepEqual(decodeFrame(bytes), frame);
    // No name (the server cannot tell): the field is empty on the wire and absent when decoded.
    const unnamed = hex(`7f 00 00000003  0013 ${code}  0001 6d  0000`);
    assert.deepEqual(decodeFrame(unnamed), {
      type: 'ERROR',
      id: 3,
      flags: 0,
      code: 'ERR_CARD_TAKEN_OVER',
      message: 'm',
    });
    // The name has the limits of every name: MAX_NAME_BYTES, no control characters.
    const named = (byDeviceName: string): Frame => ({ ...frame, byDeviceName });
    assert.ok(encodeFrame(named('x'.repeat(MAX_NAME_BYTES))).length > 0);
    assert.throws(() => encodeFrame(named('x'.repeat(MAX_NAME_BYTES + 1))), malformed('field_too_long'));
    assert.throws(() => encodeFrame(named('desk\u001b[2J')), malformed('bad_value'));
    assert.throws(
      () => decodeFrame(hex(`7f 00 00000003  0013 ${code}  0001 6d  0002 410a`)),
      malformed('bad_value'),
    );
    // Another code never names a device, in either direction.
    assert.throws(
      () =>
        encodeFrame({
          type: 'ERROR',
          id: 3,
          flags: 0,
          code: 'ERR_CARD_BUSY',
          message: '',
          byDeviceName: 'd',
        }),
      malformed('bad_value'),
    );
    assert.throws(
      () => decodeFrame(hex('7f 00 00000003  0005 4552525f58  0000  0001 64')),
      malformed('bad_value'),
    );
  });

  for (const type of Object.keys(FRAME_TYPE) as FrameType[]) {
    it(`round-trips ${type}`, () => {
      fc.assert(
        fc.property(frameOf(type), (frame) => expectOk(roundTripVerdict(frame))),
        fuzz(300),
      );
    });
  }

  it('carries the largest APDU and refuses one byte more', () => {
    const command = new Uint8Array(MAX_APDU_BYTES).fill(0xa5);
    const bytes = encodeFrame({ type: 'APDU', id: 1, flags: 0, handle: 1, command });
    assert.ok(bytes.length <= MAX_FRAME_BYTES);
    assert.equal((decodeFrame(bytes) as { command: Uint8Array }).command.length, MAX_APDU_BYTES);
    assert.throws(
      () =>
        encodeFrame({
          type: 'APDU',
          id: 1,
          flags: 0,
          handle: 1,
          command: new Uint8Array(MAX_APDU_BYTES + 1),
        }),
      malformed('field_too_long'),
    );
  });

  it('refuses frames above the limit before reading them, including a smaller negotiated limit', () => {
    assert.throws(() => decodeFrame(new Uint8Array(MAX_FRAME_BYTES + 1)), malformed('too_large'));
    const frame: Frame = { type: 'APDU', id: 1, flags: 0, handle: 1, command: new Uint8Array(2000) };
    const bytes = encodeFrame(frame);
    assert.throws(() => decodeFrame(bytes, { maxFrameBytes: 1024 }), malformed('too_large'));
    assert.throws(() => encodeFrame(frame, { maxFrameBytes: 1024 }), malformed('too_large'));
    assert.throws(() => decodeFrame(bytes, { maxFrameBytes: MAX_FRAME_BYTES + 1 }), RangeError);
  });

  it('refuses unknown types, undefined flags, truncation and trailing bytes', () => {
    assert.throws(() => decodeFrame(hex('')), malformed('truncated'));
    assert.throws(() => decodeFrame(hex('40 00 000000')), malformed('truncated'));
    assert.throws(() => decodeFrame(hex('99 00 00000000')), malformed('unknown_type'));
    assert.throws(() => decodeFrame(hex('40 04 00000000')), malformed('bad_flags'));
    assert.throws(() => decodeFrame(hex('40 00 00000000 00')), malformed('trailing_bytes'));
    assert.throws(
      () => decodeFrame(hex('20 00 00000001 00000002 00000005 00A40400')),
      malformed('truncated'),
    );
    // A length prefix far beyond the frame is refused without allocating or reading.
    assert.throws(
      () => decodeFrame(hex('20 00 00000001 00000002 ffffffff 00A40400')),
      malformed('field_too_long'),
    );
    assert.throws(
      () => decodeFrame(hex('20 00 00000001 00000002 0000ffff 00A40400')),
      malformed('truncated'),
    );
  });

  it('refuses values outside their fields', () => {
    // HELLO with no versions, a duplicate, version 0.
    assert.throws(() => decodeFrame(hex('01 00 00000000 00 0000')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('01 00 00000000 02 0001 0001 0000')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('01 00 00000000 01 0000 0000')), malformed('bad_value'));
    // Booleans are 0 or 1; enums are known values.
    assert.throws(() => decodeFrame(hex('12 00 00000001 0001 41 02')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('30 00 00000000 0001 41 09')), malformed('bad_value'));
    // Text: invalid UTF-8, a control character, an empty id.
    assert.throws(() => decodeFrame(hex('12 00 00000001 0002 c328 00')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('12 00 00000001 0002 410a 00')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('12 00 00000001 0000 00')), malformed('bad_value'));
    // A command APDU shorter than its header; an error code that is not a code.
    assert.throws(() => decodeFrame(hex('20 00 00000001 00000002 00000003 00A404')), malformed('bad_value'));
    assert.throws(() => decodeFrame(hex('7f 00 00000000 0003 6f6b21 0000')), malformed('bad_value'));
    // A token with a space (not a compact JWS).
    assert.throws(() => decodeFrame(hex('07 00 00000001 0003 612062')), malformed('bad_value'));
  });

  it('refuses to encode what it would refuse to decode', () => {
    const bad: unknown[] = [
      { type: 'NOPE', id: 0, flags: 0 },
      { type: 'PING', id: -1, flags: 0 },
      { type: 'PING', id: 2 ** 32, flags: 0 },
      { type: 'PING', id: 1.5, flags: 0 },
      { type: 'PING', id: 0, flags: 0x80 },
      { type: 'HELLO', id: 0, flags: 0, versions: [], clientName: '' },
      { type: 'HELLO', id: 0, flags: 0, versions: [1, 1], clientName: '' },
      { type: 'HELLO', id: 0, flags: 0, versions: [1], clientName: 'x'.repeat(MAX_NAME_BYTES + 1) },
      { type: 'HELLO', id: 0, flags: 0, versions: [1], clientName: 'tab\there' },
      { type: 'HELLO', id: 0, flags: 0, versions: [1], clientName: '\ud800' },
      {
        type: 'HELLO_ACK',
        id: 0,
        flags: 0,
        version: 1,
        nonce: new Uint8Array(31),
        maxFrameBytes: 1024,
        maxInFlight: 1,
        idleTimeoutSeconds: 1,
      },
      {
        type: 'HELLO_ACK',
        id: 0,
        flags: 0,
        version: 1,
        nonce: new Uint8Array(32),
        maxFrameBytes: MAX_FRAME_BYTES + 1,
        maxInFlight: 1,
        idleTimeoutSeconds: 1,
      },
      { type: 'RENEW_TOKEN', id: 1, flags: 0, accessToken: 'a b' },
      { type: 'RENEW_TOKEN', id: 1, flags: 0, accessToken: '' },
      { type: 'OPEN_CARD', id: 1, flags: 0, cardId: 'c', takeOver: 1 },
      { type: 'CARD_CHANGED', id: 0, flags: 0, cardId: 'c', change: 'exploded' },
      {
        type: 'AUTH_OK',
        id: 0,
        flags: 0,
        userId: 'u',
        deviceId: 'd',
        deviceStatus: 'toString',
        sessionId: 's',
        resumeToken: new Uint8Array(1),
        tokenExpiresAt: 0,
      },
      { type: 'ERROR', id: 0, flags: 0, code: 'lower', message: '' },
      { type: 'APDU', id: 1, flags: 0, handle: 1, command: [0, 0xa4, 4, 0] },
    ];
    for (const frame of bad)
      assert.throws(() => encodeFrame(frame as Frame), malformed(), JSON.stringify(frame));
  });

  it('never throws anything but the typed error on random bytes', () => {
    holds(randomBytesProperty, FUZZ_CASES);
  });

  it('never throws anything but the typed error on random bytes behind a valid header', () => {
    holds(validHeaderProperty, FUZZ_CASES);
  });

  it('decodes mutated valid frames to the typed error or to a frame that re-encodes to the same bytes', () => {
    holds(mutatedFrameProperty, Math.max(1000, FUZZ_CASES / 4));
  });

  it('rejects every proper prefix of a valid frame as truncated', () => {
    fc.assert(
      fc.property(anyFrame, (frame) => {
        const bytes = encodeFrame(frame);
        for (let n = 0; n < bytes.length; n++) {
          // Every field is length-prefixed or fixed, so no prefix is a frame of its own.
          assert.ok(decodeOrError(bytes.subarray(0, n)) instanceof FrameMalformedError);
        }
      }),
      fuzz(500),
    );
  });

  it('returns copies, not views of the input buffer', () => {
    const bytes = encodeFrame({ type: 'APDU', id: 1, flags: 0, handle: 1, command: hex('00A40400') });
    const frame = decodeFrame(bytes) as { command: Uint8Array };
    bytes.fill(0);
    assert.deepEqual(frame.command, hex('00A40400'));
  });
});
