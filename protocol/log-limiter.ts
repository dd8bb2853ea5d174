/**
 * A rate limit on repeated log lines, per message: at most `lines` lines of one message per
 * interval are written; the rest are counted, and one summary line says how many were left out
 * when the interval ends. Whatever a peer makes us log once per attempt (a refused sign-in, a
 * closed connection) then costs at most `lines + 1` lines per interval and message, so a flood of
 * attempts cannot fill the disk or bury the lines that matter.
 *
 * No timer runs while nothing is suppressed: a window is a start time and two counters, and the
 * summary's timer is armed by the first suppressed line only.
 */
import type { Logger, LogLevel } from './log.js';

export interface LogLimit {
  /** Lines of one message written per interval (the first ones). */
  readonly lines: number;
  readonly intervalMs: number;
  /** Messages tracked at once (a bound on memory; the oldest window is summarised and dropped). */
  readonly maxKeys?: number;
}

/** Message of the summary line; its `repeated` field names the message that was held back. */
export const SUPPRESSED_LINES_MESSAGE = 'repeated log lines suppressed';

const DEFAULT_MAX_KEYS = 1000;

interface Window {
  readonly start: number;
  written: number;
  suppressed: number;
  /** Level of the held-back lines: the summary is written at the same level. */
  level: LogLevel;
  timer: NodeJS.Timeout | undefined;
}

export class LogRateLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly maxKeys: number;

  constructor(
    private readonly logger: Logger,
    private readonly limit: LogLimit,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isInteger(limit.lines) || limit.lines < 0)
      throw new RangeError('lines must be a whole number >= 0');
    if (!(limit.intervalMs > 0)) throw new RangeError('intervalMs must be > 0');
    this.maxKeys = limit.maxKeys ?? DEFAULT_MAX_KEYS;
  }

  /**
   * Writes `message` with `meta` unless `key` (default: the message) has had its lines in this
   * interval; returns whether the line was written.
   */
  log(level: LogLevel, message: string, meta: Record<string, unknown> = {}, key = message): boolean {
    const now = this.now();
    let window = this.windows.get(key);
    if (window && now - window.start >= this.limit.intervalMs) {
      this.close(key, window);
      window = undefined;
    }
    if (!window) {
      if (this.windows.size >= this.maxKeys) {
        const [oldestKey, oldest] = this.windows.entries().next().value as [string, Window];
        this.close(oldestKey, oldest);
      }
      window = { start: now, written: 0, suppressed: 0, level, timer: undefined };
      this.windows.set(key, window);
    }
    if (window.written < this.limit.lines) {
      window.written++;
      this.logger.log(level, message, meta);
      return true;
    }
    window.suppressed++;
    window.level = level;
    if (!window.timer) {
      const open = window;
      open.timer = setTimeout(() => this.close(key, open), open.start + this.limit.intervalMs - now);
      open.timer.unref();
    }
    return false;
  }

  /** Writes the summaries of every open window now (at shutdown) and forgets them. */
  flush(): void {
    for (const [key, window] of [...this.windows]) this.close(key, window);
  }

  /** Windows tracked (for tests). */
  get size(): number {
    return this.windows.size;
  }

  private close(key: string, window: Window): void {
    clearTimeout(window.timer);
    if (this.windows.get(key) === window) this.windows.delete(key);
    if (window.suppressed > 0) {
      this.logger.log(window.level, SUPPRESSED_LINES_MESSAGE, {
        repeated: key,
        suppressed: window.suppressed,
        written: window.written,
        intervalSeconds: this.limit.intervalMs / 1000,
      });
    }
  }
}
