/**
 * Encoding and decoding of protocol version 1 frames (docs/protocol.md). Both directions are strict:
 * a value outside its field's range, an unknown type or flag, a truncated or oversized frame and
 * bytes after the last field all raise FrameMalformedError (`ERR_FRAME_MALFORMED`), and decoding never
 * reads past the given bytes. Decoded byte fields are copies, never views of the input.
 */
import { ByteReader, ByteWriter, FrameMalformedError } from './byte-io.js';
import {
  CARD_CHANGE,
  MAX_ENROLLED_CERTIFICATES,
  DEVICE_STATUS,
  FRAME_FLAGS_DEFINED,
  FRAME_TYPE,
  FRAME_TYPE_BY_CODE,
  type CardChangeName,
  type CardEntry,
  type DeviceStatusName,
  type Frame,
  type FrameOf,
  type FrameType,
} from './frames.js';
import {
  FRAME_HEADER_BYTES,
  MAX_ACCESS_TOKEN_BYTES,
  MAX_APDU_BYTES,
  MAX_CARDS_LISTED,
  MAX_DEVICE_KEY_BYTES,
  MAX_ERROR_CODE_BYTES,
  MAX_ERROR_MESSAGE_BYTES,
  MAX_FRAME_BYTES,
  MAX_ID_BYTES,
  MAX_NAME_BYTES,
  MAX_OFFERED_VERSIONS,
  MAX_RESUME_TOKEN_BYTES,
  MAX_SIGNATURE_BYTES,
  MAX_SNAPSHOT_BYTES,
  NONCE_BYTES,
} from './limits.js';

export interface FrameCodecOptions {
  /** Largest frame accepted or produced; at most MAX_FRAME_BYTES (the default). */
  maxFrameBytes?: number;
}

/** An access token is a compact JWS: visible ASCII only. */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;
/** Shape of an error code (`ERR_CARD_NOT_FOUND`). */
const ERROR_CODE = /^[A-Z][A-Z0-9_]*$/;
/** Smallest command APDU (CLA INS P1 P2) and response APDU (SW1 SW2). */
const MIN_COMMAND_APDU_BYTES = 4;
const MIN_RESPONSE_APDU_BYTES = 2;

type Payload<T extends FrameType> = Omit<FrameOf<T>, 'type' | 'id' | 'flags'>;

interface PayloadCodec<T extends FrameType> {
  encode(w: ByteWriter, f: FrameOf<T>): void;
  decode(r: ByteReader): Payload<T>;
}

const empty = <T extends FrameType>(): PayloadCodec<T> => ({
  encode: () => undefined,
  decode: () => ({}) as Payload<T>,
});

// Field helpers shared by several frame types.
const id = {
  write: (w: ByteWriter, v: string, field: string) => w.text(v, field, MAX_ID_BYTES, 1),
  read: (r: ByteReader, field: string) => r.text(field, MAX_ID_BYTES, 1),
};
const accessToken = {
  write(w: ByteWriter, v: string) {
    if (typeof v !== 'string' || !VISIBLE_ASCII.test(v)) {
      throw new FrameMalformedError('bad_value', 'accessToken must be visible ASCII', {
        field: 'accessToken',
      });
    }
    w.text(v, 'accessToken', MAX_ACCESS_TOKEN_BYTES, 1);
  },
  read(r: ByteReader) {
    const v = r.text('accessToken', MAX_ACCESS_TOKEN_BYTES, 1);
    if (!VISIBLE_ASCII.test(v)) {
      throw new FrameMalformedError('bad_value', 'accessToken must be visible ASCII', {
        field: 'accessToken',
      });
    }
    return v;
  },
};

function enumWrite<N extends string>(table: Record<N, number>, w: ByteWriter, v: N, field: string): void {
  const code = Object.prototype.hasOwnProperty.call(table, v) ? table[v] : undefined;
  if (code === undefined) throw new FrameMalformedError('bad_value', `unknown ${field}`, { field });
  w.u8(code, field);
}

function enumRead<N extends string>(table: Record<N, number>, r: ByteReader, field: string): N {
  const code = r.u8(field);
  for (const [name, value] of Object.entries(table) as [N, number][]) if (value === code) return name;
  throw new FrameMalformedError('bad_value', `unknown ${field} ${code}`, { field });
}

