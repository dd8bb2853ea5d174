/**
 * The frames of protocol version 1 (docs/protocol.md, "Frames"). Each frame is one WebSocket
 * binary message: a 6-byte header (type, flags, id) and a payload whose layout the type fixes.
 *
 * `id` is the request's sequence number: handshake frames (HELLO, AUTH, RESUME and their answers)
 * carry 0; after AUTH_OK or RESUME_OK every client request takes the next number of the session
 * (1, 2, 3, ...), and its response carries the same id. Pushes carry 0; an ERROR carries the id of
 * the request it answers, or 0 when it concerns the connection.
 */

/** Wire codes of the frame types. */
export const FRAME_TYPE = {
  HELLO: 0x01,
  HELLO_ACK: 0x02,
  AUTH: 0x03,
  AUTH_OK: 0x04,
  RESUME: 0x05,
  RESUME_OK: 0x06,
  RENEW_TOKEN: 0x07,
  TOKEN_RENEWED: 0x08,
  LIST_CARDS: 0x10,
  CARDS: 0x11,
  OPEN_CARD: 0x12,
  CARD_OPENED: 0x13,
  CLOSE_CARD: 0x14,
  CARD_CLOSED: 0x15,
  GET_SNAPSHOT: 0x16,
  SNAPSHOT: 0x17,
  ENROLL: 0x18,
  ENROLLED: 0x19,
  APDU: 0x20,
  APDU_RESULT: 0x21,
  CARD_CHANGED: 0x30,
  TAKEN_OVER: 0x31,
  TOKEN_EXPIRING: 0x32,
  PING: 0x40,
  PONG: 0x41,
  ERROR: 0x7f,
} as const;

export type FrameType = keyof typeof FRAME_TYPE;

/** Frame type for each wire code. */
export const FRAME_TYPE_BY_CODE: ReadonlyMap<number, FrameType> = new Map(
  (Object.entries(FRAME_TYPE) as [FrameType, number][]).map(([name, code]) => [code, name]),
);

/** Who sends each frame type. A receiver treats a frame from the wrong side as a protocol violation. */
export const FRAME_SENDER: Readonly<Record<FrameType, 'client' | 'server'>> = {
  HELLO: 'client',
  HELLO_ACK: 'server',
  AUTH: 'client',
  AUTH_OK: 'server',
  RESUME: 'client',
  RESUME_OK: 'server',
  RENEW_TOKEN: 'client',
  TOKEN_RENEWED: 'server',
  LIST_CARDS: 'client',
  CARDS: 'server',
  OPEN_CARD: 'client',
  CARD_OPENED: 'server',
  CLOSE_CARD: 'client',
  CARD_CLOSED: 'server',
  GET_SNAPSHOT: 'client',
  ENROLL: 'client',
  ENROLLED: 'server',
  SNAPSHOT: 'server',
  APDU: 'client',
  APDU_RESULT: 'server',
  CARD_CHANGED: 'server',
  TAKEN_OVER: 'server',
  TOKEN_EXPIRING: 'server',
  PING: 'client',
  PONG: 'server',
  ERROR: 'server',
};

/** Header flag bits. Bits not defined here must be 0 (a decoder refuses them). */
export const FRAME_FLAG = {
  /** The client sends this request again after RESUME; the server answers it at most once. */
  RETRANSMIT: 0x01,
  /**
   * APDU only: the card was reset (power cycle, warm reset) since the previous APDU; the server
   * resets the card's volatile state (PIN verified, chains) before this command. It lets the
   * daemon answer resets locally and tell the server with the next command, at no round trip.
   */
  RESET_CARD: 0x02,
} as const;

/** Every defined flag bit. */
export const FRAME_FLAGS_DEFINED = FRAME_FLAG.RETRANSMIT | FRAME_FLAG.RESET_CARD;

/** Approval state of the device in AUTH_OK. */
export const DEVICE_STATUS = { approved: 1, pending: 2 } as const;
export type DeviceStatusName = keyof typeof DEVICE_STATUS;

