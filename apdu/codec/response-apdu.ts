import type { StatusWord } from './status-words.js';

/** A response APDU: body then SW1 SW2 (ISO/IEC 7816-4 section 5.1). */
export interface ResponseApdu {
  readonly data: Uint8Array;
  readonly sw: StatusWord;
}

export function encodeResponseApdu(data: Uint8Array, sw: StatusWord): Uint8Array {
  const out = new Uint8Array(data.length + 2);
  out.set(data, 0);
  out[data.length] = (sw >> 8) & 0xff;
  out[data.length + 1] = sw & 0xff;
  return out;
}

/** Splits a response; a response shorter than two bytes is not a response and throws RangeError. */
export function parseResponseApdu(bytes: Uint8Array): ResponseApdu {
  if (bytes.length < 2) throw new RangeError(`response APDU of ${bytes.length} bytes has no status word`);
  const n = bytes.length;
  return { data: bytes.slice(0, n - 2), sw: (bytes[n - 2]! << 8) | bytes[n - 1]! };
}

export function statusOnly(sw: StatusWord): Uint8Array {
  return encodeResponseApdu(new Uint8Array(0), sw);
}
