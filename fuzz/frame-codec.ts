/**
 * Fuzz properties of the wire frame codec (protocol/wire/frame-codec.ts): whatever bytes arrive,
 * decodeFrame returns a frame or throws FrameMalformedError (`ERR_FRAME_MALFORMED`), nothing else;
 * a frame it returns re-encodes to exactly the bytes it came from; and every valid frame survives
 * encode → decode unchanged. Run by test/protocol/wire/frame-codec.test.ts (CI depth) and
 * bench/fuzz-depth.ts (≥ 1M cases each).
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import {
  decodeFrame,
  encodeFrame,
  FRAME_TYPE,
  FrameMalformedError,
  MAX_FRAME_BYTES,
  type Frame,
} from '../protocol/wire/index.js';
import { anyFrame } from './frame-arbitraries.js';
import { failure, hex, OK, thrown, type FuzzProperty, type Verdict } from './property.js';

/** Decodes `bytes`; a frame must encode back to the same bytes. */
export function decodeVerdict(bytes: Uint8Array): Verdict {
  let frame: Frame;
  try {
    frame = decodeFrame(bytes);
  } catch (error) {
    if (error instanceof FrameMalformedError && error.code === 'ERR_FRAME_MALFORMED') return OK;
    return thrown(`decodeFrame(${hex(bytes)})`, error);
  }
  let again: Uint8Array;
  try {
    again = encodeFrame(frame);
  } catch (error) {
    return thrown(`encodeFrame of the frame decoded from ${hex(bytes)}`, error);
  }
  return isDeepStrictEqual(again, bytes)
    ? OK
    : failure(`${hex(bytes)} decoded to a frame that encodes to ${hex(again)}`);
}

/** A valid frame: encodes within MAX_FRAME_BYTES and decodes to an equal frame. */
export function roundTripVerdict(frame: Frame): Verdict {
  let bytes: Uint8Array;
  try {
    bytes = encodeFrame(frame);
  } catch (error) {
    return thrown(`encodeFrame(${frame.type})`, error);
  }
  if (bytes.length > MAX_FRAME_BYTES) return failure(`${frame.type} encoded to ${bytes.length} bytes`);
  let back: Frame;
  try {
    back = decodeFrame(bytes);
  } catch (error) {
    return thrown(`decodeFrame of a valid ${frame.type} (${hex(bytes)})`, error);
  }
  return isDeepStrictEqual(back, frame) ? OK : failure(`${frame.type} did not round-trip: ${hex(bytes)}`);
}

export const randomBytesProperty: FuzzProperty<Uint8Array> = {
  name: 'random_bytes',
  description: 'up to 200 random bytes: FrameMalformedError, or a frame that re-encodes to the same bytes',
  arbitrary: fc.uint8Array({ maxLength: 200 }),
  check: decodeVerdict,
};

export const validHeaderProperty: FuzzProperty<Uint8Array> = {
  name: 'random_payload',
  description:
    "a valid header (every type, id 1) and up to 300 random payload bytes: the type's decoder " +
    'refuses them with FrameMalformedError or returns a frame that re-encodes to the same bytes',
  arbitrary: fc
    .tuple(fc.constantFrom(...Object.values(FRAME_TYPE)), fc.uint8Array({ maxLength: 300 }))
    .map(([code, rest]) => Uint8Array.from([code, 0, 0, 0, 0, 1, ...rest])),
  check: decodeVerdict,
};

const mutation = fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bits: fc.integer({ min: 1, max: 255 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('append' as const), extra: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
);

/** A valid frame's bytes after 1 to 3 mutations (bits flipped, cut short, bytes appended or inserted). */
export const mutatedFrameBytes: fc.Arbitrary<Uint8Array> = fc
  .tuple(anyFrame, fc.array(mutation, { minLength: 1, maxLength: 3 }))
  .map(([frame, mutations]) => {
    let bytes = encodeFrame(frame);
    for (const m of mutations) {
      const at = 'at' in m ? m.at % (bytes.length + 1) : 0;
      if (m.kind === 'flip' && bytes.length > 0) {
        bytes = bytes.slice();
        bytes[at % bytes.length]! ^= m.bits;
      } else if (m.kind === 'truncate') bytes = bytes.slice(0, at);
      else if (m.kind === 'append') bytes = Uint8Array.from([...bytes, ...m.extra]);
      else if (m.kind === 'insert')
        bytes = Uint8Array.from([...bytes.slice(0, at), m.byte, ...bytes.slice(at)]);
    }
    return bytes;
  });

export const mutatedFrameProperty: FuzzProperty<Uint8Array> = {
  name: 'mutated_frames',
  description:
    'a valid frame of any type with 1-3 mutations: FrameMalformedError, or a frame that re-encodes ' +
    'to the same bytes',
  arbitrary: mutatedFrameBytes,
  check: decodeVerdict,
};

export const roundTripProperty: FuzzProperty<Frame> = {
  name: 'round_trip',
  description: 'a valid frame of any type: encodes within MAX_FRAME_BYTES and decodes to an equal frame',
  arbitrary: anyFrame,
  check: roundTripVerdict,
};

/** Every frame codec property, in the order the depth run reports them. */
export const FRAME_CODEC_PROPERTIES: readonly FuzzProperty<Uint8Array | Frame>[] = [
  randomBytesProperty,
  validHeaderProperty,
  mutatedFrameProperty,
  roundTripProperty,
];
