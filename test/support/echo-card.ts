/**
 * A tiny VirtualCard for reader transport tests and benchmarks (not PIV):
 * - INS 20 (any CLA): increments a volatile counter and answers it (4 bytes, big-endian) || 9000;
 *   reset() sets it back to 0, like any volatile security state;
 * - INS 66: transmit rejects (the transports must answer 6F00);
 * - anything else: answers the whole command APDU || 9000 (6700 if that would not fit).
 */
import type { VirtualCard } from '../../daemon/reader/virtual-card.js';

/** INS of the counter command. */
export const ECHO_INS_COUNTER = 0x20;
/** INS that makes transmit reject. */
export const ECHO_INS_FAIL = 0x66;
/** Largest R-APDU the echo answers: extended Le 65536 + SW (ISO/IEC 7816-4 §5.1). */
export const ECHO_MAX_RESPONSE = 65538;

/**
 * ATR "3B 88 80 01" + 8 historical bytes + TCK: T=0 and T=1 offered, TCK = XOR of T0..last byte
 * (ISO/IEC 7816-3 §8.2.5).
 */
export function echoAtr(historical: string = 'cardlink'): Uint8Array {
  const hist = Buffer.from(historical.padEnd(8, ' ').slice(0, 8), 'latin1');
  const body = Uint8Array.from([0x88, 0x80, 0x01, ...hist]);
  const tck = body.reduce((x, b) => x ^ b, 0);
  return Uint8Array.from([0x3b, ...body, tck]);
}

export interface EchoCardOptions {
  atr?: Uint8Array;
  /** Delay before each answer, to test APDUs in flight. */
  delayMs?: number;
}

export class EchoCard implements VirtualCard {
  readonly atr: Uint8Array;
  delayMs: number;
  resetCount = 0;
  transmitCount = 0;
  private counter = 0;

  constructor(options: EchoCardOptions = {}) {
    this.atr = options.atr ?? echoAtr();
    this.delayMs = options.delayMs ?? 0;
  }

  reset(): void {
    this.resetCount++;
    this.counter = 0;
  }

  async transmit(apdu: Uint8Array): Promise<Uint8Array> {
    this.transmitCount++;
    // unref: a card left waiting must not keep a test process alive
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.delayMs).unref());
    const ins = apdu[1];
    if (apdu.length >= 4 && ins === ECHO_INS_COUNTER) {
      this.counter++;
      const out = new Uint8Array(6);
      new DataView(out.buffer).setUint32(0, this.counter);
      out[4] = 0x90;
      return out;
    }
    if (apdu.length >= 4 && ins === ECHO_INS_FAIL) throw new Error('echo card: asked to fail');
    if (apdu.length + 2 > ECHO_MAX_RESPONSE) return Uint8Array.of(0x67, 0x00);
    const out = new Uint8Array(apdu.length + 2);
    out.set(apdu);
    out[apdu.length] = 0x90;
    return out;
  }
}
