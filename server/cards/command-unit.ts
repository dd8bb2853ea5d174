/**
 * The unit of work behind one card command: every write a command makes, its audit entries and
 * (for a recorded command) its response commit in one transaction, or none of them does.
 *
 * - The transaction opens lazily, at the command's first write, and starts with `fenceCard`: a
 *   session that was taken over fails there (`ERR_CARD_TAKEN_OVER`) and writes nothing. A
 *   command that only reads opens no transaction at all.
 * - It stays open across the several store calls one APDU makes (GENERATE then Key History,
 *   ...), so the store methods join it instead of opening their own: on SQLite a second
 *   transaction from inside the first would wait for itself (one connection), on PostgreSQL it
 *   would see none of the first one's writes.
 * - Audit entries are queued and appended right before the commit, after the command's record:
 *   the chain head's lock is taken last and held for the shortest time.
 * - `checkpoint(provisional)` commits early, with `provisional` recorded as the command's
 *   response. A PIN try uses it: the decrement must be durable before the comparison (a crash or
 *   HSM error during the comparison keeps the try counted), and a replay after a crash at that
 *   point answers the provisional "wrong PIN" instead of running the command again. The rest of
 *   the command continues in a new, freshly fenced transaction that updates the record.
 * - Durability: a transaction whose only writes are audit entries marked `lazy` (private-key
 *   operations) and the command's record commits with relaxed durability (storage.ts): it
 *   resolves without waiting for the disk. Any other write makes it wait, as does a checkpoint.
 * - Lazy entries open no transaction. If nothing else is written, `finish` hands them and the
 *   record to the batch of the current event loop turn (record-batch.ts), fenced there; a durable
 *   write that follows opens the transaction as usual and they commit in it.
 * - Any error inside a write, and any error the card state reports with `fail()`, poisons the
 *   unit: nothing more commits and `finish` rethrows it.
 */
import { CardStateError } from '../../apdu/piv/crypto/index.js';
import {
  appendAudits,
  prepareAuditEvent,
  type AuditEvent,
  type PreparedAuditEvent,
} from '../audit/audit-log.js';
import {
  checkCardFence,
  fenceCard,
  recordCommand,
  replaceRecordedResponse,
  StorageError,
  type CardFence,
  type FencedCard,
  type Queryable,
  type Storage,
  type Tx,
} from '../storage/index.js';
import { recordBatcher } from './record-batch.js';

/** The (session, sequence number) a recorded command is stored under (`applied_commands`). */
export interface CommandRecording {
  readonly sessionId: string;
  readonly seq: number;
}

interface OpenTransaction {
  card: FencedCard;
  /** The fence bumped the card's version (fenceCard), rather than only checking it. */
  bumped: boolean;
  commit(): Promise<void>;
  rollback(): Promise<void>;
}

/** Thrown inside a detached transaction to roll it back; never escapes this module. */
const ROLLBACK = Symbol('rollback');

/** What a detached transaction resolves to when it ended before handing out its Tx. */
const ENDED_EARLY: unique symbol = Symbol('ended-early');

/**
 * Begins a transaction that stays open until `commit()` or `rollback()`, using the storage's
 * callback-style `transaction`: the callback hands out its `Tx` and waits for the decision.
 */
export async function beginTransaction(
  storage: Storage,
): Promise<{ tx: Tx; commit(): Promise<void>; rollback(): Promise<void> }> {
  let decide!: (commit: boolean) => void;
  const decision = new Promise<boolean>((resolve) => (decide = resolve));
  let handOut!: (tx: Tx) => void;
  const ready = new Promise<Tx>((resolve) => (handOut = resolve));
  const settled = storage.transaction(async (tx) => {
    handOut(tx);
    if (!(await decision)) throw ROLLBACK;
  });
  const endedEarly = settled.then((): typeof ENDED_EARLY => ENDED_EARLY);
  endedEarly.catch(() => undefined);
  const tx = await Promise.race([ready, endedEarly]);
  if (tx === ENDED_EARLY) throw new StorageError('transaction ended before it was used');
  return {
    tx,
    async commit() {
      decide(true);
      await settled;
    },
    async rollback() {
      decide(false);
      await settled.catch((error: unknown) => {
        if (error !== ROLLBACK) throw error;
      });
    },
  };
}

