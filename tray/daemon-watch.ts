/**
 * The tray's line to the daemon: one authenticated control connection (control-client.ts, the
 * only way the tray talks to the daemon), kept open for as long as the tray runs. It connects
 * again after the daemon restarts (every `retryMs`), fetches `status` after each event (events
 * are hints; the status is the truth) and every `pollMs` besides (the round trip, and states
 * no event announces), and passes the events on for what only they tell.
 *
 * Status fetches never overlap: one asked for while another runs is made once that one ends.
 */
import { EventEmitter } from 'node:events';
import { CardlinkError } from '../protocol/errors.js';
import { ControlClient, type RequestParamsArg } from '../daemon/control/control-client.js';
import type {
  ControlEvent,
  ControlMethod,
  ControlResults,
  DaemonStatus,
} from '../daemon/control/control-protocol.js';

/** The name the tray gives in its hello (the daemon logs it). */
export const TRAY_CLIENT_NAME = 'cardlink-tray';
/** How often the tray tries to reach a daemon that is not there. */
export const DAEMON_RETRY_MS = 2000;
/** How often the tray asks for the status without an event. */
export const STATUS_POLL_MS = 5000;

export interface DaemonWatchOptions {
  socketPath: string;
  secretFile: string;
  retryMs?: number;
  pollMs?: number;
}

export interface DaemonWatchEvents {
  /** A fresh status. */
  status: [DaemonStatus];
  /** An event the daemon pushed. */
  event: [ControlEvent];
  /** The tray has no daemon (never had, or lost it): why. Repeats on each failed attempt. */
  unreachable: [CardlinkError];
}

export class DaemonWatch extends EventEmitter<DaemonWatchEvents> {
  private client: ControlClient | undefined;
  private stopped = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private fetching = false;
  private fetchAgain = false;

  constructor(private readonly options: DaemonWatchOptions) {
    super();
  }

  /** Starts connecting (and keeps at it until stop()). */
  start(): void {
    void this.connect();
  }

  /** A request on the current connection; ERR_CONTROL_UNAVAILABLE while there is none. */
  request<M extends ControlMethod>(method: M, ...args: RequestParamsArg<M>): Promise<ControlResults[M]> {
    const client = this.client;
    if (!client || client.closed)
      return Promise.reject(
        new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the tray is not connected to the cardlink daemon'),
      );
    return client.request(method, ...args);
  }

  /** Fetches the status now (after an action, or an event). */
  refresh(): void {
    if (!this.client) return;
    if (this.fetching) {
      this.fetchAgain = true;
      return;
    }
    this.fetching = true;
    this.request('status').then(
      (status) => {
        this.fetching = false;
        this.emit('status', status);
        if (this.fetchAgain) {
          this.fetchAgain = false;
          this.refresh();
        }
      },
      () => {
        // The connection ended; its close handler reports it and connects again.
        this.fetching = false;
        this.fetchAgain = false;
      },
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pollTimer);
    const client = this.client;
    this.client = undefined;
    await client?.close();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    let client: ControlClient;
    try {
      client = await ControlClient.connect({
        socketPath: this.options.socketPath,
        secretFile: this.options.secretFile,
        clientName: TRAY_CLIENT_NAME,
      });
    } catch (error) {
      this.emit('unreachable', asCardlinkError(error));
      this.retryLater();
      return;
    }
    if (this.stopped) {
      await client.close();
      return;
    }
    this.client = client;
    client.on('event', (event) => {
      this.emit('event', event);
      this.refresh();
    });
    client.on('close', (error) => {
      if (this.client !== client) return;
      this.client = undefined;
      clearInterval(this.pollTimer);
      if (this.stopped) return;
      this.emit(
        'unreachable',
        error ?? new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the cardlink daemon closed the connection'),
      );
      this.retryLater();
    });
    this.pollTimer = setInterval(() => this.refresh(), this.options.pollMs ?? STATUS_POLL_MS);
    this.refresh();
  }

  private retryLater(): void {
    if (this.stopped) return;
    this.retryTimer = setTimeout(() => void this.connect(), this.options.retryMs ?? DAEMON_RETRY_MS);
  }
}

function asCardlinkError(error: unknown): CardlinkError {
  if (error instanceof CardlinkError) return error;
  return new CardlinkError('ERR_CONTROL_UNAVAILABLE', `cannot reach the cardlink daemon: ${String(error)}`);
}