/** Why CARD_CHANGED was pushed. */
export const CARD_CHANGE = {
  /** The card's state changed outside this session (an administrator, another node); reload it. */
  updated: 1,
  /** The card no longer exists or is no longer the user's. */
  removed: 2,
} as const;
export type CardChangeName = keyof typeof CARD_CHANGE;

interface FrameHeader {
  /** Sequence number of the request (u32; 0 outside the session's sequence, see above). */
  id: number;
  /** Header flags (FRAME_FLAG); 0 unless a flag applies. */
  flags: number;
}

export interface HelloFrame extends FrameHeader {
  type: 'HELLO';
  /** Protocol versions the client speaks, each once (1..MAX_OFFERED_VERSIONS of them). */
  versions: number[];
  /** The client software and platform, for logs (`cardlink-daemon/0.1.0 linux`). */
  clientName: string;
}

export interface HelloAckFrame extends FrameHeader {
  type: 'HELLO_ACK';
  /** The version chosen from the offer; every later frame follows it. */
  version: number;
  /** NONCE_BYTES random bytes, fresh for this connection, signed by the device proof. */
  nonce: Uint8Array;
  /** The server's frame size limit (never above MAX_FRAME_BYTES). */
  maxFrameBytes: number;
  /** Requests the client may have in flight. */
  maxInFlight: number;
  /** Seconds without a request after which the server closes the connection (4007). */
  idleTimeoutSeconds: number;
}

export interface AuthFrame extends FrameHeader {
  type: 'AUTH';
  /** The OAuth access token (a JWS in compact form, visible ASCII). */
  accessToken: string;
  /** The device's public key, DER SubjectPublicKeyInfo (ECDSA P-256 in version 1). */
  devicePublicKey: Uint8Array;
  /** The device proof (docs/protocol.md, "Device proof"), purpose AUTH. */
  signature: Uint8Array;
  /** The device's name as the user knows it (shown to others in TAKEN_OVER). */
  deviceName: string;
}

export interface AuthOkFrame extends FrameHeader {
  type: 'AUTH_OK';
  userId: string;
  deviceId: string;
  deviceStatus: DeviceStatusName;
  sessionId: string;
  /** Secret for RESUME; replaced by every RESUME_OK. */
  resumeToken: Uint8Array;
  /** When the access token expires, Unix seconds. */
  tokenExpiresAt: number;
}

export interface ResumeFrame extends FrameHeader {
  type: 'RESUME';
  sessionId: string;
  resumeToken: Uint8Array;
  /** Highest sequence number up to which the client has every response. */
  lastAckedSequence: number;
  /** The device proof with purpose RESUME, by the key the session was opened with. */
  signature: Uint8Array;
}

export interface ResumeOkFrame extends FrameHeader {
  type: 'RESUME_OK';
  sessionId: string;
  /** The next resume token; the previous one no longer works. */
  resumeToken: Uint8Array;
  /** Highest sequence number the server has received; the client resends requests above it. */
  lastReceivedSequence: number;
  tokenExpiresAt: number;
}

export interface RenewTokenFrame extends FrameHeader {
  type: 'RENEW_TOKEN';
  /** A fresh access token for the same user (same issuer and subject). */
  accessToken: string;
}

export interface TokenRenewedFrame extends FrameHeader {
  type: 'TOKEN_RENEWED';
  tokenExpiresAt: number;
}

export interface ListCardsFrame extends FrameHeader {
  type: 'LIST_CARDS';
}

export interface CardEntry {
  cardId: string;
  label: string;
  /** Name of the device that has the card open, or '' when none has. */
  openOn: string;
}

export interface CardsFrame extends FrameHeader {
  type: 'CARDS';
  cards: CardEntry[];
}

export interface OpenCardFrame extends FrameHeader {
  type: 'OPEN_CARD';
  cardId: string;
  /** Take the card from another device that has it open (that device gets TAKEN_OVER). */
  takeOver: boolean;
}

export interface CardOpenedFrame extends FrameHeader {
  type: 'CARD_OPENED';
  cardId: string;
  /** Names the open card in APDU and CLOSE_CARD; unique within the session. */
  handle: number;
  /** The card's public snapshot (format defined by the card layer; opaque here). */
  snapshot: Uint8Array;
  /** The server's signature over the snapshot, bound to this session and card (snapshot-signature.ts). */
  snapshotSignature: Uint8Array;
}

