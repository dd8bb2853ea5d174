import { ApduError } from './apdu-error.js';
import { CLA_CHAINING_BIT, isChained, type CommandApdu } from './command-apdu.js';
import { encodeResponseApdu } from './response-apdu.js';
import { SW, swBytesRemaining, type StatusWord } from './status-words.js';

/** Largest command a chain may assemble; beyond it the chain is dropped with `6700`. */
export const MAX_CHAINED_COMMAND_BYTES = 16 * 1024;
/** ISO 7816-4 GET RESPONSE instruction. */
export const INS_GET_RESPONSE = 0xc0;

/**
 * Assembles ISO 7816-4 command chains (CLA bit 0x10, section 5.1.1.1).
 * Feed every command; it returns the whole command once the last part arrives.
 */
export class CommandChainAssembler {
  private pending: {
    cla: number;
    ins: number;
    p1: number;
    p2: number;
    parts: Uint8Array[];
    size: number;
  } | null = null;

  /** True while a chain is open. */
  get active(): boolean {
    return this.pending !== null;
  }

  reset(): void {
    this.pending = null;
  }

  /**
   * Returns `{ done: false }` for a non-final part (answer `9000`), or the assembled command.
   * A part whose header differs from the chain's start aborts the chain with `6883`.
   */
  feed(cmd: CommandApdu): { done: false } | { done: true; command: CommandApdu } {
    const cla = cmd.cla & ~CLA_CHAINING_BIT;
    const p = this.pending;
    if (p !== null && (p.cla !== cla || p.ins !== cmd.ins || p.p1 !== cmd.p1 || p.p2 !== cmd.p2)) {
      this.pending = null;
      throw new ApduError(SW.LAST_COMMAND_OF_CHAIN_EXPECTED, 'command chain interrupted by another command', {
        ins: cmd.ins,
      });
    }
    const size = (p?.size ?? 0) + cmd.data.length;
    if (size > MAX_CHAINED_COMMAND_BYTES) {
      this.pending = null;
      throw new ApduError(SW.WRONG_LENGTH, 'command chain exceeds the size limit', { size });
    }
    if (isChained(cmd)) {
      if (p === null) {
        this.pending = { cla, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, parts: [cmd.data], size };
      } else {
        p.parts.push(cmd.data);
        p.size = size;
      }
      return { done: false };
    }
    if (p === null) return { done: true, command: cmd };
    this.pending = null;
    const data = new Uint8Array(size);
    let o = 0;
    for (const part of [...p.parts, cmd.data]) {
      data.set(part, o);
      o += part.length;
    }
    return { done: true, command: { ...cmd, cla, data } };
  }
}

/**
 * Response chaining (ISO 7816-4 section 5.3.4): a body longer than the host asked for is
 * returned in parts, each ending `61xx`, the rest fetched with GET RESPONSE.
 */
export class ResponseChainer {
  private rest: Uint8Array | null = null;
  private finalSw: StatusWord = SW.OK;

  get active(): boolean {
    return this.rest !== null;
  }

  reset(): void {
    this.rest = null;
  }

  /**
   * Encodes `data` + `sw` for a command whose expected length was `ne` (undefined: no Le,
   * treated as 256 like a short Le=00). Keeps what does not fit for GET RESPONSE.
   */
  respond(data: Uint8Array, sw: StatusWord, ne: number | undefined): Uint8Array {
    this.rest = null;
    const limit = Math.min(ne ?? 256, 65536);
    if (data.length <= limit) return encodeResponseApdu(data, sw);
    this.rest = data.subarray(limit);
    this.finalSw = sw;
    return encodeResponseApdu(data.subarray(0, limit), swBytesRemaining(this.rest.length));
  }

  /** Answers GET RESPONSE; `6985` when nothing is pending. */
  getResponse(cmd: CommandApdu): Uint8Array {
    if (cmd.p1 !== 0 || cmd.p2 !== 0) throw new ApduError(SW.INCORRECT_P1P2, 'GET RESPONSE takes P1=P2=00');
    const rest = this.rest;
    if (rest === null) throw new ApduError(SW.CONDITIONS_NOT_SATISFIED, 'no response data pending');
    return this.respond(rest, this.finalSw, cmd.ne);
  }
}