const CODECS: { [T in FrameType]: PayloadCodec<T> } = {
  HELLO: {
    encode(w, f) {
      if (!Array.isArray(f.versions)) throw new FrameMalformedError('bad_value', 'versions must be a list');
      checkVersionList(f.versions);
      w.u8(f.versions.length, 'versions');
      for (const v of f.versions) w.u16(v, 'version');
      w.text(f.clientName, 'clientName', MAX_NAME_BYTES);
    },
    decode(r) {
      const count = r.u8('versions');
      checkVersionCount(count);
      const versions: number[] = [];
      for (let i = 0; i < count; i++) versions.push(r.u16('version'));
      checkVersionList(versions);
      return { versions, clientName: r.text('clientName', MAX_NAME_BYTES) };
    },
  },
  HELLO_ACK: {
    encode(w, f) {
      w.u16(checkVersion(f.version), 'version');
      w.fixed(f.nonce, NONCE_BYTES, 'nonce');
      w.u32(checkFrameLimit(f.maxFrameBytes), 'maxFrameBytes');
      w.u16(checkPositive(f.maxInFlight, 'maxInFlight'), 'maxInFlight');
      w.u32(f.idleTimeoutSeconds, 'idleTimeoutSeconds');
    },
    decode(r) {
      return {
        version: checkVersion(r.u16('version')),
        nonce: r.fixed(NONCE_BYTES, 'nonce'),
        maxFrameBytes: checkFrameLimit(r.u32('maxFrameBytes')),
        maxInFlight: checkPositive(r.u16('maxInFlight'), 'maxInFlight'),
        idleTimeoutSeconds: r.u32('idleTimeoutSeconds'),
      };
    },
  },
  AUTH: {
    encode(w, f) {
      accessToken.write(w, f.accessToken);
      w.bytes(f.devicePublicKey, 'devicePublicKey', MAX_DEVICE_KEY_BYTES, 1);
      w.bytes(f.signature, 'signature', MAX_SIGNATURE_BYTES, 1);
      w.text(f.deviceName, 'deviceName', MAX_NAME_BYTES, 1);
    },
    decode(r) {
      return {
        accessToken: accessToken.read(r),
        devicePublicKey: r.bytes('devicePublicKey', MAX_DEVICE_KEY_BYTES, 1),
        signature: r.bytes('signature', MAX_SIGNATURE_BYTES, 1),
        deviceName: r.text('deviceName', MAX_NAME_BYTES, 1),
      };
    },
  },
  AUTH_OK: {
    encode(w, f) {
      id.write(w, f.userId, 'userId');
      id.write(w, f.deviceId, 'deviceId');
      enumWrite<DeviceStatusName>(DEVICE_STATUS, w, f.deviceStatus, 'deviceStatus');
      id.write(w, f.sessionId, 'sessionId');
      w.bytes(f.resumeToken, 'resumeToken', MAX_RESUME_TOKEN_BYTES, 1);
      w.u32(f.tokenExpiresAt, 'tokenExpiresAt');
    },
    decode(r) {
      return {
        userId: id.read(r, 'userId'),
        deviceId: id.read(r, 'deviceId'),
        deviceStatus: enumRead<DeviceStatusName>(DEVICE_STATUS, r, 'deviceStatus'),
        sessionId: id.read(r, 'sessionId'),
        resumeToken: r.bytes('resumeToken', MAX_RESUME_TOKEN_BYTES, 1),
        tokenExpiresAt: r.u32('tokenExpiresAt'),
      };
    },
  },
  RESUME: {
    encode(w, f) {
      id.write(w, f.sessionId, 'sessionId');
      w.bytes(f.resumeToken, 'resumeToken', MAX_RESUME_TOKEN_BYTES, 1);
      w.u32(f.lastAckedSequence, 'lastAckedSequence');
      w.bytes(f.signature, 'signature', MAX_SIGNATURE_BYTES, 1);
    },
    decode(r) {
      return {
        sessionId: id.read(r, 'sessionId'),
        resumeToken: r.bytes('resumeToken', MAX_RESUME_TOKEN_BYTES, 1),
        lastAckedSequence: r.u32('lastAckedSequence'),
        signature: r.bytes('signature', MAX_SIGNATURE_BYTES, 1),
      };
    },
  },
  RESUME_OK: {
    encode(w, f) {
      id.write(w, f.sessionId, 'sessionId');
      w.bytes(f.resumeToken, 'resumeToken', MAX_RESUME_TOKEN_BYTES, 1);
      w.u32(f.lastReceivedSequence, 'lastReceivedSequence');
      w.u32(f.tokenExpiresAt, 'tokenExpiresAt');
    },
    decode(r) {
      return {
        sessionId: id.read(r, 'sessionId'),
        resumeToken: r.bytes('resumeToken', MAX_RESUME_TOKEN_BYTES, 1),
        lastReceivedSequence: r.u32('lastReceivedSequence'),
        tokenExpiresAt: r.u32('tokenExpiresAt'),
      };
    },
  },
  RENEW_TOKEN: {
    encode(w, f) {
      accessToken.write(w, f.accessToken);
    },
    decode(r) {
      return { accessToken: accessToken.read(r) };
    },
  },
  TOKEN_RENEWED: {
    encode(w, f) {
      w.u32(f.tokenExpiresAt, 'tokenExpiresAt');
    },
    decode(r) {
      return { tokenExpiresAt: r.u32('tokenExpiresAt') };
    },
  },
  LIST_CARDS: empty(),
  CARDS: {
    encode(w, f) {
      if (!Array.isArray(f.cards) || f.cards.length > MAX_CARDS_LISTED) {
        throw new FrameMalformedError('field_too_long', `at most ${MAX_CARDS_LISTED} cards per frame`, {
          field: 'cards',
        });
      }
      w.u16(f.cards.length, 'cards');
      for (const c of f.cards) {
        id.write(w, c.cardId, 'cardId');
        w.text(c.label, 'label', MAX_NAME_BYTES);
        w.text(c.openOn, 'openOn', MAX_NAME_BYTES);
      }
    },
    decode(r) {
      const count = r.u16('cards');
      if (count > MAX_CARDS_LISTED) {
        throw new FrameMalformedError('field_too_long', `${count} cards, at most ${MAX_CARDS_LISTED}`, {
          field: 'cards',
        });
      }
      const cards: CardEntry[] = [];
      for (let i = 0; i < count; i++) {
        cards.push({
          cardId: id.read(r, 'cardId'),
          label: r.text('label', MAX_NAME_BYTES),
          openOn: r.text('openOn', MAX_NAME_BYTES),
        });
      }
      return { cards };
    },
  },
  OPEN_CARD: {
    encode(w, f) {
      id.write(w, f.cardId, 'cardId');
      w.bool(f.takeOver, 'takeOver');
    },
    decode(r) {
      return { cardId: id.read(r, 'cardId'), takeOver: r.bool('takeOver') };
    },
  },
  CARD_OPENED: {
    encode(w, f) {
      id.write(w, f.cardId, 'cardId');
      w.u32(f.handle, 'handle');
      w.bytes(f.snapshot, 'snapshot', MAX_SNAPSHOT_BYTES);
      w.bytes(f.snapshotSignature, 'snapshotSignature', MAX_SIGNATURE_BYTES);
    },
    decode(r) {
      return {
        cardId: id.read(r, 'cardId'),
        handle: r.u32('handle'),
        snapshot: r.bytes('snapshot', MAX_SNAPSHOT_BYTES),
        snapshotSignature: r.bytes('snapshotSignature', MAX_SIGNATURE_BYTES),
      };
    },
  },
  GET_SNAPSHOT: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
    },
    decode(r) {
      return { handle: r.u32('handle') };
    },
  },
  SNAPSHOT: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
      w.bytes(f.snapshot, 'snapshot', MAX_SNAPSHOT_BYTES);
      w.bytes(f.snapshotSignature, 'snapshotSignature', MAX_SIGNATURE_BYTES);
    },
    decode(r) {
      return {
        handle: r.u32('handle'),
        snapshot: r.bytes('snapshot', MAX_SNAPSHOT_BYTES),
        snapshotSignature: r.bytes('snapshotSignature', MAX_SIGNATURE_BYTES),
      };
    },
  },
  ENROLL: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
    },
    decode(r) {
      return { handle: r.u32('handle') };
    },
  },
  ENROLLED: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
      if (
        !Number.isInteger(f.certificates) ||
        f.certificates < 1 ||
        f.certificates > MAX_ENROLLED_CERTIFICATES
      )
        throw new FrameMalformedError('bad_value', `certificates must be 1..${MAX_ENROLLED_CERTIFICATES}`, {
          field: 'certificates',
        });
      w.u8(f.certificates, 'certificates');
    },
    decode(r) {
      const handle = r.u32('handle');
      const certificates = r.u8('certificates');
      if (certificates < 1 || certificates > MAX_ENROLLED_CERTIFICATES)
        throw new FrameMalformedError('bad_value', `certificates must be 1..${MAX_ENROLLED_CERTIFICATES}`, {
          field: 'certificates',
        });
      return { handle, certificates };
    },
  },
  CLOSE_CARD: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
    },
    decode(r) {
      return { handle: r.u32('handle') };
    },
  },
  CARD_CLOSED: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
    },
    decode(r) {
      return { handle: r.u32('handle') };
    },
  },
  APDU: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
      w.bytes(f.command, 'command', MAX_APDU_BYTES, MIN_COMMAND_APDU_BYTES);
    },
    decode(r) {
      return { handle: r.u32('handle'), command: r.bytes('command', MAX_APDU_BYTES, MIN_COMMAND_APDU_BYTES) };
    },
  },
  APDU_RESULT: {
    encode(w, f) {
      w.u32(f.handle, 'handle');
      w.bytes(f.response, 'response', MAX_APDU_BYTES, MIN_RESPONSE_APDU_BYTES);
    },
    decode(r) {
      return {
        handle: r.u32('handle'),
        response: r.bytes('response', MAX_APDU_BYTES, MIN_RESPONSE_APDU_BYTES),
      };
    },
  },
  CARD_CHANGED: {
    encode(w, f) {
      id.write(w, f.cardId, 'cardId');
      enumWrite<CardChangeName>(CARD_CHANGE, w, f.change, 'change');
    },
    decode(r) {
      return { cardId: id.read(r, 'cardId'), change: enumRead<CardChangeName>(CARD_CHANGE, r, 'change') };
    },
  },
  TAKEN_OVER: {
    encode(w, f) {
      id.write(w, f.cardId, 'cardId');
      w.u32(f.handle, 'handle');
      w.text(f.byDeviceName, 'byDeviceName', MAX_NAME_BYTES);
    },
    decode(r) {
      return {
        cardId: id.read(r, 'cardId'),
        handle: r.u32('handle'),
        byDeviceName: r.text('byDeviceName', MAX_NAME_BYTES),
      };
    },
  },
  TOKEN_EXPIRING: {
    encode(w, f) {
      w.u32(f.tokenExpiresAt, 'tokenExpiresAt');
    },
    decode(r) {
      return { tokenExpiresAt: r.u32('tokenExpiresAt') };
    },
  },
  PING: empty(),
  PONG: empty(),
  ERROR: {
    encode(w, f) {
      if (typeof f.code !== 'string' || !ERROR_CODE.test(f.code)) {
        throw new FrameMalformedError('bad_value', 'error code must match [A-Z][A-Z0-9_]*', {
          field: 'code',
        });
      }
      w.text(f.code, 'code', MAX_ERROR_CODE_BYTES, 1);
      w.text(f.message, 'message', MAX_ERROR_MESSAGE_BYTES);
      const byDeviceName = f.byDeviceName ?? '';
      checkTakenOverName(f.code, byDeviceName);
      w.text(byDeviceName, 'byDeviceName', MAX_NAME_BYTES);
    },
    decode(r) {
      const code = r.text('code', MAX_ERROR_CODE_BYTES, 1);
      if (!ERROR_CODE.test(code)) {
        throw new FrameMalformedError('bad_value', 'error code must match [A-Z][A-Z0-9_]*', {
          field: 'code',
        });
      }
      const message = r.text('message', MAX_ERROR_MESSAGE_BYTES);
      const byDeviceName = r.text('byDeviceName', MAX_NAME_BYTES);
      checkTakenOverName(code, byDeviceName);
      return byDeviceName === '' ? { code, message } : { code, message, byDeviceName };
    },
  },
};

