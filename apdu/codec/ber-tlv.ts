import { CardlinkError } from '../../protocol/errors.js';

/**
 * Strict, bounded BER-TLV (ISO/IEC 7816-4 section 5.2, ISO/IEC 8825-1).
 *
 * - Tags of one to three bytes, kept as the big-endian number of their bytes (`0x5FC105`).
 * - Definite lengths only, in short form or 81/82/83 long form; indefinite length (80) and
 *   longer length fields are refused.
 * - A length that runs past the buffer is refused: no read ever leaves the input.
 */
export interface Tlv {
  readonly tag: number;
  readonly constructed: boolean;
  readonly value: Uint8Array;
}

/** Deepest nesting `parseTlvTree` follows before refusing the input. */
export const MAX_TLV_DEPTH = 8;
/** Longest tag, in bytes, cardlink accepts (PIV uses at most 3: `5F C1 05`). */
export const MAX_TAG_BYTES = 3;

export class TlvError extends CardlinkError {
  constructor(reason: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_TLV_MALFORMED', `malformed BER-TLV: ${reason}`, context);
    this.name = 'TlvError';
  }
}

interface Header {
  tag: number;
  constructed: boolean;
  valueStart: number;
  valueEnd: number;
}

function readHeader(bytes: Uint8Array, offset: number): Header {
  let p = offset;
  const first = bytes[p++];
  if (first === undefined) throw new TlvError('missing tag', { offset });
  if (first === 0x00 || first === 0xff) throw new TlvError('invalid first tag byte', { offset, byte: first });
  let tag = first;
  if ((first & 0x1f) === 0x1f) {
    // multi-byte tag: subsequent bytes have bit 8 set while more follow
    for (;;) {
      const b = bytes[p++];
      if (b === undefined) throw new TlvError('truncated tag', { offset });
      tag = tag * 256 + b;
      if (p - offset > MAX_TAG_BYTES) throw new TlvError('tag longer than 3 bytes', { offset });
      if ((b & 0x80) === 0) break;
    }
  }
  const lenByte = bytes[p++];
  if (lenByte === undefined) throw new TlvError('missing length', { offset, tag });
  let length: number;
  if (lenByte < 0x80) {
    length = lenByte;
  } else if (lenByte === 0x80) {
    throw new TlvError('indefinite length is not allowed', { offset, tag });
  } else {
    const count = lenByte & 0x7f;
    if (count > 3) throw new TlvError('length field longer than 3 bytes', { offset, tag });
    if (p + count > bytes.length) throw new TlvError('truncated length', { offset, tag });
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[p++]!;
  }
  const valueEnd = p + length;
  if (valueEnd > bytes.length) {
    throw new TlvError('length runs past the end of the data', { offset, tag, length });
  }
  return { tag, constructed: (first & 0x20) !== 0, valueStart: p, valueEnd };
}

/** Parses one TLV at `offset`; returns it and the offset just after it. */
export function parseTlvAt(bytes: Uint8Array, offset = 0): { tlv: Tlv; next: number } {
  const h = readHeader(bytes, offset);
  return {
    tlv: { tag: h.tag, constructed: h.constructed, value: bytes.subarray(h.valueStart, h.valueEnd) },
    next: h.valueEnd,
  };
}

/** Parses a sequence of TLVs that must fill `bytes` exactly. */
export function parseTlvList(bytes: Uint8Array): Tlv[] {
  const out: Tlv[] = [];
  let p = 0;
  while (p < bytes.length) {
    const { tlv, next } = parseTlvAt(bytes, p);
    out.push(tlv);
    p = next;
  }
  return out;
}

/** A TLV whose constructed children are parsed too (bounded by MAX_TLV_DEPTH). */
export interface TlvNode extends Tlv {
  readonly children: readonly TlvNode[];
}

export function parseTlvTree(bytes: Uint8Array, depth = 0): TlvNode[] {
  if (depth > MAX_TLV_DEPTH) throw new TlvError('nesting too deep', { depth });
  return parseTlvList(bytes).map((t) => ({
    ...t,
    children: t.constructed ? parseTlvTree(t.value, depth + 1) : [],
  }));
}

/** The first TLV with `tag`, or undefined. */
export function findTlv(list: readonly Tlv[], tag: number): Tlv | undefined {
  return list.find((t) => t.tag === tag);
}

/** The bytes of a tag number (`0x5FC105` -> `5F C1 05`). */
export function tagBytes(tag: number): Uint8Array {
  if (!Number.isInteger(tag) || tag <= 0 || tag > 0xffffff) throw new RangeError(`tag ${tag} out of range`);
  if (tag > 0xffff) return Uint8Array.of(tag >> 16, (tag >> 8) & 0xff, tag & 0xff);
  if (tag > 0xff) return Uint8Array.of(tag >> 8, tag & 0xff);
  return Uint8Array.of(tag);
}

/** Minimal definite length encoding. */
export function encodeLength(length: number): Uint8Array {
  if (!Number.isInteger(length) || length < 0 || length > 0xffffff) {
    throw new RangeError(`TLV length ${length} out of range`);
  }
  if (length < 0x80) return Uint8Array.of(length);
  if (length <= 0xff) return Uint8Array.of(0x81, length);
  if (length <= 0xffff) return Uint8Array.of(0x82, length >> 8, length & 0xff);
  return Uint8Array.of(0x83, length >> 16, (length >> 8) & 0xff, length & 0xff);
}

/** Encodes one TLV; `value` may be a list of already encoded children. */
export function encodeTlv(tag: number, value: Uint8Array | readonly Uint8Array[]): Uint8Array {
  const body = value instanceof Uint8Array ? value : concatBytes(value);
  return concatBytes([tagBytes(tag), encodeLength(body.length), body]);
}

export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
