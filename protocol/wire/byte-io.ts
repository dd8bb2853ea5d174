/**
 * Bounded big-endian readers and writers for the wire protocol's field types
 * (docs/protocol.md, "Field types"). A reader never reads past its buffer and a writer never
 * produces more than its limit; both throw FrameMalformedError instead.
 */
import { CardlinkError } from '../errors.js';

/** What was wrong with a frame; the session layer picks its close code from it. */
export type FrameFault =
  | 'truncated'
  | 'too_large'
  | 'trailing_bytes'
  | 'unknown_type'
  | 'bad_flags'
  | 'bad_value'
  | 'field_too_long';

export class FrameMalformedError extends CardlinkError {
  readonly fault: FrameFault;
  constructor(fault: FrameFault, message: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_FRAME_MALFORMED', message, { fault, ...context });
    this.name = 'FrameMalformedError';
    this.fault = fault;
  }
}

const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();
/** A UTF-16 surrogate without its partner: such a string has no UTF-8 form. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
/** C0 and C1 control characters and DEL: never part of a text field (names end up in UIs and logs). */
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTER = /[\u0000-\u001f\u007f-\u009f]/;

/** Reads fields from one frame. `field` names the field in error messages. */
export class ByteReader {
  private offset = 0;
  constructor(private readonly input: Uint8Array) {}

  get remaining(): number {
    return this.input.length - this.offset;
  }

  private take(n: number, field: string): Uint8Array {
    if (n > this.remaining) {
      throw new FrameMalformedError('truncated', `frame ends inside ${field}`, {
        field,
        offset: this.offset,
      });
    }
    const out = this.input.subarray(this.offset, this.offset + n);
    this.offset += n;
    return out;
  }

  u8(field: string): number {
    return this.take(1, field)[0]!;
  }

  u16(field: string): number {
    const b = this.take(2, field);
    return (b[0]! << 8) | b[1]!;
  }

  u32(field: string): number {
    const b = this.take(4, field);
    return ((b[0]! << 24) >>> 0) + ((b[1]! << 16) | (b[2]! << 8) | b[3]!);
  }

  bool(field: string): boolean {
    const v = this.u8(field);
    if (v > 1) throw new FrameMalformedError('bad_value', `${field} must be 0 or 1`, { field });
    return v === 1;
  }

  /** Exactly `n` bytes (a copy, so the frame's buffer can be reused). */
  fixed(n: number, field: string): Uint8Array {
    return this.take(n, field).slice();
  }

  /** u32 length, then that many bytes; `min`..`max` bytes. */
  bytes(field: string, max: number, min = 0): Uint8Array {
    const length = this.u32(field);
    checkLength(field, length, min, max);
    return this.take(length, field).slice();
  }

  /** u16 length, then that many bytes of UTF-8 without control characters; `min`..`max` bytes. */
  text(field: string, max: number, min = 0): string {
    const length = this.u16(field);
    checkLength(field, length, min, max);
    const raw = this.take(length, field);
    let value: string;
    try {
      value = utf8Decoder.decode(raw);
    } catch {
      throw new FrameMalformedError('bad_value', `${field} is not UTF-8`, { field });
    }
    if (CONTROL_CHARACTER.test(value)) {
      throw new FrameMalformedError('bad_value', `${field} contains a control character`, { field });
    }
    return value;
  }

  /** Refuses bytes left over after the last field. */
  end(): void {
    if (this.remaining !== 0) {
      throw new FrameMalformedError('trailing_bytes', `${this.remaining} bytes after the last field`, {
        offset: this.offset,
      });
    }
  }
}

function checkLength(field: string, length: number, min: number, max: number): void {
  if (length > max) {
    throw new FrameMalformedError('field_too_long', `${field} is ${length} bytes, at most ${max} allowed`, {
      field,
      length,
      max,
    });
  }
  if (length < min) {
    throw new FrameMalformedError('bad_value', `${field} is ${length} bytes, at least ${min} needed`, {
      field,
      length,
      min,
    });
  }
}

/** Collects fields of one frame and refuses values the reader would refuse. */
export class ByteWriter {
  private readonly parts: Uint8Array[] = [];
  private size = 0;
  constructor(private readonly maxBytes: number) {}

  private push(part: Uint8Array): void {
    this.size += part.length;
    if (this.size > this.maxBytes) {
      throw new FrameMalformedError('too_large', `frame would exceed ${this.maxBytes} bytes`, {
        max: this.maxBytes,
      });
    }
    this.parts.push(part);
  }

  u8(value: number, field: string): void {
    checkInteger(field, value, 0xff);
    this.push(Uint8Array.of(value));
  }

  u16(value: number, field: string): void {
    checkInteger(field, value, 0xffff);
    this.push(Uint8Array.of(value >>> 8, value & 0xff));
  }

  u32(value: number, field: string): void {
    checkInteger(field, value, 0xffff_ffff);
    this.push(Uint8Array.of(value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff));
  }

  bool(value: boolean, field: string): void {
    if (typeof value !== 'boolean')
      throw new FrameMalformedError('bad_value', `${field} must be a boolean`, { field });
    this.push(Uint8Array.of(value ? 1 : 0));
  }

  fixed(value: Uint8Array, n: number, field: string): void {
    if (!(value instanceof Uint8Array) || value.length !== n) {
      throw new FrameMalformedError('bad_value', `${field} must be ${n} bytes`, { field });
    }
    this.push(value.slice());
  }

  bytes(value: Uint8Array, field: string, max: number, min = 0): void {
    if (!(value instanceof Uint8Array))
      throw new FrameMalformedError('bad_value', `${field} must be bytes`, { field });
    checkLength(field, value.length, min, max);
    this.u32(value.length, field);
    this.push(value.slice());
  }

  text(value: string, field: string, max: number, min = 0): void {
    if (typeof value !== 'string' || LONE_SURROGATE.test(value) || CONTROL_CHARACTER.test(value)) {
      throw new FrameMalformedError(
        'bad_value',
        `${field} must be a well-formed string without control characters`,
        {
          field,
        },
      );
    }
    const encoded = utf8Encoder.encode(value);
    checkLength(field, encoded.length, min, max);
    this.u16(encoded.length, field);
    this.push(encoded);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.size);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

function checkInteger(field: string, value: number, max: number): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new FrameMalformedError('bad_value', `${field} must be an integer 0..${max}`, { field });
  }
}
