/**
 * When SQLite copies its WAL back into the database file (a checkpoint), moved off the commit path.
 *
 * By default SQLite checkpoints inside the COMMIT that takes the WAL past 1,000 pages, and with
 * `synchronous = NORMAL` that checkpoint fsyncs the WAL and the database file on the event loop:
 * measured here, 3 to 21 ms every ~110 signatures, two thirds of the mean cost of a commit, and a
 * stall for every session of the server. Instead:
 *
 * - the database's own limit (`wal_autocheckpoint`) is raised to `BACKSTOP_WAL_PAGES`, so a server
 *   that never idles still checkpoints, 16 times less often;
 * - once no transaction has committed for `CHECKPOINT_IDLE_MS`, `WalCheckpointer` runs a PASSIVE
 *   checkpoint (through the storage's connection lock, never inside a transaction), so a server
 *   with pauses, which is every interactive one, checkpoints while nobody waits.
 *
 * Durability is SQLite's own: the checkpoint still fsyncs before it lets the WAL restart.
 */

/** The WAL size (pages) at which SQLite checkpoints inside a commit regardless. */
export const BACKSTOP_WAL_PAGES = 16_000;

/** Quiet time after the last commit before the idle checkpoint runs. */
export const CHECKPOINT_IDLE_MS = 200;

export class WalCheckpointer {
  private timer: NodeJS.Timeout | undefined;
  private lastCommitAt = 0;
  /** Commits since the last checkpoint began. */
  private dirty = false;
  private closed = false;
  private running: Promise<void> | undefined;
  private done = 0;

  constructor(
    /** Runs one PASSIVE checkpoint, outside any transaction. */
    private readonly checkpoint: () => Promise<void>,
    private readonly onBackgroundError: (error: Error) => void,
    private readonly idleMs = CHECKPOINT_IDLE_MS,
  ) {}

  /** Idle checkpoints run so far. */
  get checkpoints(): number {
    return this.done;
  }

  /** Called after every commit: notes the time (one timer for all commits, not one each). */
  noteCommit(): void {
    if (this.closed) return;
    this.lastCommitAt = performance.now();
    this.dirty = true;
    if (!this.timer) this.arm(this.idleMs);
  }

  /** Stops the timer and waits for a checkpoint that is running. */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private arm(delayMs: number): void {
    this.timer = setTimeout(() => {
      this.timer = undefined;
      if (this.closed || !this.dirty) return;
      const quietFor = performance.now() - this.lastCommitAt;
      if (quietFor < this.idleMs) {
        this.arm(this.idleMs - quietFor);
        return;
      }
      this.dirty = false;
      this.running = this.checkpoint().then(
        () => {
          this.done++;
        },
        (error: unknown) => this.onBackgroundError(error instanceof Error ? error : new Error(String(error))),
      );
      void this.running.finally(() => (this.running = undefined));
    }, delayMs);
    this.timer.unref();
  }
}