/** An ERROR names a device only for ERR_CARD_TAKEN_OVER (the one that took the card). */
function checkTakenOverName(code: string, byDeviceName: string): void {
  if (byDeviceName !== '' && code !== 'ERR_CARD_TAKEN_OVER') {
    throw new FrameMalformedError('bad_value', 'only ERR_CARD_TAKEN_OVER names a device', {
      field: 'byDeviceName',
    });
  }
}

function checkVersion(v: number): number {
  if (!Number.isInteger(v) || v < 1 || v > 0xffff) {
    throw new FrameMalformedError('bad_value', 'protocol version must be 1..65535', { field: 'version' });
  }
  return v;
}

function checkVersionCount(count: number): void {
  if (count < 1 || count > MAX_OFFERED_VERSIONS) {
    throw new FrameMalformedError('bad_value', `HELLO must offer 1..${MAX_OFFERED_VERSIONS} versions`, {
      field: 'versions',
    });
  }
}

/** 1..MAX_OFFERED_VERSIONS distinct versions. */
function checkVersionList(versions: readonly number[]): void {
  checkVersionCount(versions.length);
  for (const v of versions) checkVersion(v);
  if (new Set(versions).size !== versions.length) {
    throw new FrameMalformedError('bad_value', 'HELLO offers a version twice', { field: 'versions' });
  }
}

