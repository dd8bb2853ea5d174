/**
 * What Debian 12's vpcd needs in a slot that has no card: vpcd aborts pcscd when a slot answers GET ATR
 * with nothing (see vpcd-card-server.ts), so every unused vpcd slot holds this inert card. It has a
 * plain ATR with no application and refuses every command with `6D00` (instruction not supported),
 * so middleware probes it and moves on.
 */
import type { VirtualCard } from './virtual-card.js';

/** A minimal ATR (T=1, no historical bytes beyond a category indicator), TCK computed. */
const PLACEHOLDER_ATR = Uint8Array.of(0x3b, 0x81, 0x80, 0x01, 0x80, 0x80);

export class VpcdPlaceholderCard implements VirtualCard {
  readonly atr = PLACEHOLDER_ATR;
  reset(): void {}
  transmit(): Promise<Uint8Array> {
    return Promise.resolve(Uint8Array.of(0x6d, 0x00));
  }
}
