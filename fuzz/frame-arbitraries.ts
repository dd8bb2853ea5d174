/**
 * fast-check generators of valid protocol version 1 frames, one per frame type, used by the codec's
 * round-trip and mutation tests.
 */
import fc from 'fast-check';
import {
  CARD_CHANGE,
  DEVICE_STATUS,
  FRAME_FLAG,
  FRAME_TYPE,
  MAX_ACCESS_TOKEN_BYTES,
  MAX_CARDS_LISTED,
  MAX_DEVICE_KEY_BYTES,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_FRAME_BYTES,
  MAX_ID_BYTES,
  MAX_NAME_BYTES,
  MAX_OFFERED_VERSIONS,
  MAX_RESUME_TOKEN_BYTES,
  MAX_SIGNATURE_BYTES,
  NONCE_BYTES,
  U32_MAX,
  type CardChangeName,
  type DeviceStatusName,
  type Frame,
  type FrameType,
} from '../protocol/wire/index.js';

// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/g;

/** A string of at most `max` UTF-8 bytes (and at least `min`), any code points but controls. */
export function text(max: number, min = 0): fc.Arbitrary<string> {
  return fc
    .string({ unit: 'binary', minLength: min, maxLength: max })
    .map((s) => {
      let out = s.replace(CONTROL, '');
      while (Buffer.byteLength(out) > max) out = [...out].slice(0, -1).join('');
      return out;
    })
    .filter((s) => Buffer.byteLength(s) >= min);
}

const u32 = fc.integer({ min: 0, max: U32_MAX });
const bytes = (max: number, min = 0) => fc.uint8Array({ minLength: min, maxLength: max });
const id = text(MAX_ID_BYTES, 1);
const token = fc.string({
  unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  minLength: 1,
  maxLength: Math.min(MAX_ACCESS_TOKEN_BYTES, 1500),
});
const header = fc.record({ id: u32, flags: fc.constantFrom(0, FRAME_FLAG.RETRANSMIT) });

const payloads: { [T in FrameType]: fc.Arbitrary<object> } = {
  HELLO: fc.record({
    versions: fc.uniqueArray(fc.integer({ min: 1, max: 0xffff }), {
      minLength: 1,
      maxLength: MAX_OFFERED_VERSIONS,
    }),
    clientName: text(MAX_NAME_BYTES),
  }),
  HELLO_ACK: fc.record({
    version: fc.integer({ min: 1, max: 0xffff }),
    nonce: bytes(NONCE_BYTES, NONCE_BYTES),
    maxFrameBytes: fc.integer({ min: 6, max: MAX_FRAME_BYTES }),
    maxInFlight: fc.integer({ min: 1, max: 0xffff }),
    idleTimeoutSeconds: u32,
  }),
  AUTH: fc.record({
    accessToken: token,
    devicePublicKey: bytes(MAX_DEVICE_KEY_BYTES, 1),
    signature: bytes(MAX_SIGNATURE_BYTES, 1),
    deviceName: text(MAX_NAME_BYTES, 1),
  }),
  AUTH_OK: fc.record({
    userId: id,
    deviceId: id,
    deviceStatus: fc.constantFrom(...(Object.keys(DEVICE_STATUS) as DeviceStatusName[])),
    sessionId: id,
    resumeToken: bytes(MAX_RESUME_TOKEN_BYTES, 1),
    tokenExpiresAt: u32,
  }),
  RESUME: fc.record({
    sessionId: id,
    resumeToken: bytes(MAX_RESUME_TOKEN_BYTES, 1),
    lastAckedSequence: u32,
    signature: bytes(MAX_SIGNATURE_BYTES, 1),
  }),
  RESUME_OK: fc.record({
    sessionId: id,
    resumeToken: bytes(MAX_RESUME_TOKEN_BYTES, 1),
    lastReceivedSequence: u32,
    tokenExpiresAt: u32,
  }),
  RENEW_TOKEN: fc.record({ accessToken: token }),
  TOKEN_RENEWED: fc.record({ tokenExpiresAt: u32 }),
  LIST_CARDS: fc.constant({}),
  CARDS: fc.record({
    cards: fc.array(
      // fc.record builds objects without a prototype; the decoder returns plain ones.
      fc
        .record({ cardId: id, label: text(MAX_NAME_BYTES), openOn: text(MAX_NAME_BYTES) })
        .map((c) => ({ ...c })),
      { maxLength: Math.min(MAX_CARDS_LISTED, 20) },
    ),
  }),
  OPEN_CARD: fc.record({ cardId: id, takeOver: fc.boolean() }),
  CARD_OPENED: fc.record({ cardId: id, handle: u32, snapshot: bytes(3000), snapshotSignature: bytes(512) }),
  GET_SNAPSHOT: fc.record({ handle: u32 }),
  ENROLL: fc.record({ handle: u32 }),
  ENROLLED: fc.record({ handle: u32, certificates: fc.integer({ min: 1, max: 24 }) }),
  SNAPSHOT: fc.record({ handle: u32, snapshot: bytes(3000), snapshotSignature: bytes(512) }),
  CLOSE_CARD: fc.record({ handle: u32 }),
  CARD_CLOSED: fc.record({ handle: u32 }),
  APDU: fc.record({ handle: u32, command: bytes(600, 4) }),
  APDU_RESULT: fc.record({ handle: u32, response: bytes(600, 2) }),
  CARD_CHANGED: fc.record({
    cardId: id,
    change: fc.constantFrom(...(Object.keys(CARD_CHANGE) as CardChangeName[])),
  }),
  TAKEN_OVER: fc.record({ cardId: id, handle: u32, byDeviceName: text(MAX_NAME_BYTES) }),
  TOKEN_EXPIRING: fc.record({ tokenExpiresAt: u32 }),
  PING: fc.constant({}),
  PONG: fc.constant({}),
  ERROR: fc.oneof(
    fc.record({
      code: fc.stringMatching(/^[A-Z][A-Z0-9_]{0,63}$/).filter((c) => c !== 'ERR_CARD_TAKEN_OVER'),
      message: text(MAX_ERROR_MESSAGE_BYTES),
    }),
    // Only this code names a device; an empty name is left out when decoded.
    fc.record(
      {
        code: fc.constant('ERR_CARD_TAKEN_OVER'),
        message: text(MAX_ERROR_MESSAGE_BYTES),
        byDeviceName: text(MAX_NAME_BYTES, 1),
      },
      { requiredKeys: ['code', 'message'] },
    ),
  ),
};

/** A valid frame of the given type. */
export function frameOf(type: FrameType): fc.Arbitrary<Frame> {
  return fc.tuple(header, payloads[type]).map(([h, p]) => ({ type, ...h, ...p }) as Frame);
}

/** A valid frame of any type. */
export const anyFrame: fc.Arbitrary<Frame> = fc.oneof(
  ...(Object.keys(FRAME_TYPE) as FrameType[]).map((t) => frameOf(t)),
);