function checkFrameLimit(v: number): number {
  if (!Number.isInteger(v) || v < FRAME_HEADER_BYTES || v > MAX_FRAME_BYTES) {
    throw new FrameMalformedError(
      'bad_value',
      `maxFrameBytes must be ${FRAME_HEADER_BYTES}..${MAX_FRAME_BYTES}`,
      {
        field: 'maxFrameBytes',
      },
    );
  }
  return v;
}

function checkPositive(v: number, field: string): number {
  if (!Number.isInteger(v) || v < 1)
    throw new FrameMalformedError('bad_value', `${field} must be at least 1`, { field });
  return v;
}

function frameLimit(options: FrameCodecOptions): number {
  const max = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  if (!Number.isInteger(max) || max < FRAME_HEADER_BYTES || max > MAX_FRAME_BYTES) {
    throw new RangeError(`maxFrameBytes must be ${FRAME_HEADER_BYTES}..${MAX_FRAME_BYTES}`);
  }
  return max;
}

/** The bytes of one frame (one WebSocket binary message). */
export function encodeFrame(frame: Frame, options: FrameCodecOptions = {}): Uint8Array {
  const max = frameLimit(options);
  const code =
    typeof frame?.type === 'string' && Object.hasOwn(FRAME_TYPE, frame.type)
      ? FRAME_TYPE[frame.type]
      : undefined;
  if (code === undefined) throw new FrameMalformedError('unknown_type', 'unknown frame type');
  const w = new ByteWriter(max);
  w.u8(code, 'type');
  if (!Number.isInteger(frame.flags) || (frame.flags & ~FRAME_FLAGS_DEFINED) !== 0) {
    throw new FrameMalformedError('bad_flags', 'undefined flag bits set', { frameType: frame.type });
  }
  w.u8(frame.flags, 'flags');
  w.u32(frame.id, 'id');
  (CODECS[frame.type] as PayloadCodec<FrameType>).encode(w, frame as never);
  return w.finish();
}

