import { concatBytes, encodeTlv } from '../../codec/ber-tlv.js';

/**
 * A minimal DER writer (ITU-T X.690 section 10) for building X.509 structures. Definite minimal
 * lengths come from the BER-TLV codec, which already encodes them the DER way.
 */

/** Universal tags, ITU-T X.680 section 8.4 Table 1. */
export const DER_TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OBJECT_IDENTIFIER: 0x06,
  UTF8_STRING: 0x0c,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

export function derSequence(...items: Uint8Array[]): Uint8Array {
  return encodeTlv(DER_TAG.SEQUENCE, items);
}

export function derSet(...items: Uint8Array[]): Uint8Array {
  return encodeTlv(DER_TAG.SET, items);
}

/** `[n] EXPLICIT` context-specific constructed wrapper. */
export function derExplicit(tagNumber: number, inner: Uint8Array): Uint8Array {
  return encodeTlv(0xa0 | tagNumber, inner);
}

/** A non-negative INTEGER from its big-endian magnitude (leading zeros trimmed, 00 added when the top bit is set). */
export function derUnsignedInteger(magnitude: Uint8Array): Uint8Array {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let body = magnitude.subarray(i);
  if (body.length === 0) body = Uint8Array.of(0);
  if (body[0]! & 0x80) body = concatBytes([Uint8Array.of(0), body]);
  return encodeTlv(DER_TAG.INTEGER, body);
}

export function derSmallInteger(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0x7fffffff)
    throw new RangeError('integer out of range');
  const bytes = Uint8Array.of(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff);
  return derUnsignedInteger(bytes);
}

export function derBoolean(value: boolean): Uint8Array {
  return encodeTlv(DER_TAG.BOOLEAN, Uint8Array.of(value ? 0xff : 0x00));
}

export function derNull(): Uint8Array {
  return Uint8Array.of(DER_TAG.NULL, 0);
}

export function derOctetString(value: Uint8Array): Uint8Array {
  return encodeTlv(DER_TAG.OCTET_STRING, value);
}

/** BIT STRING of whole bytes (no unused bits). */
export function derBitString(value: Uint8Array): Uint8Array {
  return encodeTlv(DER_TAG.BIT_STRING, concatBytes([Uint8Array.of(0), value]));
}

/**
 * A BIT STRING of named bits (X.690 section 11.2.2: trailing zero bits are removed). `bits` are
 * the bit numbers that are set, bit 0 being the most significant bit of the first byte.
 */
export function derNamedBitString(bits: readonly number[]): Uint8Array {
  if (bits.length === 0) return encodeTlv(DER_TAG.BIT_STRING, Uint8Array.of(0));
  const highest = Math.max(...bits);
  const bytes = new Uint8Array((highest >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  const unused = 7 - (highest & 7);
  return encodeTlv(DER_TAG.BIT_STRING, concatBytes([Uint8Array.of(unused), bytes]));
}

export function derUtf8String(value: string): Uint8Array {
  return encodeTlv(DER_TAG.UTF8_STRING, new TextEncoder().encode(value));
}

/** OBJECT IDENTIFIER from dotted form (X.690 section 8.19). */
export function derOid(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map((a) => {
    if (!/^\d+$/.test(a)) throw new RangeError(`bad OID ${dotted}`);
    return BigInt(a);
  });
  if (arcs.length < 2 || arcs[0]! > 2n) throw new RangeError(`bad OID ${dotted}`);
  const out: number[] = [];
  const pushArc = (arc: bigint): void => {
    const chunk: number[] = [Number(arc & 0x7fn)];
    for (let v = arc >> 7n; v > 0n; v >>= 7n) chunk.unshift(Number(v & 0x7fn) | 0x80);
    out.push(...chunk);
  };
  pushArc(arcs[0]! * 40n + arcs[1]!);
  for (const arc of arcs.slice(2)) pushArc(arc);
  return encodeTlv(DER_TAG.OBJECT_IDENTIFIER, Uint8Array.from(out));
}

/**
 * An X.509 Time (RFC 5280 section 4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050, in
 * UTC with whole seconds and a Z.
 */
export function derTime(date: Date): Uint8Array {
  const iso = date.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const year = date.getUTCFullYear();
  if (year < 1950 || year > 9999) throw new RangeError('certificate time out of range');
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '') + 'Z'; // YYYYMMDDHHMMSSZ
  return year < 2050
    ? encodeTlv(DER_TAG.UTC_TIME, new TextEncoder().encode(digits.slice(2)))
    : encodeTlv(DER_TAG.GENERALIZED_TIME, new TextEncoder().encode(digits));
}
