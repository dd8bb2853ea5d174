/**
 * WebSocket close codes of the cardlink protocol (docs/protocol.md, "Closing"), from the range
 * RFC 6455 section 7.4.2 leaves to applications (4000-4999). A fatal condition closes the
 * connection with one of these; a request that merely fails gets an ERROR frame instead.
 *
 * Standard codes also used: 1000 (normal close), 1001 (server shutting down: reconnect with back-off),
 * 1009 (a message above MAX_FRAME_BYTES, sent by the WebSocket layer itself), 1011 (server fault).
 */
import type { FrameFault } from './byte-io.js';

/** What the client should do after a close. */
export type ReconnectAdvice =
  /** Reconnect (with back-off) and RESUME the session. */
  | 'reconnect'
  /** Get a fresh access token (refresh, or log in again) first, then reconnect. */
  | 'new-token'
  /** Do not reconnect on your own: a bug, a policy refusal or a person's decision; tell the user. */
  | 'stop';

interface CloseCodeInfo {
  readonly code: number;
  /** The close frame's reason text (ASCII, well under RFC 6455's 123 bytes). */
  readonly reason: string;
  readonly advice: ReconnectAdvice;
}

export const CLOSE = {
  /** A frame the decoder refused (`ERR_FRAME_MALFORMED`). */
  MALFORMED_FRAME: { code: 4000, reason: 'malformed frame', advice: 'stop' },
  /** A frame above the limit announced in HELLO_ACK. */
  FRAME_TOO_LARGE: { code: 4001, reason: 'frame too large', advice: 'stop' },
  /** HELLO offered no version the server speaks. */
  UNSUPPORTED_VERSION: { code: 4002, reason: 'unsupported protocol version', advice: 'stop' },
  /** The token, the device proof or the resume token was refused. */
  AUTH_FAILED: { code: 4003, reason: 'authentication failed', advice: 'new-token' },
  /** The session's access token expired without RENEW_TOKEN. */
  TOKEN_EXPIRED: { code: 4004, reason: 'access token expired', advice: 'new-token' },
  /** Another connection resumed this session (this connection is stale). */
  TAKEN_OVER: { code: 4005, reason: 'session taken over by another connection', advice: 'stop' },
  /** More requests in flight than HELLO_ACK allowed. */
  TOO_MANY_IN_FLIGHT: { code: 4006, reason: 'too many requests in flight', advice: 'stop' },
  /** No request for longer than HELLO_ACK's idle timeout. */
  IDLE_TIMEOUT: { code: 4007, reason: 'idle timeout', advice: 'reconnect' },
  /** A valid frame at the wrong time: wrong direction, before AUTH, out of sequence. */
  PROTOCOL_VIOLATION: { code: 4008, reason: 'protocol violation', advice: 'stop' },
  /** HELLO and AUTH (or RESUME) did not complete in time. */
  HANDSHAKE_TIMEOUT: { code: 4009, reason: 'handshake timeout', advice: 'reconnect' },
} as const satisfies Record<string, CloseCodeInfo>;

export type CloseName = keyof typeof CLOSE;

const BY_CODE: ReadonlyMap<number, CloseCodeInfo & { name: CloseName }> = new Map(
  (Object.entries(CLOSE) as [CloseName, CloseCodeInfo][]).map(([name, info]) => [
    info.code,
    { ...info, name },
  ]),
);

/** The cardlink meaning of a close code, or undefined for codes outside this table. */
export function describeCloseCode(code: number): (CloseCodeInfo & { name: CloseName }) | undefined {
  return BY_CODE.get(code);
}

/** The close for a frame the decoder refused. */
export function closeForFrameFault(fault: FrameFault): CloseCodeInfo {
  return fault === 'too_large' ? CLOSE.FRAME_TOO_LARGE : CLOSE.MALFORMED_FRAME;
}