/**
 * The frame in `bytes`. Throws FrameMalformedError for anything that is not exactly one valid
 * frame (fault `too_large` when it exceeds the limit, before any field is read).
 */
export function decodeFrame(bytes: Uint8Array, options: FrameCodecOptions = {}): Frame {
  const max = frameLimit(options);
  if (!(bytes instanceof Uint8Array)) throw new FrameMalformedError('bad_value', 'a frame is bytes');
  if (bytes.length > max) {
    throw new FrameMalformedError('too_large', `frame of ${bytes.length} bytes exceeds ${max}`, {
      length: bytes.length,
      max,
    });
  }
  const r = new ByteReader(bytes);
  const code = r.u8('type');
  const type = FRAME_TYPE_BY_CODE.get(code);
  if (type === undefined)
    throw new FrameMalformedError('unknown_type', `unknown frame type 0x${code.toString(16)}`, { code });
  const flags = r.u8('flags');
  if ((flags & ~FRAME_FLAGS_DEFINED) !== 0) {
    throw new FrameMalformedError('bad_flags', `undefined flag bits 0x${flags.toString(16)}`, {
      frameType: type,
    });
  }
  const frameId = r.u32('id');
  let payload: object;
  try {
    payload = CODECS[type].decode(r);
    r.end();
  } catch (e) {
    if (e instanceof FrameMalformedError) {
      throw new FrameMalformedError(e.fault, `${type}: ${e.message}`, { ...e.context, frameType: type });
    }
    throw e;
  }
  return { type, id: frameId, flags, ...payload } as Frame;
}
