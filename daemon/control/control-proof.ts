/**
 * The control handshake's proofs: each side shows it knows the secret of control.secret without
 * sending it (docs/daemon-control.md, "Handshake"). The daemon proves first, so a client that
 * reached something other than the daemon (a process squatting the socket or, on Windows, the pipe
 * name while the daemon is down) finds out before it sends anything worth having.
 *
 * proof = HMAC-SHA256(secret, "cardlink-control/2 <role>\n<client nonce>\n<daemon nonce>"), base64url;
 * the role label keeps a daemon's proof from passing as a client's.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Random bytes in each side's nonce (base64url: 43 characters). */
export const CONTROL_NONCE_BYTES = 32;
const NONCE_PATTERN = /^[A-Za-z0-9_-]{43}$/;

export type ControlProofRole = 'daemon' | 'client';

export function newControlNonce(): string {
  return randomBytes(CONTROL_NONCE_BYTES).toString('base64url');
}

export function isControlNonce(value: unknown): value is string {
  return typeof value === 'string' && NONCE_PATTERN.test(value);
}

export function controlProof(
  secret: string,
  role: ControlProofRole,
  clientNonce: string,
  daemonNonce: string,
): string {
  return createHmac('sha256', secret)
    .update(`cardlink-control/2 ${role}\n${clientNonce}\n${daemonNonce}`)
    .digest('base64url');
}

/** Whether `given` is the proof `role` owes for these nonces (compared in constant time). */
export function isControlProof(
  given: unknown,
  secret: string,
  role: ControlProofRole,
  clientNonce: string,
  daemonNonce: string,
): boolean {
  if (typeof given !== 'string') return false;
  const expected = Buffer.from(controlProof(secret, role, clientNonce, daemonNonce));
  const actual = Buffer.from(given);
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}