export interface GetSnapshotFrame extends FrameHeader {
  type: 'GET_SNAPSHOT';
  handle: number;
}

export interface SnapshotFrame extends FrameHeader {
  type: 'SNAPSHOT';
  handle: number;
  /** The card's public snapshot now (apdu/piv/snapshot.ts), as in CARD_OPENED. */
  snapshot: Uint8Array;
  /** As in CARD_OPENED. */
  snapshotSignature: Uint8Array;
}

/**
 * Self-service enrollment of the open card under `handle` (docs/personalization.md): the server
 * issues the certificates of the card's profile, with the names from the user's validated access
 * token and record, if the profile allows it. The new contents arrive as CARD_CHANGED.
 */
export interface EnrollFrame extends FrameHeader {
  type: 'ENROLL';
  handle: number;
}

export interface EnrolledFrame extends FrameHeader {
  type: 'ENROLLED';
  handle: number;
  /** How many certificates were issued (1..MAX_ENROLLED_CERTIFICATES). */
  certificates: number;
}

/** Most certificates one enrollment issues: 9A, 9C, 9D, 9E and the 20 retired slots. */
export const MAX_ENROLLED_CERTIFICATES = 24;

export interface CloseCardFrame extends FrameHeader {
  type: 'CLOSE_CARD';
  handle: number;
}

export interface CardClosedFrame extends FrameHeader {
  type: 'CARD_CLOSED';
  handle: number;
}

export interface ApduFrame extends FrameHeader {
  type: 'APDU';
  handle: number;
  /** The command APDU, 4..MAX_APDU_BYTES bytes. */
  command: Uint8Array;
}

export interface ApduResultFrame extends FrameHeader {
  type: 'APDU_RESULT';
  handle: number;
  /** The response APDU (data and status word), 2..MAX_APDU_BYTES bytes. */
  response: Uint8Array;
}

export interface CardChangedFrame extends FrameHeader {
  type: 'CARD_CHANGED';
  cardId: string;
  change: CardChangeName;
}

export interface TakenOverFrame extends FrameHeader {
  type: 'TAKEN_OVER';
  cardId: string;
  /** The handle this session had; it is closed. */
  handle: number;
  /** Name of the device that took the card. */
  byDeviceName: string;
}

export interface TokenExpiringFrame extends FrameHeader {
  type: 'TOKEN_EXPIRING';
  /** When the session's access token expires, Unix seconds; send RENEW_TOKEN before. */
  tokenExpiresAt: number;
}

export interface PingFrame extends FrameHeader {
  type: 'PING';
}

export interface PongFrame extends FrameHeader {
  type: 'PONG';
}

export interface ErrorFrame extends FrameHeader {
  type: 'ERROR';
  /** A stable code (`ERR_CARD_NOT_FOUND`): upper-case letters, digits and `_`. */
  code: string;
  /** For people and logs; never secret. */
  message: string;
  /**
   * `ERR_CARD_TAKEN_OVER` only: name of the device that took the card, as in TAKEN_OVER (so a
   * client that missed the push still learns it without reading `message`). On the wire the field
   * is always there, empty for every other code; decoded, an empty one is left out.
   */
  byDeviceName?: string;
}

export type Frame =
  | HelloFrame
  | HelloAckFrame
  | AuthFrame
  | AuthOkFrame
  | ResumeFrame
  | ResumeOkFrame
  | RenewTokenFrame
  | TokenRenewedFrame
  | ListCardsFrame
  | CardsFrame
  | OpenCardFrame
  | CardOpenedFrame
  | GetSnapshotFrame
  | SnapshotFrame
  | EnrollFrame
  | EnrolledFrame
  | CloseCardFrame
  | CardClosedFrame
  | ApduFrame
  | ApduResultFrame
  | CardChangedFrame
  | TakenOverFrame
  | TokenExpiringFrame
  | PingFrame
  | PongFrame
  | ErrorFrame;

/** The frame of a given type. */
export type FrameOf<T extends FrameType> = Extract<Frame, { type: T }>;
