/**
 * The daemon's side of a remote PIV card: answers what is public from the card's snapshot and
 * sends every other command to the real card (on the card server) as ONE complete command.
 *
 * Local, no round trip: SELECT, GET VERSION, GET SERIAL, GET DATA of public containers
 * (`apdu/piv/snapshot.ts`), the non-final parts of a command chain (CLA bit 0x10; answered 9000 and
 * assembled here) and GET RESPONSE of an answer already received (kept here). A reset is
 * answered locally too and reported to the card with the next remote command.
 * Remote, one round trip each: VERIFY, GENERAL AUTHENTICATE, CHANGE REFERENCE DATA, RESET RETRY
 * COUNTER, GENERATE, PUT DATA, IMPORT, SET MANAGEMENT KEY, metadata, GET DATA of PIN-protected
 * containers. After a command that may change public data (PUT DATA, GENERATE, IMPORT) the
 * snapshot is fetched again before the next local answer.
 *
 * Like PivCard it is a VirtualCard (`atr`, `reset()`, `transmit()`); `transmit` never rejects.
 */
import {
  ApduError,
  SW,
  swVerifyFailed,
  verifyTriesLeft,
  type StatusWord,
  CommandChainAssembler,
  INS_GET_RESPONSE,
  ResponseChainer,
  encodeCommandApdu,
  EXTENDED_MAX,
  parseCommandApdu,
  type CommandApdu,
  statusOnly,
} from '../../apdu/codec/index.js';
import {
  PIV_CARD_ATR,
  DATA_TAG,
  INS,
  KEY_REF,
  VERIFY_P1,
  PivCard,
  isPublicObject,
  IMPLEMENTED_INSTRUCTIONS,
  GUID_BYTES,
  type CardSnapshot,
} from '../../apdu/piv/core/index.js';
import type {
  CardIdentity,
  DataObjectStore,
  KeySlotStore,
  ManagementKeyStore,
  PivCardState,
  ReferenceDataStore,
} from '../../apdu/piv/core/index.js';

/** The real card, somewhere else. */
export interface RemoteCardLink {
  /**
   * Runs one complete (unchained) command on the card and resolves with its whole answer (data
   * and status word). `reset` is true when the card was reset since the previous remote command.
   * Rejects when the card cannot be reached; the host then gets `6F00`.
   */
  transmit(command: Uint8Array, reset: boolean): Promise<Uint8Array>;
  /** The card's public snapshot as it is now. */
  snapshot(): Promise<CardSnapshot>;
}

/** Instructions answered from the snapshot (GET DATA only for public containers). */
const LOCAL_INSTRUCTIONS = new Set<number>([INS.SELECT, INS.YK_GET_VERSION, INS.YK_GET_SERIAL]);
/** Remote instructions after which the snapshot may be out of date. */
const CHANGES_PUBLIC_DATA = new Set<number>([
  INS.PUT_DATA,
  INS.GENERATE_ASYMMETRIC_KEY_PAIR,
  INS.YK_IMPORT_KEY,
]);

/** Counts of commands by where they were answered (for diagnostics and the round-trip benchmark). */
export interface FrontCardCounters {
  local: number;
  remote: number;
  snapshotFetches: number;
}

/** Every store call the snapshot cannot answer: the local card answers `6F00`. */
async function notFromSnapshot(): Promise<never> {
  throw new ApduError(SW.NO_PRECISE_DIAGNOSIS, 'not available from the snapshot');
}

/**
 * The card state the front's local PivCard runs on: the snapshot's serial and public containers,
 * read-only. `isLocal` sends it only SELECT, GET VERSION, GET SERIAL and GET DATA of public
 * containers, which need nothing else; every other store call is refused (`6F00`), never faked.
 */
class SnapshotCardState implements PivCardState {
  readonly objects: DataObjectStore;
  readonly references: ReferenceDataStore = {
    status: notFromSnapshot,
    verify: notFromSnapshot,
    change: notFromSnapshot,
    unblockPin: notFromSnapshot,
  };
  readonly keys: KeySlotStore = {
    info: notFromSnapshot,
    generate: notFromSnapshot,
    importKey: notFromSnapshot,
    sign: notFromSnapshot,
    deriveSharedSecret: notFromSnapshot,
  };
  readonly managementKey: ManagementKeyStore = {
    algorithm: notFromSnapshot,
    encryptBlock: notFromSnapshot,
    decryptBlock: notFromSnapshot,
    replace: notFromSnapshot,
  };

