/**
 * The daemon's reader: the slots of the cardlink pcsc-lite driver, kept across driver restarts.
 * When pcscd (and with it the driver) restarts, the connection drops; this reconnects and inserts
 * again every card that was in a slot, so a pcscd restart costs the user nothing.
 */
import { EventEmitter } from 'node:events';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { BridgeSocketClient } from './bridge-socket-client.js';
import { pcscReaderName } from './reader-names.js';
import type { VirtualCard } from './virtual-card.js';

/** Between attempts to reach the driver's socket again. */
export const BRIDGE_RECONNECT_DELAY_MS = 1000;

export interface ReaderSlots {
  /** Slots cards may go into (the driver's, capped by config). */
  readonly slotCount: number;
  insert(slot: number, card: VirtualCard): void;
  remove(slot: number): Promise<void>;
  /** The PC/SC reader name of `slot`. */
  readerName(slot: number): string;
  close(): Promise<void>;
}

export interface BridgeReaderEvents {
  /** The driver went away (cards come back when it returns). */
  lost: [CardlinkError];
  restored: [];
}

export class BridgeReader extends EventEmitter<BridgeReaderEvents> implements ReaderSlots {
  private client: BridgeSocketClient | undefined;
  private readonly cards = new Map<number, VirtualCard>();
  private closing = false;
  private retry: NodeJS.Timeout | undefined;

  private constructor(
    private readonly socketPath: string,
    private readonly friendlyName: string,
    readonly slotCount: number,
    private readonly logger: Logger,
    client: BridgeSocketClient,
  ) {
    super();
    this.attach(client);
  }

  /** Connects to the driver; fails when it is not there (the caller says how to install it). */
  static async open(options: {
    socketPath: string;
    friendlyName: string;
    maxSlots: number;
    logger: Logger;
  }): Promise<BridgeReader> {
    const client = await BridgeSocketClient.connect({
      socketPath: options.socketPath,
      logger: options.logger,
    });
    const slots = Math.min(client.slotCount, options.maxSlots);
    return new BridgeReader(options.socketPath, options.friendlyName, slots, options.logger, client);
  }

  readerName(slot: number): string {
    return pcscReaderName(this.friendlyName, slot);
  }

  insert(slot: number, card: VirtualCard): void {
    if (slot < 0 || slot >= this.slotCount)
      throw new CardlinkError('ERR_SLOT_UNAVAILABLE', `slot ${slot} does not exist`, { slot });
    this.cards.set(slot, card);
    if (this.client && !this.client.isOccupied(slot)) this.client.insert(slot, card);
  }

  async remove(slot: number): Promise<void> {
    this.cards.delete(slot);
    if (this.client?.isOccupied(slot)) await this.client.remove(slot).catch(() => undefined);
  }

  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.retry);
    this.cards.clear();
    await this.client?.close();
  }

  private attach(client: BridgeSocketClient): void {
    this.client = client;
    client.once('close', (error) => {
      this.client = undefined;
      if (this.closing) return;
      const why = error ?? new CardlinkError('ERR_BRIDGE_CLOSED', 'the reader driver closed the connection');
      this.logger.warn('reader driver connection lost; reconnecting', { code: why.code });
      this.emit('lost', why);
      this.scheduleReconnect();
    });
    for (const [slot, card] of this.cards) if (!client.isOccupied(slot)) client.insert(slot, card);
  }

  private scheduleReconnect(): void {
    this.retry = setTimeout(() => {
      BridgeSocketClient.connect({ socketPath: this.socketPath, logger: this.logger }).then(
        (client) => {
          if (this.closing) {
            void client.close();
            return;
          }
          this.attach(client);
          this.logger.info('reader driver connection restored', { cards: this.cards.size });
          this.emit('restored');
        },
        () => this.scheduleReconnect(),
      );
    }, BRIDGE_RECONNECT_DELAY_MS);
    this.retry.unref();
  }
}
