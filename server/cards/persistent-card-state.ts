/**
 * A PIV card's state in the card server's database, for ONE card opened by ONE session: the
 * database-backed, sealed implementation of every interface in `apdu/piv/card-state.ts`.
 *
 *   const epoch = await storage.transaction((tx) => claimCard(tx, { cardId, sessionId }));
 *   const state = await openPersistentCardState({ storage, kek, cardId, sessionId, epoch, actor });
 *   const card = new PivCard(state);
 *   const { response } = await state.runCommand(seq, (view) => card.transmit(apdu, view));
 *   ...
 *   state.dispose(); // logout, takeover, close
 *
 * Writes: every mutating call is one transaction that starts with `fenceCard` (the session's
 * epoch): once another session claimed the card, nothing this one does changes anything and the
 * call fails with `ERR_CARD_TAKEN_OVER` (the state then disposes itself). PIN tries, key
 * sealing, private-key operations and their audit entries: see reference-store.ts and
 * key-store.ts.
 *
 * Exactly-once: `runCommand(seq, fn)` runs one APDU's state changes and records its response in
 * one transaction (command-unit.ts). `fn` gets a view of the state bound to that command: its
 * store calls join the command's transaction instead of opening their own, so no transaction ever
 * nests (on SQLite it would wait for itself). The unit is passed explicitly, not found through an
 * AsyncLocalStorage: on Node 20 a live AsyncLocalStorage runs promise hooks on every promise of
 * the process, which cost about a fifth of the server's time per signature. A `seq` already
 * recorded for the session answers the recorded response without running `fn`. Commands of one
 * state run one at a time; while one runs, a store call on the state itself (not on the command's
 * view) is refused (`OutsideCommandError`) rather than racing it, and so is a call on a view whose
 * command has ended. A read that may come while commands run (the session's snapshot) goes
 * through `exclusive(fn)`, queued between them. Neither may be called from inside a command: it
 * would wait for itself.
 *
 * Reads (GET DATA, metadata, retry counters) use the storage directly outside a command and the
 * command's transaction inside one. Without `runCommand`, each store call is its own unit.
 */
import type {
  CardIdentity,
  DataObjectStore,
  KeySlotStore,
  ManagementKeyStore,
  PivCardState,
  ReferenceDataStore,
} from '../../apdu/piv/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import { parseCardProfile } from '../admin/profile.js';
import type { KekProvider } from '../keys/kek-provider.js';
import {
  CardNotFoundError,
  CardTakenOverError,
  findRecorded,
  getCard,
  type CardFence,
  type Storage,
} from '../storage/index.js';
import { CommandUnit, isCardOutcome, type CommandRecording } from './command-unit.js';
import { CardStateClosedError, OutsideCommandError } from './errors.js';
import { keyStore } from './key-store.js';
import { managementKeyStore } from './management-key-store.js';
import { objectStore } from './object-store.js';
import { referenceStore } from './reference-store.js';
import { SessionCache } from './session-cache.js';
import type { KeyArchivalSettings, StoreContext } from './store-context.js';

export interface OpenPersistentCardStateOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly cardId: string;
  /** The session that claimed the card (`claimCard`); command records are kept under it. */
  readonly sessionId: string;
  /** The epoch `claimCard` returned for this session. */
  readonly epoch: number;
  /** Who acts, for the audit log: `user:<id>`, `device:<id>`, ... */
  readonly actor: string;
  /**
   * The server setting `keyArchival.recoveryCertificate`, for a card whose profile archives its
   * key management keys (StoreContext.keyArchival).
   */
  readonly recoveryCertificate?: string | undefined;
}

export interface CommandOptions {
  /**
   * Record the response even when the command changed nothing (default false: a read-only
   * command is simply run again on a replay). Set it for commands whose answer depends on
   * volatile card state (GET RESPONSE) when the session layer keeps no copy of its own.
   */
  readonly recordAlways?: boolean;
  /**
   * The caller knows `seq` is new (a request that is not a retransmission): skip looking for a
   * recorded response. Safe even if wrong: the record's primary key refuses a second run.
   */
  readonly firstAttempt?: boolean;
}

export interface CommandOutcome {
  readonly response: Uint8Array;
  /** True when `seq` had been applied before: `response` is the recorded one, nothing ran. */
  readonly replayed: boolean;
  /** True when the response is recorded (the command changed state, or `recordAlways`). */
  readonly recorded: boolean;
}

