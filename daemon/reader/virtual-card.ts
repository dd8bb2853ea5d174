/**
 * What the reader transports (our pcsc-lite driver bridge, vpcd) serve into pcscd.
 * The reader layer never parses what goes through `transmit`.
 */
export interface VirtualCard {
  /** Answer-to-reset bytes. */
  readonly atr: Uint8Array;
  /** Cold or warm reset (power on / reset): volatile security state is cleared. */
  reset(): void;
  /** One command APDU in, one response APDU out (data || SW1 SW2). Must never reject; but treat a rejection as SW 6F00. */
  transmit(apdu: Uint8Array): Promise<Uint8Array>;
}

/** Largest ATR, ISO/IEC 7816-3 §8.2.1 (pcsc-lite MAX_ATR_SIZE). */
export const MAX_ATR_BYTES = 33;

/** SW 6F00 "no precise diagnosis" (ISO/IEC 7816-4 §5.6), answered when a card's transmit fails. */
export const SW_NO_PRECISE_DIAGNOSIS: Uint8Array = Uint8Array.of(0x6f, 0x00);

/**
 * Whether `atr` can be announced to pcscd: 1..33 bytes starting with TS = 3B (direct convention)
 * or 3F (inverse convention), ISO/IEC 7816-3 §8.1.
 */
export function isPlausibleAtr(atr: Uint8Array): boolean {
  return atr.length >= 1 && atr.length <= MAX_ATR_BYTES && (atr[0] === 0x3b || atr[0] === 0x3f);
}

/**
 * Runs `card.transmit` under the interface's contract: a rejection, or an answer that is not a
 * response APDU of 2..maxResponse bytes, becomes SW 6F00.
 */
export async function transmitSafely(
  card: VirtualCard,
  apdu: Uint8Array,
  maxResponse: number,
): Promise<Uint8Array> {
  try {
    const response = await card.transmit(apdu);
    if (response instanceof Uint8Array && response.length >= 2 && response.length <= maxResponse)
      return response;
  } catch {
    // Falls through to 6F00: the contract says a card must not reject.
  }
  return SW_NO_PRECISE_DIAGNOSIS;
}
