/**
 * The device proof's transcript (docs/protocol.md, "Device proof"): what a device signs with its
 * key in AUTH and RESUME, so that a token or resume token alone does not open a session.
 *
 *   transcript = "cardlink device proof v1" || 0x00
 *             || purpose (u8: 1 = AUTH, 2 = RESUME)
 *             || nonce (32 bytes, from HELLO_ACK of this connection)
 *             || SHA-256(access token or resume token) (32 bytes)
 *             || u16 length || server URL (UTF-8, WHATWG serialization)
 *             || protocol version (u16)
 *
 * - The nonce is fresh per connection: a proof cannot be replayed on another connection.
 * - The token hash ties the proof to this token: a stolen proof does not help with another token.
 * - The server URL is the one the client dialed: a server that relays a client's AUTH to another
 *   server presents a proof for the wrong URL.
 *
 * The signature is ECDSA P-256 with SHA-256 over the transcript, encoded as r || s (IEEE P1363,
 * 64 bytes), not DER. The server side verifies it in server/auth/device-proof.ts.
 */
import { createHash, sign, type KeyObject } from 'node:crypto';
import { CardlinkError } from '../errors.js';
import { NONCE_BYTES } from './limits.js';

/** Domain separation label at the start of every transcript. */
export const DEVICE_PROOF_LABEL = 'cardlink device proof v1';

/** What the proof is for; a proof for one purpose never verifies for the other. */
export const DEVICE_PROOF_PURPOSE = { auth: 1, resume: 2 } as const;
export type DeviceProofPurpose = keyof typeof DEVICE_PROOF_PURPOSE;

/** Bytes of a P-256 signature in r || s form. */
export const DEVICE_PROOF_SIGNATURE_BYTES = 64;

/** Bytes of a SHA-256 hash. */
export const SHA256_BYTES = 32;

/** Longest server URL in a transcript, in UTF-8 bytes. */
export const MAX_SERVER_URL_BYTES = 2048;

export interface DeviceProofInput {
  purpose: DeviceProofPurpose;
  /** The nonce of HELLO_ACK on this connection. */
  nonce: Uint8Array;
  /** SHA-256 of the access token (AUTH) or of the resume token (RESUME): see `secretHash`. */
  secretHash: Uint8Array;
  /** The session endpoint's URL (`wss://cards.example.com/v1/session`), canonicalized here. */
  serverUrl: string;
  /** The version chosen in HELLO_ACK. */
  protocolVersion: number;
}

/** SHA-256 of a token: of its UTF-8 bytes for a string (access token), of the bytes otherwise. */
export function secretHash(secret: string | Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(secret).digest());
}

function proofError(message: string, context: Record<string, string | number | boolean> = {}): CardlinkError {
  return new CardlinkError('ERR_DEVICE_PROOF_INVALID', message, context);
}

/**
 * The canonical form of a session URL: WHATWG serialization (lower-case scheme and host, default
 * port dropped), `ws:` or `wss:` only, no credentials, no fragment.
 */
export function canonicalServerUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw proofError('server URL is not a URL');
  }
  if (parsed.protocol !== 'wss:' && parsed.protocol !== 'ws:')
    throw proofError('server URL must be ws: or wss:');
  if (parsed.username || parsed.password) throw proofError('server URL must not carry credentials');
  parsed.hash = '';
  return parsed.href;
}

/** The bytes a device signs for `input`. */
export function deviceProofTranscript(input: DeviceProofInput): Uint8Array {
  if (!(input.nonce instanceof Uint8Array) || input.nonce.length !== NONCE_BYTES) {
    throw proofError(`nonce must be ${NONCE_BYTES} bytes`);
  }
  if (!(input.secretHash instanceof Uint8Array) || input.secretHash.length !== SHA256_BYTES) {
    throw proofError(`secretHash must be ${SHA256_BYTES} bytes`);
  }
  const purpose = Object.hasOwn(DEVICE_PROOF_PURPOSE, input.purpose)
    ? DEVICE_PROOF_PURPOSE[input.purpose]
    : undefined;
  if (purpose === undefined) throw proofError('unknown proof purpose');
  const v = input.protocolVersion;
  if (!Number.isInteger(v) || v < 1 || v > 0xffff) throw proofError('protocol version must be 1..65535');
  const url = Buffer.from(canonicalServerUrl(input.serverUrl), 'utf8');
  if (url.length > MAX_SERVER_URL_BYTES) throw proofError('server URL too long');
  const label = Buffer.from(DEVICE_PROOF_LABEL, 'ascii');
  const out = Buffer.alloc(label.length + 1 + 1 + NONCE_BYTES + SHA256_BYTES + 2 + url.length + 2);
  let at = label.copy(out, 0);
  out[at++] = 0x00;
  out[at++] = purpose;
  at += Buffer.from(input.nonce).copy(out, at);
  at += Buffer.from(input.secretHash).copy(out, at);
  at = out.writeUInt16BE(url.length, at);
  at += url.copy(out, at);
  out.writeUInt16BE(v, at);
  return new Uint8Array(out);
}

/**
 * Signs the transcript with the device's P-256 private key (the daemon's side; a key that never
 * leaves a keystore signs `deviceProofTranscript(input)` itself and converts to r || s).
 */
export function signDeviceProof(privateKey: KeyObject, input: DeviceProofInput): Uint8Array {
  const details = privateKey.asymmetricKeyDetails;
  if (
    privateKey.type !== 'private' ||
    privateKey.asymmetricKeyType !== 'ec' ||
    details?.namedCurve !== 'prime256v1'
  ) {
    throw proofError('the device key must be an ECDSA P-256 private key');
  }
  return new Uint8Array(
    sign('sha256', deviceProofTranscript(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }),
  );
}
