/**
 * Throttling of failed authentication (docs/security-model.md, "Failed sign-ins"): per key (a
 * source address, or a user for device-proof failures) a failure count that decays with a
 * half-life. Once the count passes `freeFailures`, each further failure makes the key wait
 * 1 s × 2^(count − freeFailures − 1), at most `maxDelaySeconds`. An attempt during the wait is
 * refused at once, before any token is looked at, and is not counted (a client that honours
 * "retry after" is not punished for one early retry).
 *
 * Attempts still running count as failures when admitting the next one, so a burst of parallel
 * attempts from one key cannot all start before the first failure is recorded.
 *
 * Memory is bounded: at most `maxEntries` keys, the least recently active dropped first; an entry
 * whose count has decayed away and whose wait is over is dropped when next seen.
 */
import { isIPv4, isIPv6 } from 'node:net';

export interface ThrottleLimits {
  /** Failures within the decay that cost nothing. */
  readonly freeFailures: number;
  /** Longest wait after a failure, in seconds. */
  readonly maxDelaySeconds: number;
  /** Time in which the failure count halves, in seconds. */
  readonly halfLifeSeconds: number;
  /** Keys tracked at once. */
  readonly maxEntries: number;
}

/** Wait after the first failure beyond the free ones; each further failure doubles it. */
export const BASE_DELAY_MS = 1000;
/** A count below this, with no wait left, is forgotten. */
const NEGLIGIBLE_FAILURES = 0.05;

interface Entry {
  /** Failure count at `at` (it decays from there). */
  failures: number;
  at: number;
  blockedUntil: number;
  /** Attempts admitted and not finished. */
  running: number;
}

export class FailureThrottle {
  private readonly entries = new Map<string, Entry>();

  constructor(
    private readonly limits: ThrottleLimits,
    private readonly now: () => number = Date.now,
  ) {
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isFinite(value) || value < 0)
        throw new RangeError(`throttle: ${name} must be a number >= 0`);
    }
    if (limits.maxEntries < 1) throw new RangeError('throttle: maxEntries must be at least 1');
    if (limits.halfLifeSeconds <= 0) throw new RangeError('throttle: halfLifeSeconds must be > 0');
  }

  /**
   * Admits an attempt by `key`: 0 when it may go on (then `finish` must follow), else the whole
   * seconds it must wait (the attempt is refused, and not counted).
   */
  admit(key: string): number {
    const now = this.now();
    const entry = this.entries.get(key);
    if (!entry) {
      this.touch(key, { failures: 0, at: now, blockedUntil: 0, running: 1 });
      return 0;
    }
    const wait = Math.max(
      entry.blockedUntil - now,
      // The running attempts, were they all to fail, would already make this one wait.
      entry.running > 0 ? this.delayFor(this.failuresAt(entry, now) + entry.running) : 0,
    );
    this.touch(key, entry);
    if (wait > 0) return Math.ceil(wait / 1000);
    entry.running++;
    return 0;
  }

  /** Ends an admitted attempt; a failed one raises the count and may start a wait. */
  finish(key: string, failed: boolean): void {
    const now = this.now();
    let entry = this.entries.get(key);
    if (!entry) {
      // Evicted while running: start over, counting this attempt.
      if (!failed) return;
      entry = { failures: 0, at: now, blockedUntil: 0, running: 0 };
    }
    entry.running = Math.max(0, entry.running - 1);
    if (failed) {
      entry.failures = this.failuresAt(entry, now) + 1;
      entry.at = now;
      entry.blockedUntil = Math.max(entry.blockedUntil, now + this.delayFor(entry.failures));
      this.touch(key, entry);
    } else if (entry.running === 0 && this.forgettable(entry, now)) {
      this.entries.delete(key);
    }
  }

  /** Forgets the failures of `key` (a user who just proved their device). */
  forgive(key: string): void {
    const entry = this.entries.get(key);
    if (!entry) return;
    if (entry.running > 0) {
      entry.failures = 0;
      entry.blockedUntil = 0;
    } else {
      this.entries.delete(key);
    }
  }

  /** The decayed failure count of `key` now (for tests and diagnostics). */
  failures(key: string): number {
    const entry = this.entries.get(key);
    return entry ? this.failuresAt(entry, this.now()) : 0;
  }

  /** Keys tracked. */
  get size(): number {
    return this.entries.size;
  }

  /** The wait, in ms, that `failures` failures earn. */
  delayFor(failures: number): number {
    const over = failures - this.limits.freeFailures;
    if (over <= 0) return 0;
    return Math.min(BASE_DELAY_MS * 2 ** (over - 1), this.limits.maxDelaySeconds * 1000);
  }

  private failuresAt(entry: Entry, now: number): number {
    const elapsed = Math.max(0, now - entry.at) / 1000;
    return entry.failures * 2 ** (-elapsed / this.limits.halfLifeSeconds);
  }

  private forgettable(entry: Entry, now: number): boolean {
    return entry.blockedUntil <= now && this.failuresAt(entry, now) < NEGLIGIBLE_FAILURES;
  }

  /** Marks `key` most recently active and drops the least recent beyond the cap. */
  private touch(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.entries.set(key, entry);
    while (this.entries.size > this.limits.maxEntries) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}

/**
 * The throttle key of a peer address: an IPv4 address as it is (also when written IPv4-mapped,
 * `::ffff:192.0.2.1`), an IPv6 address by its /64 prefix, since one host or customer is routinely
 * handed a whole /64 and could otherwise start afresh with each of its 2^64 addresses.
 */
export function addressThrottleKey(address: string): string {
  const bare = address.replace(/^\[|\]$/g, '').replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped) return mapped[1]!;
  if (isIPv4(bare) || !isIPv6(bare)) return bare;
  return `${expandIPv6(bare).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address (an embedded IPv4 tail becomes two groups). */
function expandIPv6(address: string): string[] {
  let text = address.toLowerCase();
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const middle = tail === undefined ? [] : Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...middle, ...right].map((group) => Number.parseInt(group, 16).toString(16));
}
