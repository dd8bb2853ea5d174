/**
 * Versions, paths and limits of the cardlink wire protocol (docs/protocol.md). The daemon and the
 * card server both import these; a limit changes here and in the document together.
 */

/** The protocol version this code speaks. */
export const PROTOCOL_VERSION = 1;

/** Every version this code can speak, lowest first. */
export const SUPPORTED_PROTOCOL_VERSIONS: readonly number[] = [PROTOCOL_VERSION];

/** Path of the WebSocket endpoint; the version in the path changes only with an incompatible HELLO. */
export const SESSION_PATH = '/v1/session';

/** Bytes of the frame header: type u8, flags u8, id u32. */
export const FRAME_HEADER_BYTES = 6;

/**
 * Largest command or response APDU carried: pcsc-lite's MAX_BUFFER_SIZE_EXTENDED
 * (4 + 3 + 65536 + 3 + 2 = 65548 bytes, /usr/include/PCSC/pcsclite.h), so every APDU the reader
 * driver can hand the daemon fits in one frame.
 */
export const MAX_APDU_BYTES = 65_548;

/**
 * Largest frame (one WebSocket binary message), header included: the largest APDU frame
 * (6 + 4 + 4 + 65548 bytes) rounded up to 68 KiB. Also the `ws` server's `maxPayload`.
 */
export const MAX_FRAME_BYTES = 68 * 1024;

/** Requests a client may have sent without a response yet, per session; more closes the connection. */
export const MAX_IN_FLIGHT_REQUESTS = 16;

/** Bytes of the server nonce in HELLO_ACK that the device proof signs. */
export const NONCE_BYTES = 32;

/** Protocol versions a HELLO may offer. */
export const MAX_OFFERED_VERSIONS = 8;

/** Longest client name, device name or card label, in UTF-8 bytes. */
export const MAX_NAME_BYTES = 128;

/** Longest identifier (user, device, session, card), in UTF-8 bytes. */
export const MAX_ID_BYTES = 128;

/** Longest access token (a JWS in compact form), in bytes. */
export const MAX_ACCESS_TOKEN_BYTES = 16 * 1024;

/** Longest device public key (DER SubjectPublicKeyInfo); a P-256 key takes 91 bytes. */
export const MAX_DEVICE_KEY_BYTES = 1024;

/** Longest signature field; a P-256 device proof takes 64 bytes (r || s). */
export const MAX_SIGNATURE_BYTES = 512;

/** Longest resume token, in bytes. */
export const MAX_RESUME_TOKEN_BYTES = 64;

/** Longest card snapshot in CARD_OPENED, in bytes (bounded by the frame size anyway). */
export const MAX_SNAPSHOT_BYTES = 64 * 1024;

/** Most cards in one CARDS frame. */
export const MAX_CARDS_LISTED = 256;

/** Longest error code in an ERROR frame, in bytes. */
export const MAX_ERROR_CODE_BYTES = 64;

/** Longest error message in an ERROR frame, in UTF-8 bytes. */
export const MAX_ERROR_MESSAGE_BYTES = 512;

/** Largest u32 value: ids, handles, sequence numbers and times are u32. */
export const U32_MAX = 0xffff_ffff;

/**
 * The highest version both sides speak, or undefined when there is none.
 * `offered` comes from the client's HELLO, `supported` is the server's own list.
 */
export function chooseProtocolVersion(
  offered: readonly number[],
  supported: readonly number[] = SUPPORTED_PROTOCOL_VERSIONS,
): number | undefined {
  let best: number | undefined;
  for (const v of offered) if (supported.includes(v) && (best === undefined || v > best)) best = v;
  return best;
}
