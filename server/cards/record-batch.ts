/**
 * Group commit for the records of private-key operations: the audit entries and command records
 * of every signature (or ECDH) ready in the same turn of the event loop commit in ONE transaction.
 *
 * Why: such a command changes no card state; what it must leave behind is its audit entry and,
 * under `runCommand`, its exactly-once record, both before its result leaves the server. Committed
 * one by one, each signature paid a transaction of seven statements; in a batch of n, the
 * statements are the same seven for all n (one fence check for every card, one insert of all
 * records, one read of the audit chain head, one insert of all entries, one head update).
 *
 * The guarantees stay those of one transaction per command (command-unit.ts):
 * - Every submission resolves only after the transaction holding its rows committed, so no result
 *   is released without its audit entry; a failed transaction rejects every submission in it.
 * - Each submission is fenced on its own card (`checkCardFences`, rows locked on PostgreSQL): a
 *   session that was taken over gets `ERR_CARD_TAKEN_OVER` and writes nothing; the others commit.
 *   A record already there (a replayed sequence) fails that submission alone, with its entries.
 * - Relaxed durability, as before for these records: the commit does not wait for the disk
 *   (storage.ts, "Durability" in docs/security-model.md).
 *
 * Batches run one at a time per storage; submissions that arrive while one commits form the next.
 * A submission on an otherwise idle server commits at once (BUSY_WINDOW_MS).
 */
import {
  appendAudits,
  prepareAuditEvent,
  type AuditEvent,
  type PreparedAuditEvent,
} from '../audit/audit-log.js';
import {
  checkCardFences,
  CommandAlreadyRecordedError,
  recordCommands,
  type CardFence,
  type CommandRecord,
  type Storage,
} from '../storage/index.js';

/** What one command leaves behind: its audit entries and, if recorded, its response. */
export interface LazyRecords {
  readonly fence: CardFence;
  readonly audits: readonly (AuditEvent | PreparedAuditEvent)[];
  readonly record?: { readonly sessionId: string; readonly seq: number; readonly response: Uint8Array };
}

/** Upper bound of one batch: keeps the statements' parameter counts far below either dialect's limit. */
export const MAX_BATCH = 256;

/**
 * A submission this soon after the previous one means the server is busy: it waits for the rest
 * of the event loop turn to join it. Otherwise it commits at once. (Waiting cost a lone signature
 * about 0.2 ms on the test machine; at 1,000 signatures per second and more, batches pay off.)
 */
export const BUSY_WINDOW_MS = 1;

interface Pending {
  readonly fence: CardFence;
  readonly audits: readonly PreparedAuditEvent[];
  readonly record: CommandRecord | undefined;
  resolve(): void;
  reject(error: unknown): void;
}

class RecordBatcher {
  private queue: Pending[] = [];
  private scheduled = false;
  private running = false;
  private lastSubmitAt = -Infinity;
  /** The latest submission came within BUSY_WINDOW_MS of the one before. */
  private busy = false;
  /** Transactions committed so far (for tests and benchmarks). */
  batches = 0;

  constructor(private readonly storage: Storage) {}

  submit(records: LazyRecords): Promise<void> {
    // Checked here, so a bad entry fails its own command instead of the batch it would join.
    const audits = records.audits.map(prepareAuditEvent);
    const record = records.record && { cardId: records.fence.cardId, ...records.record };
    const now = performance.now();
    this.busy = now - this.lastSubmitAt < BUSY_WINDOW_MS;
    this.lastSubmitAt = now;
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ fence: records.fence, audits, record, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running || this.queue.length === 0) return;
    this.scheduled = true;
    if (!this.busy) {
      // A lone command (one user signing): waiting for a batch would only add latency.
      queueMicrotask(() => {
        this.scheduled = false;
        void this.flush();
      });
      return;
    }
    // Under load: after the I/O callbacks of this turn, so every command answered in it joins.
    setImmediate(() => {
      this.scheduled = false;
      void this.flush();
    });
  }

  private async flush(): Promise<void> {
    this.running = true;
    const batch = this.queue.splice(0, MAX_BATCH);
    const outcomes: (Error | undefined)[] = new Array(batch.length);
    try {
      await this.storage.transaction(async (tx) => {
        tx.relaxDurability();
        const fenced = await checkCardFences(
          tx,
          batch.map((p) => p.fence),
        );
        const accepted = batch.flatMap((_, i) => {
          const fence = fenced[i];
          if (fence instanceof Error) outcomes[i] = fence;
          return fence instanceof Error ? [] : [i];
        });
        const recorded = accepted.filter((i) => batch[i]!.record !== undefined);
        const refused = await recordCommands(
          tx,
          recorded.map((i) => batch[i]!.record!),
        );
        refused.forEach((wasRefused, k) => {
          const record = batch[recorded[k]!]!.record!;
          if (wasRefused)
            outcomes[recorded[k]!] = new CommandAlreadyRecordedError(record.sessionId, record.seq);
        });
        const audits = accepted.flatMap((i) => (outcomes[i] ? [] : batch[i]!.audits));
        await appendAudits(tx, audits);
      });
      this.batches++;
      batch.forEach((pending, i) => {
        const outcome = outcomes[i];
        if (outcome) pending.reject(outcome);
        else pending.resolve();
      });
    } catch (error) {
      for (const pending of batch) pending.reject(error);
    } finally {
      this.running = false;
      this.schedule();
    }
  }
}

const BATCHERS = new WeakMap<Storage, RecordBatcher>();

/** The batcher of `storage` (one per storage, so one batch at a time on its connection). */
export function recordBatcher(storage: Storage): RecordBatcher {
  let batcher = BATCHERS.get(storage);
  if (!batcher) {
    batcher = new RecordBatcher(storage);
    BATCHERS.set(storage, batcher);
  }
  return batcher;
}

export type { RecordBatcher };
