/**
 * The reader bridge protocol between the cardlink daemon and our pcsc-lite driver
 * (daemon/ifd-handler/bridge-protocol.h; specified in docs/reader-bridge.md). Keep the three in step.
 *
 * Every message: 4-byte big-endian length L of the rest, then 1 byte type, 1 byte slot, then L - 2
 * bytes of payload.
 */
import { CardlinkError } from '../../protocol/errors.js';

/** Protocol version sent in HELLO and expected in WELCOME. */
export const BRIDGE_VERSION = 1;
/** Bytes of the length prefix. */
export const LENGTH_PREFIX_BYTES = 4;
/** Bytes of type + slot, counted in the length. */
export const HEADER_AFTER_LENGTH = 2;
/**
 * Largest payload: a C-APDU or R-APDU up to pcsc-lite's MAX_BUFFER_SIZE_EXTENDED
 * (4 + 3 + 65536 + 3 + 2 = 65548 bytes, /usr/include/PCSC/pcsclite.h).
 */
export const MAX_PAYLOAD_BYTES = 65548;
/** Largest value of the length prefix. */
export const MAX_LENGTH = HEADER_AFTER_LENGTH + MAX_PAYLOAD_BYTES;

export const MessageType = {
  // client (daemon) -> handler
  HELLO: 0x01,
  INSERT: 0x02,
  REMOVE: 0x03,
  RESPONSE: 0x04,
  // handler -> client
  WELCOME: 0x81,
  POWER_ON: 0x82,
  POWER_OFF: 0x83,
  RESET: 0x84,
  APDU: 0x85,
  REMOVED: 0x86,
  GOODBYE: 0x87,
} as const;

/** Reasons carried by GOODBYE, the handler's last message before it closes the connection. */
export const GoodbyeReason: Readonly<Record<number, string>> = {
  1: 'malformed or unexpected message',
  2: 'unsupported protocol version',
  3: 'no response to an APDU in time',
  4: 'another client is connected',
  5: 'the reader is being closed by pcscd',
};

export interface BridgeMessage {
  type: number;
  slot: number;
  payload: Buffer;
}

/** One message as one buffer, so it goes out in one write. */
export function encodeMessage(type: number, slot: number, payload?: Uint8Array): Buffer {
  const len = payload?.length ?? 0;
  if (len > MAX_PAYLOAD_BYTES) {
    throw new CardlinkError('ERR_BRIDGE_PROTOCOL', 'bridge message payload too large', {
      bytes: len,
      max: MAX_PAYLOAD_BYTES,
    });
  }
  const buf = Buffer.allocUnsafe(LENGTH_PREFIX_BYTES + HEADER_AFTER_LENGTH + len);
  buf.writeUInt32BE(HEADER_AFTER_LENGTH + len, 0);
  buf[4] = type;
  buf[5] = slot;
  if (payload && len > 0) buf.set(payload, LENGTH_PREFIX_BYTES + HEADER_AFTER_LENGTH);
  return buf;
}

/**
 * Splits a byte stream into messages. A length outside [2, MAX_LENGTH] throws ERR_BRIDGE_PROTOCOL;
 * after that the stream is unusable. Payloads are copies the caller may keep.
 */
export class MessageDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  push(chunk: Buffer): BridgeMessage[] {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    const out: BridgeMessage[] = [];
    while (this.buffered >= LENGTH_PREFIX_BYTES) {
      const head = this.peek(LENGTH_PREFIX_BYTES);
      const len = head.readUInt32BE(0);
      if (len < HEADER_AFTER_LENGTH || len > MAX_LENGTH) {
        throw new CardlinkError('ERR_BRIDGE_PROTOCOL', 'bridge message with an invalid length', {
          length: len,
          max: MAX_LENGTH,
        });
      }
      if (this.buffered < LENGTH_PREFIX_BYTES + len) break;
      const msg = this.take(LENGTH_PREFIX_BYTES + len);
      out.push({
        type: msg[4]!,
        slot: msg[5]!,
        payload: Buffer.from(msg.subarray(LENGTH_PREFIX_BYTES + HEADER_AFTER_LENGTH)),
      });
    }
    return out;
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length < n) this.chunks = [Buffer.concat(this.chunks)];
    return this.chunks[0]!;
  }

  private take(n: number): Buffer {
    let first = this.chunks[0]!;
    if (first.length < n) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    const msg = first.subarray(0, n);
    if (first.length === n) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.buffered -= n;
    return msg;
  }
}