  constructor(private readonly current: () => CardSnapshot) {
    this.objects = {
      get: async (tag) => this.current().objects.get(tag),
      put: notFromSnapshot,
    };
  }

  /**
   * The snapshot carries no GUID, and no command reads one (the CHUID and CCC holding it come from
   * the snapshot's containers): a zero GUID of the right length.
   */
  get identity(): CardIdentity {
    return { serial: this.current().serial, guid: new Uint8Array(GUID_BYTES) };
  }
}

export class FrontCard {
  readonly atr: Uint8Array = PIV_CARD_ATR.slice();
  readonly counters: FrontCardCounters = { local: 0, remote: 0, snapshotFetches: 0 };
  private current: CardSnapshot;
  private stale = false;
  /** What an empty VERIFY of the PIN would answer, as far as this front knows (undefined: ask). */
  private pinRetries: number | undefined;
  private pinVerified: boolean | undefined = false;
  private resetPending = false;
  private readonly local: PivCard;
  private readonly chain = new CommandChainAssembler();
  private readonly responses = new ResponseChainer();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    snapshot: CardSnapshot,
    private readonly remote: RemoteCardLink,
  ) {
    this.current = snapshot;
    this.pinRetries = snapshot.pinRetries?.remaining;
    this.local = new PivCard(new SnapshotCardState(() => this.current));
  }

  get snapshot(): CardSnapshot {
    return this.current;
  }

  /** The server changed the card (CARD_CHANGED): fetch the snapshot before the next local answer. */
  invalidate(): void {
    this.stale = true;
  }

  /**
   * The card was opened again in a new server session (the old one was lost, e.g. by a server
   * restart): the card's volatile state is gone there, so it is forgotten here too, and the
   * snapshot from the new CARD_OPENED replaces the old one.
   */
  resync(snapshot: CardSnapshot): void {
    this.current = snapshot;
    this.stale = false;
    this.pinRetries = snapshot.pinRetries?.remaining;
    this.chain.reset();
    this.responses.reset();
    this.local.reset();
    this.pinVerified = false;
    this.resetPending = false;
  }

  reset(): void {
    this.chain.reset();
    this.responses.reset();
    this.local.reset();
    this.resetPending = true;
    this.pinVerified = false; // a reset forgets the verification, never the counter
  }

  transmit(apdu: Uint8Array): Promise<Uint8Array> {
    if (!(apdu instanceof Uint8Array)) return Promise.resolve(statusOnly(SW.NO_PRECISE_DIAGNOSIS));
    const bytes = Uint8Array.from(apdu);
    const run = this.queue.then(() => this.process(bytes));
    this.queue = run.catch(() => undefined);
    return run.catch(() => statusOnly(SW.NO_PRECISE_DIAGNOSIS));
  }

  private async process(bytes: Uint8Array): Promise<Uint8Array> {
    let cmd: CommandApdu;
    try {
      cmd = parseCommandApdu(bytes);
    } catch {
      // The local card gives malformed input the status word the real card would.
      this.chain.reset();
      this.responses.reset();
      return this.local.transmit(bytes);
    }
    if ((cmd.cla & 0xef) !== 0) {
      this.chain.reset();
      return this.local.transmit(bytes); // class checks (secure messaging, channels): 6881/6882/6E00
    }
    try {
      if (cmd.ins === INS_GET_RESPONSE && !this.chain.active) return this.responses.getResponse(cmd);
      this.responses.reset();
      const fed = this.chain.feed(cmd);
      if (!fed.done) return statusOnly(SW.OK);
      const whole = fed.command;
      const forward = encodeCommandApdu({
        cla: whole.cla & ~0x10,
        ins: whole.ins,
        p1: whole.p1,
        p2: whole.p2,
        data: whole.data,
        ne: EXTENDED_MAX,
      });
      const cached = this.cachedPinStatus(whole);
      if (cached) {
        this.counters.local++;
        return this.responses.respond(new Uint8Array(0), cached, cmd.ne);
      }
      const answer = this.isLocal(whole)
        ? await this.answerLocally(forward)
        : await this.answerRemotely(whole, forward);
      if (answer.length < 2) return statusOnly(SW.NO_PRECISE_DIAGNOSIS);
      const sw: StatusWord = (answer[answer.length - 2]! << 8) | answer[answer.length - 1]!;
      return this.responses.respond(answer.subarray(0, answer.length - 2), sw, cmd.ne);
    } catch (error) {
      if (error instanceof ApduError) return statusOnly(error.sw);
      return statusOnly(SW.NO_PRECISE_DIAGNOSIS);
    }
  }

  /** The status word of an empty VERIFY of the PIN, when this front knows it. */
  private cachedPinStatus(cmd: CommandApdu): StatusWord | undefined {
    if (
      cmd.ins !== INS.VERIFY ||
      cmd.p1 !== VERIFY_P1.VERIFY ||
      cmd.p2 !== KEY_REF.PIN ||
      cmd.data.length !== 0
    )
      return undefined;
    if (this.pinRetries === undefined || this.pinVerified === undefined) return undefined;
    if (this.pinRetries === 0) return SW.AUTH_METHOD_BLOCKED;
    return this.pinVerified ? SW.OK : swVerifyFailed(this.pinRetries);
  }

  /** Follows the PIN's state through the card's answers, so empty VERIFYs need no round trip. */
  private notePinAnswer(cmd: CommandApdu, sw: StatusWord): void {
    if (cmd.ins === INS.VERIFY && cmd.p2 === KEY_REF.PIN) {
      const limit = this.current.pinRetries?.limit;
      const triesLeft = verifyTriesLeft(sw);
      if (cmd.p1 === VERIFY_P1.RESET_STATUS) {
        if (sw === SW.OK) this.pinVerified = false;
      } else if (sw === SW.OK) {
        this.pinVerified = true;
        this.pinRetries = limit; // a correct PIN restores the counter
      } else if (triesLeft !== undefined) {
        this.pinVerified = false;
        this.pinRetries = triesLeft;
      } else if (sw === SW.AUTH_METHOD_BLOCKED) {
        this.pinVerified = false;
        this.pinRetries = 0;
      } else if (cmd.data.length !== 0) {
        this.pinVerified = undefined;
      }
      return;
    }
    // PIN changes, unblocks and PIN-always keys move the PIN's state in ways best asked again.
    if (cmd.ins === INS.CHANGE_REFERENCE_DATA || cmd.ins === INS.RESET_RETRY_COUNTER) {
      this.pinRetries = undefined;
      this.pinVerified = undefined;
    } else if (cmd.ins === INS.GENERAL_AUTHENTICATE) {
      this.pinVerified = undefined;
    }
  }

  private isLocal(cmd: CommandApdu): boolean {
    if (LOCAL_INSTRUCTIONS.has(cmd.ins)) return true;
    // An instruction the card does not implement gets its 6D00 here.
    if (!IMPLEMENTED_INSTRUCTIONS.has(cmd.ins)) return true;
    if (cmd.ins !== INS.GET_DATA) return false;
    // 5C <len> <tag>: public containers only; a PIN-protected one depends on the card's PIN state.
    const d = cmd.data;
    if (d.length < 3 || d[0] !== DATA_TAG.TAG_LIST || d[1] !== d.length - 2 || d[1]! > 3) return false;
    let tag = 0;
    for (const b of d.subarray(2)) tag = (tag << 8) | b;
    return isPublicObject(tag);
  }

  private async answerLocally(command: Uint8Array): Promise<Uint8Array> {
    if (this.stale) await this.refresh();
    this.counters.local++;
    return this.local.transmit(command);
  }

  private async answerRemotely(cmd: CommandApdu, command: Uint8Array): Promise<Uint8Array> {
    const reset = this.resetPending;
    this.resetPending = false;
    this.counters.remote++;
    const answer = await this.remote.transmit(command, reset);
    if (CHANGES_PUBLIC_DATA.has(cmd.ins)) this.stale = true;
    if (answer.length >= 2)
      this.notePinAnswer(cmd, (answer[answer.length - 2]! << 8) | answer[answer.length - 1]!);
    return answer;
  }

  private async refresh(): Promise<void> {
    this.counters.snapshotFetches++;
    this.current = await this.remote.snapshot();
    this.pinRetries = this.current.pinRetries?.remaining;
    this.stale = false;
  }
}