export interface PersistentCardState extends PivCardState {
  readonly cardId: string;
  readonly sessionId: string;
  readonly epoch: number;
  /** True after `dispose()` (called or automatic on a takeover): every call is then refused. */
  readonly disposed: boolean;
  /**
   * Runs command `seq` of the session exactly once: `command`'s store calls share one
   * transaction with the record of its response. A `seq` recorded earlier returns the recorded
   * response without calling `command`. Throws (and commits nothing after the last checkpoint)
   * when the state failed underneath the card (`ERR_CARD_TAKEN_OVER`, `ERR_STORAGE`,
   * `ERR_SEALED_KEY_INVALID`, ...), which the card itself would only have answered with `6F00`.
   */
  runCommand(
    seq: number,
    command: (view: PivCardState) => Promise<Uint8Array>,
    options?: CommandOptions,
  ): Promise<CommandOutcome>;
  /**
   * Runs `fn` between two commands, its store calls (on the view it gets) sharing one unit: a
   * consistent read of the card (the session's snapshot) that never interleaves with a command.
   */
  exclusive<T>(fn: (view: PivCardState) => Promise<T>): Promise<T>;
  /** Drops the session's cached keys and refuses further calls. Idempotent. */
  dispose(): void;
}

/**
 * Opens the card for a session that has claimed it. Throws `ERR_CARD_NOT_FOUND` for an unknown
 * card and `ERR_CARD_TAKEN_OVER` when `epoch` is no longer the card's.
 */
export async function openPersistentCardState(
  options: OpenPersistentCardStateOptions,
): Promise<PersistentCardState> {
  checkOptions(options);
  const card = await getCard(options.storage, options.cardId);
  if (card.sessionEpoch !== options.epoch) throw new CardTakenOverError(options.cardId, options.epoch);
  const identity: CardIdentity = Object.freeze({ serial: card.serial, guid: new Uint8Array(card.guid) });
  const keyArchival = Object.freeze({
    required: parseCardProfile(card.profile, 'stored').archiveKeyManagementKey,
    recoveryCertificate: options.recoveryCertificate,
  });
  return new PersistentState(options, card.tenantId, identity, keyArchival);
}

class PersistentState implements PersistentCardState, StoreContext {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly fence: CardFence;
  readonly sessionId: string;
  readonly actor: string;
  readonly cache = new SessionCache();
  readonly references: ReferenceDataStore;
  readonly keys: KeySlotStore;
  readonly managementKey: ManagementKeyStore;
  readonly objects: DataObjectStore;
  private running: CommandUnit | undefined;
  private commandQueue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    options: OpenPersistentCardStateOptions,
    readonly tenantId: string,
    readonly identity: CardIdentity,
    readonly keyArchival: KeyArchivalSettings,
  ) {
    this.storage = options.storage;
    this.kek = options.kek;
    this.fence = Object.freeze({ cardId: options.cardId, epoch: options.epoch });
    this.sessionId = options.sessionId;
    this.actor = options.actor;
    this.references = referenceStore(this);
    this.keys = keyStore(this);
    this.managementKey = managementKeyStore(this);
    this.objects = objectStore(this);
  }

  get cardId(): string {
    return this.fence.cardId;
  }

  get epoch(): number {
    return this.fence.epoch;
  }

  get disposed(): boolean {
    return this.closed;
  }

  dispose(): void {
    this.closed = true;
    this.cache.clear();
  }

  runCommand(
    seq: number,
    command: (view: PivCardState) => Promise<Uint8Array>,
    options: CommandOptions = {},
  ): Promise<CommandOutcome> {
    if (!Number.isSafeInteger(seq) || seq < 0) {
      return Promise.reject(
        new CardlinkError('ERR_INTERNAL', 'command sequence number must be a safe integer >= 0'),
      );
    }
    return this.enqueue(() => this.runOne({ sessionId: this.sessionId, seq }, command, options));
  }

  exclusive<T>(fn: (view: PivCardState) => Promise<T>): Promise<T> {
    return this.enqueue(async () => {
      this.assertOpen();
      const unit = this.newUnit(undefined);
      const view = new CommandView(this, unit);
      this.running = unit;
      try {
        return await this.inUnit(unit, () => fn(view));
      } finally {
        view.end();
        this.running = undefined;
      }
    });
  }

  /** Runs `task` after every command queued before it: one at a time per state. */
  private enqueue<T>(task: () => Promise<T>): Promise<T> {
    const run = this.commandQueue.then(task);
    this.commandQueue = run.catch(() => undefined);
    return run;
  }

  private async runOne(
    recording: CommandRecording,
    command: (view: PivCardState) => Promise<Uint8Array>,
    options: CommandOptions,
  ): Promise<CommandOutcome> {
    this.assertOpen();
    if (options.firstAttempt !== true) {
      const recorded = await findRecorded(this.storage, recording.sessionId, recording.seq);
      if (recorded) return { response: new Uint8Array(recorded), replayed: true, recorded: true };
    }
    const unit = this.newUnit(recording);
    const view = new CommandView(this, unit);
    this.running = unit;
    try {
      const response = await command(view);
      view.end(); // nothing the command left running may write after this
      const wasRecorded = await unit.finish(response, options.recordAlways ?? false);
      return { response, replayed: false, recorded: wasRecorded };
    } catch (error) {
      await unit.rollback();
      this.noteFailure(error);
      throw error;
    } finally {
      view.end();
      this.running = undefined;
    }
  }

  /** A store call on the state itself: a unit of its own, refused while a command runs. */
  async call<T>(fn: (unit: CommandUnit) => Promise<T>): Promise<T> {
    this.assertOpen();
    if (this.running) throw new OutsideCommandError(this.cardId);
    const unit = this.newUnit(undefined);
    return this.inUnit(unit, () => fn(unit));
  }

  /** Runs `fn` as the whole of `unit`: finished (committed) after it, rolled back if it fails. */
  private async inUnit<T>(unit: CommandUnit, fn: () => Promise<T>): Promise<T> {
    try {
      const result = await fn();
      await unit.finish();
      return result;
    } catch (error) {
      await unit.rollback();
      this.noteFailure(error);
      throw error;
    }
  }

  async audit(
    unit: CommandUnit,
    eventType: string,
    details: Record<string, unknown>,
    options: { readonly lazy?: boolean } = {},
  ): Promise<void> {
    await unit.audit(
      {
        actor: this.actor,
        eventType,
        cardId: this.cardId,
        details: { ...details, session: this.sessionId },
      },
      options,
    );
  }

  private newUnit(recording: CommandRecording | undefined): CommandUnit {
    return new CommandUnit(this.storage, this.fence, recording, () => this.cache.clear());
  }

  assertOpen(): void {
    if (this.closed) throw new CardStateClosedError(this.cardId);
  }

  /** A lost card (claimed by another session, deleted) ends this state. */
  noteFailure(error: unknown): void {
    if (error instanceof CardTakenOverError || error instanceof CardNotFoundError) this.dispose();
  }
}

