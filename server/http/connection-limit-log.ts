/**
 * Sockets that a connection limit refused or closed, logged as one summary line per window
 * instead of one line per socket: a flood of connections must not become a flood of log lines
 * (disk, and the operator's attention). The summary names the limit settings that acted, how many
 * sockets each took, and the source addresses that hit them most.
 */
import type { Logger } from '../../protocol/log.js';

/** One summary line at most this often while limits keep acting. */
export const CONNECTION_LIMIT_LOG_WINDOW_MS = 10_000;

/** Source addresses named in one summary (the rest are counted, not named). */
const ADDRESSES_NAMED = 5;

/** Distinct addresses counted per window; beyond this a flood from many addresses costs no memory. */
const ADDRESSES_TRACKED = 1_000;

/** The settings whose action is logged. Caps refuse (warn); timeouts close routine leftovers (info). */
export type ConnectionLimit =
  | 'maxSockets'
  | 'maxSocketsPerAddress'
  | 'tlsHandshakeTimeoutSeconds'
  | 'headersTimeoutSeconds'
  | 'socketIdleTimeoutSeconds';

const CAPS: ReadonlySet<ConnectionLimit> = new Set(['maxSockets', 'maxSocketsPerAddress']);

export class ConnectionLimitLog {
  private byLimit = new Map<ConnectionLimit, number>();
  private byAddress = new Map<string, number>();
  /** Sockets from addresses beyond ADDRESSES_TRACKED in this window. */
  private untracked = 0;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly logger: Logger,
    private readonly windowMs = CONNECTION_LIMIT_LOG_WINDOW_MS,
  ) {}

  record(limit: ConnectionLimit, address: string): void {
    this.byLimit.set(limit, (this.byLimit.get(limit) ?? 0) + 1);
    const seen = this.byAddress.get(address);
    if (seen !== undefined || this.byAddress.size < ADDRESSES_TRACKED)
      this.byAddress.set(address, (seen ?? 0) + 1);
    else this.untracked++;
    if (!this.timer) {
      this.timer = setTimeout(() => this.flush(), this.windowMs);
      this.timer.unref();
    }
  }

  /** Writes the pending summary, if any (at shutdown, so nothing counted is lost). */
  flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.byLimit.size === 0) return;
    const limits: Record<string, number> = {};
    let refused = false;
    for (const [limit, count] of this.byLimit) {
      limits[`limits.${limit}`] = count;
      if (CAPS.has(limit)) refused = true;
    }
    const top = [...this.byAddress]
      .sort((a, b) => b[1] - a[1])
      .slice(0, ADDRESSES_NAMED)
      .map(([address, sockets]) => ({ address, sockets }));
    const line = {
      windowSeconds: this.windowMs / 1000,
      limits,
      addresses: top,
      otherAddresses: this.byAddress.size - top.length,
      ...(this.untracked > 0 ? { socketsFromUntrackedAddresses: this.untracked } : {}),
    };
    if (refused) this.logger.warn('connection limits refused or closed sockets', line);
    else this.logger.info('connection limits closed sockets', line);
    this.byLimit = new Map();
    this.byAddress = new Map();
    this.untracked = 0;
  }
}
