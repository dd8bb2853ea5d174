/**
 * The server's signature over a card snapshot (docs/protocol.md, "Snapshot signature"). The daemon
 * answers public commands from the snapshot without asking the server, so it checks that the
 * snapshot is the server's own, for this card and this session, before it answers anything from it.
 *
 * The signing key is the server's TLS key; the daemon verifies with the public key of the
 * certificate its TLS connection was made to. Transcript (all of it signed):
 *   "cardlink-snapshot-v1" 0x00 | u16 len | sessionId | u16 len | cardId | u32 len | snapshot
 * Signature: RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys) or ECDSA with SHA-256, DER (EC keys).
 */
import { sign, verify, type KeyObject } from 'node:crypto';

const LABEL = Buffer.from('cardlink-snapshot-v1\0', 'latin1');

export interface SnapshotBinding {
  readonly sessionId: string;
  readonly cardId: string;
  readonly snapshot: Uint8Array;
}

export function snapshotTranscript(b: SnapshotBinding): Buffer {
  const session = Buffer.from(b.sessionId, 'utf8');
  const card = Buffer.from(b.cardId, 'utf8');
  const head = Buffer.alloc(2 + session.length + 2 + card.length + 4);
  let o = head.writeUInt16BE(session.length, 0);
  o += session.copy(head, o);
  o = head.writeUInt16BE(card.length, o);
  o += card.copy(head, o);
  head.writeUInt32BE(b.snapshot.length, o);
  return Buffer.concat([LABEL, head, b.snapshot]);
}

export function signSnapshot(key: KeyObject, b: SnapshotBinding): Uint8Array {
  return new Uint8Array(sign('sha256', snapshotTranscript(b), key));
}

export function verifySnapshotSignature(key: KeyObject, b: SnapshotBinding, signature: Uint8Array): boolean {
  try {
    return verify('sha256', snapshotTranscript(b), key, signature);
  } catch {
    return false;
  }
}
