import { randomBytes } from 'node:crypto';
import {
  ApduError,
  CommandChainAssembler,
  INS_GET_RESPONSE,
  isChained,
  parseCommandApdu,
  ResponseChainer,
  statusOnly,
  SW,
  type CommandApdu,
  type StatusWord,
} from '../codec/index.js';
import type { PivCardState } from './card-state.js';
import type { CommandContext } from './command-context.js';
import { CHAINABLE_INSTRUCTIONS, commandHandler } from './commands/index.js';
import { INS, KEY_REF } from './constants.js';
import { CardStateError } from './crypto/errors.js';
import { PIV_CARD_ATR } from './atr.js';
import { SecurityState } from './security-state.js';
import { statusForCardStateError } from './status-mapping.js';

/**
 * A PIV card (SP 800-73-4) as pure logic: APDUs in, APDUs out, no I/O. Persistent state and
 * private-key operations sit behind `PivCardState`; everything volatile (PIN verified, management
 * key authenticated, command and response chains) lives here and is dropped by `reset()`.
 *
 * It satisfies the reader's virtual card shape `{ atr, reset(), transmit() }`:
 * - `transmit` never rejects. A refused command answers its status word, an unexpected failure
 *   `6F00`; a failed command changes no persistent state (except the retry counter a wrong PIN
 *   or PUK consumes). Commands run one at a time in arrival order.
 * - PIV is the only and default application: it is selected after every reset and stays
 *   selected whatever else is SELECTed.
 *
 * Class bytes (ISO 7816-4 section 5.4.1): 00 and 10 (command chaining, for PUT DATA, GENERAL
 * AUTHENTICATE and IMPORT KEY). Proprietary or RFU classes `6E00`; logical channels other than
 * the basic one `6881`; secure messaging `6882`.
 */
export interface PivCardOptions {
  /** Random bytes for management key challenges; default node:crypto randomBytes. */
  readonly random?: (length: number) => Uint8Array;
}

/** Per-reset state: security status and the open command/response chains. */
interface Session {
  readonly security: SecurityState;
  readonly commandChain: CommandChainAssembler;
  readonly responseChain: ResponseChainer;
}

export class PivCard {
  /** The Answer To Reset (see atr.ts). */
  readonly atr: Uint8Array = PIV_CARD_ATR.slice();
  private readonly state: PivCardState;
  private readonly random: (length: number) => Uint8Array;
  private session: Session = newSession();
  /** Tail of the command queue: each command starts when the previous one is done. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(state: PivCardState, options: PivCardOptions = {}) {
    this.state = state;
    this.random = options.random ?? ((n) => new Uint8Array(randomBytes(n)));
  }

  /** Warm or cold reset: forgets PIN and management key authentication and any open chain. */
  reset(): void {
    this.session = newSession();
  }

  /**
   * Processes one command APDU; resolves with the response APDU (data + SW1 SW2), never rejects.
   * `state`: the persistent state this one command works on, when it is not the card's own (the
   * card server passes the view of its running command, persistent-card-state.ts).
   */
  transmit(apdu: Uint8Array, state: PivCardState = this.state): Promise<Uint8Array> {
    if (!(apdu instanceof Uint8Array)) return Promise.resolve(statusOnly(SW.NO_PRECISE_DIAGNOSIS));
    // A copy (Buffer#slice would share memory): the caller may reuse its buffer while we wait.
    const bytes = Uint8Array.from(apdu);
    const session = this.session; // a reset while queued must not leak into the new session
    const run = this.queue.then(() => this.process(bytes, session, state));
    this.queue = run.catch(() => undefined);
    return run.catch(() => statusOnly(SW.NO_PRECISE_DIAGNOSIS));
  }

  private async process(bytes: Uint8Array, session: Session, state: PivCardState): Promise<Uint8Array> {
    try {
      return await this.dispatch(bytes, session, state);
    } catch (e) {
      return statusOnly(statusFor(e));
    }
  }

  private async dispatch(bytes: Uint8Array, session: Session, state: PivCardState): Promise<Uint8Array> {
    if (bytes.length < 4) throw new ApduError(SW.WRONG_LENGTH, 'command APDU shorter than its header');
    checkClass(bytes[0]!);
    const ins = bytes[1]!;
    const p2 = bytes[3]!;

    // Volatile state only survives the commands it belongs to.
    if (ins !== INS_GET_RESPONSE) session.responseChain.reset();
    if (!(ins === INS.GENERAL_AUTHENTICATE && p2 === KEY_REF.CARD_MANAGEMENT) && ins !== INS_GET_RESPONSE) {
      session.security.pendingChallenge = null;
    }

    let cmd: CommandApdu;
    try {
      cmd = parseCommandApdu(bytes);
    } catch (e) {
      session.commandChain.reset();
      throw e;
    }
    if (isChained(cmd) && !CHAINABLE_INSTRUCTIONS.has(ins)) {
      session.commandChain.reset();
      throw new ApduError(
        SW.COMMAND_CHAINING_NOT_SUPPORTED,
        'command chaining not supported for this instruction',
        {
          ins,
        },
      );
    }
    const fed = session.commandChain.feed(cmd);
    if (!fed.done) return statusOnly(SW.OK);
    cmd = fed.command;

    if (ins === INS_GET_RESPONSE) return session.responseChain.getResponse(cmd);
    const handler = commandHandler(ins);
    if (!handler) throw new ApduError(SW.INS_NOT_SUPPORTED, 'instruction not supported', { ins });
    const ctx: CommandContext = { state, security: session.security, random: this.random };
    const response = await (await handler)(cmd, ctx);
    return session.responseChain.respond(response.data, response.sw, cmd.ne);
  }
}

function newSession(): Session {
  return {
    security: new SecurityState(),
    commandChain: new CommandChainAssembler(),
    responseChain: new ResponseChainer(),
  };
}

/**
 * ISO 7816-4 section 5.4.1: first interindustry class `000x xxxx` (bit 5 chaining, bits 4-3
 * secure messaging, bits 2-1 logical channel 0..3), further interindustry `01xx xxxx` (bit 6
 * secure messaging, bits 4-1 logical channel 4..19), `001x xxxx` RFU, `1xxx xxxx` proprietary.
 */
function checkClass(cla: number): void {
  if ((cla & 0x80) !== 0 || (cla & 0xe0) === 0x20) {
    throw new ApduError(SW.CLA_NOT_SUPPORTED, 'class not supported', { cla });
  }
  if ((cla & 0x40) !== 0) {
    throw new ApduError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED, 'logical channels 4..19 are not supported', {
      cla,
    });
  }
  if ((cla & 0x03) !== 0) {
    throw new ApduError(SW.LOGICAL_CHANNEL_NOT_SUPPORTED, 'only the basic logical channel is supported', {
      cla,
    });
  }
  if ((cla & 0x0c) !== 0)
    throw new ApduError(SW.SECURE_MESSAGING_NOT_SUPPORTED, 'secure messaging not supported', { cla });
}

/** The status word for anything a command threw; `6F00` for what no rule covers. */
function statusFor(e: unknown): StatusWord {
  if (e instanceof ApduError) return e.sw;
  if (e instanceof CardStateError) return statusForCardStateError(e.reason);
  return SW.NO_PRECISE_DIAGNOSIS;
}
