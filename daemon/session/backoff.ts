/**
 * Reconnect delays: exponential with "full jitter" (a uniformly random delay between 0 and the
 * exponential cap), so that many daemons cut off by one server restart do not all return in the
 * same instant. See docs/daemon.md, "Faults".
 */
export interface BackoffSettings {
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
}

export class Backoff {
  private attempt = 0;

  constructor(
    private readonly settings: BackoffSettings,
    private readonly random: () => number = Math.random,
  ) {}

  /** The delay before the next attempt; each call doubles the cap up to `maxDelayMs`. */
  next(): number {
    const cap = Math.min(
      this.settings.maxDelayMs,
      this.settings.initialDelayMs * 2 ** Math.min(this.attempt, 30),
    );
    this.attempt++;
    // Never below a tenth of the initial delay: a zero delay would spin on a refusing server.
    const floor = Math.ceil(this.settings.initialDelayMs / 10);
    return Math.max(floor, Math.round(floor + this.random() * (cap - floor)));
  }

  /** A connection worked: start again from the initial delay. */
  reset(): void {
    this.attempt = 0;
  }

  get attempts(): number {
    return this.attempt;
  }
}