/**
 * The state as one command (or `exclusive` read) sees it: the same stores, every call joining the
 * command's unit. Ended with its command; a call after that (work the command left running) is
 * refused instead of writing outside the command's transaction.
 */
class CommandView implements PivCardState, StoreContext {
  readonly references: ReferenceDataStore;
  readonly keys: KeySlotStore;
  readonly managementKey: ManagementKeyStore;
  readonly objects: DataObjectStore;
  private ended = false;

  constructor(
    private readonly owner: PersistentState,
    private readonly unit: CommandUnit,
  ) {
    this.references = referenceStore(this);
    this.keys = keyStore(this);
    this.managementKey = managementKeyStore(this);
    this.objects = objectStore(this);
  }

  get identity(): CardIdentity {
    return this.owner.identity;
  }
  get storage(): Storage {
    return this.owner.storage;
  }
  get kek(): KekProvider {
    return this.owner.kek;
  }
  get fence(): CardFence {
    return this.owner.fence;
  }
  get tenantId(): string {
    return this.owner.tenantId;
  }
  get sessionId(): string {
    return this.owner.sessionId;
  }
  get actor(): string {
    return this.owner.actor;
  }
  get cache(): SessionCache {
    return this.owner.cache;
  }
  get keyArchival(): KeyArchivalSettings {
    return this.owner.keyArchival;
  }

  end(): void {
    this.ended = true;
  }

  async call<T>(fn: (unit: CommandUnit) => Promise<T>): Promise<T> {
    this.owner.assertOpen();
    if (this.ended) throw new OutsideCommandError(this.owner.cardId);
    try {
      return await fn(this.unit);
    } catch (error) {
      // The card turns every error into a status word; the command must still fail.
      if (!isCardOutcome(error)) this.unit.fail(error);
      this.owner.noteFailure(error);
      throw error;
    }
  }

  audit(
    unit: CommandUnit,
    eventType: string,
    details: Record<string, unknown>,
    options?: { readonly lazy?: boolean },
  ): Promise<void> {
    return this.owner.audit(unit, eventType, details, options);
  }
}

function checkOptions(options: OpenPersistentCardStateOptions): void {
  const bad = (field: string): never => {
    throw new CardlinkError('ERR_INTERNAL', 'invalid persistent card state option', { field });
  };
  if (!options || typeof options !== 'object') bad('options');
  if (typeof options.cardId !== 'string' || options.cardId.length === 0) bad('cardId');
  if (typeof options.sessionId !== 'string' || options.sessionId.length === 0) bad('sessionId');
  if (!Number.isSafeInteger(options.epoch) || options.epoch < 0) bad('epoch');
  if (typeof options.actor !== 'string' || options.actor.length === 0) bad('actor');
  if (!options.storage) bad('storage');
  if (!options.kek) bad('kek');
}
