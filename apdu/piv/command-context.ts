import {
  ApduError,
  parseTlvList,
  SW,
  TlvError,
  type CommandApdu,
  type StatusWord,
  type Tlv,
} from '../codec/index.js';
import type { PivCardState } from './card-state.js';
import type { SecurityState } from './security-state.js';

/** What every instruction handler gets: the persistent state, the volatile security state, randomness. */
export interface CommandContext {
  readonly state: PivCardState;
  readonly security: SecurityState;
  /** `length` cryptographically random bytes (challenges, witnesses). */
  readonly random: (length: number) => Uint8Array;
}

/** A handler's answer before response chaining: body and status word. Errors are thrown as ApduError. */
export interface CommandResponse {
  readonly data: Uint8Array;
  readonly sw: StatusWord;
}

export type CommandHandler = (cmd: CommandApdu, ctx: CommandContext) => Promise<CommandResponse>;

const EMPTY = new Uint8Array(0);

/** `9000` with an optional body. */
export function ok(data: Uint8Array = EMPTY): CommandResponse {
  return { data, sw: SW.OK };
}

/** `6A86` unless P1 P2 equal `p1p2`. */
export function requireP1P2(cmd: CommandApdu, p1p2: number): void {
  if (((cmd.p1 << 8) | cmd.p2) !== p1p2) {
    throw new ApduError(SW.INCORRECT_P1P2, 'unexpected P1 P2', { p1: cmd.p1, p2: cmd.p2 });
  }
}

/** `6982` unless the management key (9B) has been authenticated since the last reset. */
export function requireManagementKey(ctx: CommandContext): void {
  if (!ctx.security.managementAuthenticated) {
    throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'management key authentication required');
  }
}

/** A BER-TLV list from command data; malformed encoding is `6A80` (incorrect data). */
export function parseDataTlvs(data: Uint8Array): Tlv[] {
  try {
    return parseTlvList(data);
  } catch (e) {
    if (e instanceof TlvError) throw new ApduError(SW.INCORRECT_DATA, 'malformed BER-TLV in command data');
    throw e;
  }
}

/**
 * The TLVs of a list keyed by tag, each tag at most once and all in `allowed`; anything else is
 * `6A80`.
 */
export function uniqueTlvs(list: readonly Tlv[], allowed: readonly number[]): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  for (const t of list) {
    if (!allowed.includes(t.tag)) throw new ApduError(SW.INCORRECT_DATA, 'unexpected tag', { tag: t.tag });
    if (out.has(t.tag)) throw new ApduError(SW.INCORRECT_DATA, 'repeated tag', { tag: t.tag });
    out.set(t.tag, t.value);
  }
  return out;
}

/** The tag number in a GET/PUT DATA tag list value (`5C len tag`): 1..3 bytes, no leading zero. */
export function tagFromBytes(bytes: Uint8Array): number {
  if (bytes.length < 1 || bytes.length > 3 || bytes[0] === 0) {
    throw new ApduError(SW.INCORRECT_DATA, 'tag list must name one tag of 1 to 3 bytes', {
      length: bytes.length,
    });
  }
  let tag = 0;
  for (const b of bytes) tag = tag * 256 + b;
  return tag;
}
