/**
 * Durability for the SQLite database, off the event loop. SQLite runs with `synchronous = NORMAL`
 * in WAL mode: a COMMIT writes its frames to the WAL (atomic, and safe from a process crash at
 * once) but does not fsync. This module makes commits durable against a power cut:
 *
 * - `sync()` fsyncs the WAL on the libuv thread pool and resolves once every commit made before
 *   the call is on disk. Calls while an fsync runs share the next one, so concurrent durable
 *   commits cost one fsync together (group commit), and the event loop never waits on the disk.
 * - `syncSoon()` is for commits allowed to be lazy (records of private-key operations): an fsync
 *   within `LAZY_SYNC_DELAY_MS`, shared with any durable commit in between.
 *
 * WAL order makes any fsync cover every earlier commit, so a power cut loses at most a suffix of
 * lazy commits, never a durable one and never a commit before a durable one.
 */
import { open, type FileHandle } from 'node:fs/promises';

/** Longest a lazy commit stays only in the page cache. */
export const LAZY_SYNC_DELAY_MS = 100;

export class WalSync {
  private handle: Promise<FileHandle> | undefined;
  private running: Promise<void> | undefined;
  private next: Promise<void> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private completed = 0;

  constructor(
    /** The database file; its WAL is `<file>-wal`. */
    private readonly databaseFile: string,
    private readonly onBackgroundError: (error: Error) => void,
  ) {}

  /** Resolves when everything committed before this call is on disk. */
  sync(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (!this.running) {
      this.running = this.fsync().finally(() => (this.running = undefined));
      return this.running;
    }
    // The running fsync may have started before our commit: wait for the one after it.
    this.next ??= this.running
      .catch(() => undefined)
      .then(() => {
        this.next = undefined;
        return this.sync();
      });
    return this.next;
  }

  /** fsyncs completed so far. */
  get flushes(): number {
    return this.completed;
  }

  /** Makes the commits so far durable within LAZY_SYNC_DELAY_MS, in the background. */
  syncSoon(): void {
    if (this.closed || this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.sync().catch((error: unknown) => this.report(error));
    }, LAZY_SYNC_DELAY_MS);
    this.timer.unref();
  }

  /** Flushes what is pending and releases the file; later calls do nothing. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.sync().catch((error: unknown) => this.report(error));
    this.closed = true;
    const handle = this.handle;
    this.handle = undefined;
    if (handle) await (await handle.catch(() => undefined))?.close();
  }

  /** A flush nobody waits for failed: tell the storage's background error handler. */
  private report(error: unknown): void {
    this.onBackgroundError(error instanceof Error ? error : new Error(String(error)));
  }

  private async fsync(): Promise<void> {
    this.handle ??= open(`${this.databaseFile}-wal`, 'r').catch((error: unknown) => {
      this.handle = undefined;
      throw error;
    });
    const handle = await this.handle;
    await handle.sync();
    this.completed++;
  }
}