export class CommandUnit {
  private open: OpenTransaction | undefined;
  private opening: Promise<OpenTransaction> | undefined;
  private provisional: Buffer | undefined;
  private hooks: (() => void)[] = [];
  private audits: (AuditEvent | PreparedAuditEvent)[] = [];
  private wrote = false;
  /** The open transaction made a write that must be on disk before the command answers. */
  private durable = false;
  private failure: { readonly error: unknown } | undefined;

  constructor(
    private readonly storage: Storage,
    private readonly fence: CardFence,
    /** Set for a command run by `runCommand`: its response is recorded under this key. */
    private readonly recording: CommandRecording | undefined,
    /** Called when a transaction that wrote rolls back (the session drops what it cached). */
    private readonly onRollback: () => void,
  ) {}

  /** Where reads go: the open transaction (it sees this command's writes), else the storage. */
  async reader(): Promise<Queryable> {
    if (this.opening) return (await this.opening).card.tx;
    return this.open ? this.open.card.tx : this.storage;
  }

  /** Runs `fn` in the unit's transaction, opened and fenced on first use. */
  async write<T>(fn: (card: FencedCard) => Promise<T>): Promise<T> {
    return this.writeWith(fn, true);
  }

  private async writeWith<T>(fn: (card: FencedCard) => Promise<T>, durable: boolean): Promise<T> {
    this.throwIfFailed();
    const open = await this.ensureOpen(durable);
    this.wrote = true;
    if (durable) this.durable = true;
    try {
      if (durable && !open.bumped) {
        // The card changes after all: take a fresh version (the row is already locked).
        open.card = await fenceCard(open.card.tx, this.fence);
        open.bumped = true;
      }
      return await fn(open.card);
    } catch (error) {
      this.fail(error);
      throw error;
    }
  }

  /**
   * Queues an audit entry; it commits with the unit's current transaction (fenced like a write).
   * `lazy`: the entry alone does not make the command wait for the disk (private-key operations:
   * losing their record to a power cut leaves the card consistent, and a retry signs again).
   */
  async audit(event: AuditEvent, options: { readonly lazy?: boolean } = {}): Promise<void> {
    if (options.lazy === true && !this.open && !this.opening) {
      // Opens nothing yet: if no durable write follows, it commits in a batch (record-batch.ts).
      this.throwIfFailed();
      this.audits.push(prepareAuditEvent(event));
      this.wrote = true;
      return;
    }
    await this.writeWith(async () => {
      this.audits.push(event);
    }, options.lazy !== true);
  }

  /** Runs `fn` once the current transaction has committed (never if it rolls back). */
  afterCommit(fn: () => void): void {
    this.hooks.push(fn);
  }

  /** Marks the unit failed: nothing more commits and `finish` rethrows `error`. */
  fail(error: unknown): void {
    this.failure ??= { error };
  }

  get failed(): boolean {
    return this.failure !== undefined;
  }

  /**
   * Commits what is written so far. In a recorded command, `provisional` is recorded as its
   * response until `finish` records the real one.
   */
  async checkpoint(provisional: Uint8Array): Promise<void> {
    try {
      if (this.recording) {
        const bytes = Buffer.from(provisional);
        await this.write((card) => this.record(card, bytes));
        this.provisional = bytes;
      }
      this.durable = true; // the point of a checkpoint: on disk before the command goes on
      await this.commitOpen();
    } catch (error) {
      this.fail(error);
      await this.rollback();
      throw error;
    }
  }

