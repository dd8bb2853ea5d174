import { ApduError } from './apdu-error.js';
import { SW } from './status-words.js';

/**
 * A command APDU (ISO/IEC 7816-4 section 5.1).
 *
 * `ne` is the maximum number of response bytes the host expects: `undefined` when Le is absent,
 * 256 for a short `Le = 00`, 65536 for an extended `Le = 0000`.
 */
export interface CommandApdu {
  readonly cla: number;
  readonly ins: number;
  readonly p1: number;
  readonly p2: number;
  readonly data: Uint8Array;
  readonly ne: number | undefined;
  /** True when the command used extended length fields. */
  readonly extended: boolean;
}

/** ISO 7816-4: bit 5 of an interindustry CLA (0x10) announces that more of the command follows. */
export const CLA_CHAINING_BIT = 0x10;
/** Largest Nc/Ne a short APDU can carry. */
export const SHORT_MAX = 256;
/** Largest Nc/Ne an extended APDU can carry. */
export const EXTENDED_MAX = 65536;

/** True when CLA marks a non-final part of a command chain. */
export function isChained(cmd: CommandApdu): boolean {
  return (cmd.cla & 0x80) === 0 && (cmd.cla & CLA_CHAINING_BIT) !== 0;
}

/**
 * Parses the four cases of ISO 7816-4 section 5.1, short and extended. Rejects anything
 * that is not exactly one of them with `6700` (wrong length); never reads past the buffer.
 */
export function parseCommandApdu(bytes: Uint8Array): CommandApdu {
  const n = bytes.length;
  if (n < 4)
    throw new ApduError(SW.WRONG_LENGTH, 'command APDU shorter than its 4-byte header', { length: n });
  const [cla, ins, p1, p2] = [bytes[0]!, bytes[1]!, bytes[2]!, bytes[3]!];
  const head = { cla, ins, p1, p2 };
  const empty = new Uint8Array(0);

  if (n === 4) return { ...head, data: empty, ne: undefined, extended: false }; // case 1
  const b0 = bytes[4]!;
  if (n === 5) return { ...head, data: empty, ne: b0 === 0 ? 256 : b0, extended: false }; // case 2S

  if (b0 !== 0) {
    // short case 3 or 4: Lc = b0
    const nc = b0;
    if (n === 5 + nc) return { ...head, data: bytes.slice(5, 5 + nc), ne: undefined, extended: false };
    if (n === 6 + nc) {
      const le = bytes[5 + nc]!;
      return { ...head, data: bytes.slice(5, 5 + nc), ne: le === 0 ? 256 : le, extended: false };
    }
    throw new ApduError(SW.WRONG_LENGTH, 'short Lc does not match the command length', { length: n, lc: nc });
  }

  // b0 === 0 and n > 5: extended length
  if (n === 7) {
    const le = (bytes[5]! << 8) | bytes[6]!;
    return { ...head, data: empty, ne: le === 0 ? EXTENDED_MAX : le, extended: true }; // case 2E
  }
  if (n < 7) throw new ApduError(SW.WRONG_LENGTH, 'truncated extended length field', { length: n });
  const nc = (bytes[5]! << 8) | bytes[6]!;
  if (nc === 0) throw new ApduError(SW.WRONG_LENGTH, 'extended Lc of zero', { length: n });
  if (n === 7 + nc) return { ...head, data: bytes.slice(7, 7 + nc), ne: undefined, extended: true }; // 3E
  if (n === 9 + nc) {
    const le = (bytes[7 + nc]! << 8) | bytes[8 + nc]!;
    return { ...head, data: bytes.slice(7, 7 + nc), ne: le === 0 ? EXTENDED_MAX : le, extended: true }; // 4E
  }
  throw new ApduError(SW.WRONG_LENGTH, 'extended Lc does not match the command length', {
    length: n,
    lc: nc,
  });
}

/**
 * Encodes a command, choosing short fields when both Nc and Ne fit and extended otherwise
 * (or when `extended` is requested).
 */
export function encodeCommandApdu(cmd: {
  cla: number;
  ins: number;
  p1: number;
  p2: number;
  data?: Uint8Array;
  ne?: number | undefined;
  extended?: boolean;
}): Uint8Array {
  const data = cmd.data ?? new Uint8Array(0);
  const nc = data.length;
  const ne = cmd.ne;
  if (nc > EXTENDED_MAX - 1) throw new RangeError(`command data of ${nc} bytes exceeds 65535`);
  if (ne !== undefined && (ne < 1 || ne > EXTENDED_MAX)) throw new RangeError(`Ne ${ne} outside 1..65536`);
  const extended = cmd.extended === true || nc > 255 || (ne !== undefined && ne > SHORT_MAX);
  const out: number[] = [cmd.cla & 0xff, cmd.ins & 0xff, cmd.p1 & 0xff, cmd.p2 & 0xff];
  if (!extended) {
    if (nc > 0) out.push(nc, ...data);
    if (ne !== undefined) out.push(ne === SHORT_MAX ? 0 : ne);
    return Uint8Array.from(out);
  }
  if (nc > 0) out.push(0, nc >> 8, nc & 0xff, ...data);
  if (ne !== undefined) {
    const le = ne === EXTENDED_MAX ? 0 : ne;
    if (nc === 0) out.push(0);
    out.push(le >> 8, le & 0xff);
  }
  return Uint8Array.from(out);
}