  /**
   * Ends the unit: records `response` (recorded commands that wrote anything, or always with
   * `recordAlways`) and commits. Returns whether the response is recorded. Rethrows the failure of
   * a poisoned unit after rolling back.
   */
  async finish(response?: Uint8Array, recordAlways = false): Promise<boolean> {
    try {
      this.throwIfFailed();
      if (!this.open && !this.opening && this.provisional === undefined) {
        return await this.finishInBatch(response, recordAlways);
      }
      let recorded = false;
      if (this.recording && response !== undefined && (this.wrote || recordAlways)) {
        const bytes = Buffer.from(response);
        if (!(this.provisional?.equals(bytes) ?? false))
          await this.writeWith((card) => this.record(card, bytes), false);
        recorded = true;
      }
      await this.commitOpen();
      return recorded;
    } catch (error) {
      this.fail(error);
      await this.rollback();
      throw error;
    }
  }

  /**
   * `finish` for a unit that opened no transaction: what it leaves behind (lazy audit entries, the
   * record) commits with those of other commands (record-batch.ts), fenced the same way.
   */
  private async finishInBatch(response: Uint8Array | undefined, recordAlways: boolean): Promise<boolean> {
    const record =
      this.recording && response !== undefined && (this.wrote || recordAlways)
        ? { sessionId: this.recording.sessionId, seq: this.recording.seq, response: Buffer.from(response) }
        : undefined;
    const audits = this.audits;
    const hooks = this.hooks;
    this.audits = [];
    this.hooks = [];
    if (record === undefined && audits.length === 0) {
      for (const hook of hooks) hook();
      return false;
    }
    try {
      await recordBatcher(this.storage).submit({ fence: this.fence, audits, record });
    } catch (error) {
      this.onRollback();
      throw error;
    }
    for (const hook of hooks) hook();
    return record !== undefined;
  }

  /** Rolls back the open transaction, if any. Never throws. */
  async rollback(): Promise<void> {
    let open: OpenTransaction | undefined;
    try {
      open = this.opening ? await this.opening : this.open;
    } catch {
      open = undefined; // it never opened
    }
    this.open = undefined;
    this.hooks = [];
    this.audits = [];
    this.durable = false;
    if (!open) return;
    this.onRollback();
    await open.rollback().catch(() => undefined);
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  /**
   * Opens the transaction with its fence: `fenceCard` for a write that changes the card, the
   * cheaper `checkCardFence` for one that only records (private-key operations).
   */
  private ensureOpen(changesCard: boolean): Promise<OpenTransaction> {
    if (this.open) return Promise.resolve(this.open);
    this.opening ??= (async () => {
      const t = await beginTransaction(this.storage);
      try {
        const card = await (changesCard ? fenceCard : checkCardFence)(t.tx, this.fence);
        this.open = { card, bumped: changesCard, commit: t.commit, rollback: t.rollback };
        return this.open;
      } catch (error) {
        await t.rollback().catch(() => undefined);
        throw error;
      } finally {
        this.opening = undefined;
      }
    })();
    return this.opening.catch((error: unknown) => {
      this.fail(error);
      throw error;
    });
  }

  private async record(card: FencedCard, response: Buffer): Promise<void> {
    const { sessionId, seq } = this.recording!;
    if (this.provisional === undefined) {
      await recordCommand(card, sessionId, seq, response);
      return;
    }
    if (!(await replaceRecordedResponse(card, sessionId, seq, response))) {
      throw new StorageError('provisional command record vanished', { sessionId, seq });
    }
  }

  /** Appends the queued audit entries (head lock last), commits, then runs the hooks. */
  private async commitOpen(): Promise<void> {
    let open = this.opening ? await this.opening : this.open;
    // Lazy entries queued without a transaction (a checkpoint right after them): commit them now.
    if (!open && this.audits.length > 0) open = await this.ensureOpen(false);
    if (!open) return;
    await appendAudits(open.card.tx, this.audits);
    this.audits = [];
    this.open = undefined;
    if (!this.durable) open.card.tx.relaxDurability();
    this.durable = false;
    const hooks = this.hooks;
    this.hooks = [];
    try {
      await open.commit();
    } catch (error) {
      this.onRollback();
      throw error;
    }
    for (const hook of hooks) hook();
  }
}

/** Whether an error is a refusal of the command's input (a card outcome) rather than a failure. */
export function isCardOutcome(error: unknown): boolean {
  return error instanceof CardStateError;
}
