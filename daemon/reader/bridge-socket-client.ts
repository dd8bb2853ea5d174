/**
 * Client side of the reader bridge: connects to the Unix socket our pcsc-lite driver listens on
 * (DEVICENAME in reader.conf), inserts and removes VirtualCards, and answers the driver's power and
 * APDU messages. Protocol: docs/reader-bridge.md.
 *
 * Reconnecting is the caller's concern: after 'close' every card is out of the reader.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { socketHandshake } from '../net/socket-handshake.js';
import {
  BRIDGE_VERSION,
  encodeMessage,
  GoodbyeReason,
  MAX_PAYLOAD_BYTES,
  MessageDecoder,
  MessageType,
  type BridgeMessage,
} from './bridge-protocol.js';
import { isPlausibleAtr, MAX_ATR_BYTES, transmitSafely, type VirtualCard } from './virtual-card.js';

/** How long connect() waits for the socket and the driver's WELCOME. */
export const BRIDGE_CONNECT_TIMEOUT_MS = 5000;
/** How long remove() lets the card finish the APDU it is answering before REMOVE goes out anyway. */
export const REMOVE_AFTER_ANSWER_MS = 200;

export interface BridgeSocketClientOptions {
  /** The driver's socket: the path part of DEVICENAME. */
  socketPath: string;
  /** Overrides BRIDGE_CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
  logger?: Logger;
}

interface SlotEntry {
  card: VirtualCard;
  /** remove() called: messages for this slot from now on are stale. */
  removing: boolean;
  /** REMOVE written: not even the answer to the APDU in progress may follow it. */
  removeSent: boolean;
  /** Resolves when the driver confirms the removal (or the connection ends). */
  removed?: Promise<void>;
  resolveRemoved?: () => void;
  /** Work for this card, in arrival order (reset, APDUs). */
  queue: Promise<void>;
}

export interface BridgeSocketClientEvents {
  /** The connection ended; `error` says why when it was not close() (ERR_BRIDGE_PROTOCOL / ERR_BRIDGE_CLOSED). */
  close: [error?: CardlinkError];
}

export class BridgeSocketClient extends EventEmitter<BridgeSocketClientEvents> {
  /** Number of slots of the reader, from the driver's WELCOME. */
  readonly slotCount: number;
  private readonly socket: net.Socket;
  private readonly decoder: MessageDecoder;
  private readonly slots: (SlotEntry | undefined)[];
  private readonly logger: Logger | undefined;
  private readonly socketPath: string;
  private closed = false;
  private closeError: CardlinkError | undefined;
  private readonly closedPromise: Promise<void>;

  private constructor(
    socket: net.Socket,
    decoder: MessageDecoder,
    slotCount: number,
    options: BridgeSocketClientOptions,
    pending: BridgeMessage[],
  ) {
    super();
    this.socket = socket;
    this.decoder = decoder;
    this.slotCount = slotCount;
    this.slots = new Array<SlotEntry | undefined>(slotCount).fill(undefined);
    this.logger = options.logger;
    this.socketPath = options.socketPath;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.closeError ??= new CardlinkError('ERR_BRIDGE_CLOSED', 'reader bridge connection failed', {
        socket: this.socketPath,
        errno: err.code ?? 'unknown',
      });
    });
    socket.on('close', () => this.onClose());
    for (const m of pending) this.handle(m);
  }

  /** Connects and performs the handshake: the driver's WELCOME, then our HELLO. */
  static connect(options: BridgeSocketClientOptions): Promise<BridgeSocketClient> {
    const timeoutMs = options.connectTimeoutMs ?? BRIDGE_CONNECT_TIMEOUT_MS;
    const ctx = { socket: options.socketPath };
    const socket = net.createConnection({ path: options.socketPath });
    const timeoutError = () =>
      new CardlinkError('ERR_BRIDGE_CLOSED', 'reader driver did not answer the bridge handshake in time', {
        ...ctx,
        timeoutMs,
      });
    return socketHandshake<BridgeSocketClient>(socket, timeoutMs, timeoutError, (handshake) => {
      const decoder = new MessageDecoder();
      let goodbye: number | undefined;
      const fail = (err: CardlinkError): void => handshake.fail(err);
      socket.on('error', (err: NodeJS.ErrnoException) => {
        if (goodbye !== undefined) return; // the reason arrived; 'close' reports it
        const hint =
          err.code === 'ENOENT' || err.code === 'ECONNREFUSED'
            ? 'no cardlink reader driver listens there: is pcscd running with the cardlink reader configured?'
            : err.code === 'EACCES'
              ? 'permission denied: only root and the uid configured in the reader DEVICENAME may connect'
              : 'cannot connect to the reader driver';
        fail(
          new CardlinkError('ERR_BRIDGE_CLOSED', `reader bridge: ${hint}`, {
            ...ctx,
            errno: err.code ?? 'unknown',
          }),
        );
      });
      socket.on('close', () => {
        const why =
          goodbye !== undefined
            ? (GoodbyeReason[goodbye] ?? `reason ${goodbye}`)
            : 'connection refused (not root or the configured uid?)';
        fail(
          new CardlinkError(
            'ERR_BRIDGE_CLOSED',
            `reader driver closed the bridge during the handshake: ${why}`,
            ctx,
          ),
        );
      });
      const onHandshakeData = (chunk: Buffer): void => {
        let messages: BridgeMessage[];
        try {
          messages = decoder.push(chunk);
        } catch (err) {
          fail(err as CardlinkError);
          return;
        }
        const [first, ...rest] = messages;
        if (!first) return;
        if (first.type === MessageType.GOODBYE && first.payload.length === 1) {
          goodbye = first.payload[0];
          return;
        }
        if (
          first.type !== MessageType.WELCOME ||
          first.slot !== 0 ||
          first.payload.length !== 2 ||
          first.payload[0] !== BRIDGE_VERSION
        ) {
          fail(
            new CardlinkError('ERR_BRIDGE_PROTOCOL', 'reader driver sent an unexpected handshake answer', {
              ...ctx,
              type: first.type,
            }),
          );
          return;
        }
        const slotCount = first.payload[1]!;
        if (slotCount < 1) {
          fail(new CardlinkError('ERR_BRIDGE_PROTOCOL', 'reader driver announced no slots', ctx));
          return;
        }
        handshake.succeed(() => {
          socket.write(encodeMessage(MessageType.HELLO, 0, Uint8Array.of(BRIDGE_VERSION)));
          return new BridgeSocketClient(socket, decoder, slotCount, options, rest);
        });
      };
      socket.on('data', onHandshakeData);
    });
  }

  /** Whether a card is in `slot` (a card being removed still counts until the driver confirms). */
  isOccupied(slot: number): boolean {
    return this.slots[slot] !== undefined;
  }

  /** Inserts `card` into an empty slot; pcscd sees it at once. */
  insert(slot: number, card: VirtualCard): void {
    this.checkSlot(slot);
    if (this.closed) throw new CardlinkError('ERR_BRIDGE_CLOSED', 'reader bridge is closed', { slot });
    if (this.slots[slot]) {
      throw new CardlinkError(
        'ERR_SLOT_UNAVAILABLE',
        this.slots[slot]!.removing
          ? 'slot is still being emptied: await remove() first'
          : 'slot already holds a card',
        { slot },
      );
    }
    const atr = card.atr;
    if (!(atr instanceof Uint8Array) || !isPlausibleAtr(atr)) {
      throw new CardlinkError(
        'ERR_BRIDGE_PROTOCOL',
        `card ATR must be 1..${MAX_ATR_BYTES} bytes starting with 3B or 3F`,
        { slot },
      );
    }
    this.slots[slot] = { card, removing: false, removeSent: false, queue: Promise.resolve() };
    this.socket.write(encodeMessage(MessageType.INSERT, slot, atr));
    // Debug only: the card manager logs "card inserted" with the card's id; one line per card.
    this.logger?.debug('reader slot filled', { slot });
  }

  /**
   * Removes the card in `slot`; resolves when the driver confirms (no APDU reaches it after that).
   * An APDU the card is answering gets its answer first, so the program that sent it sees a status
   * word (6F00 from a command the daemon gave up) rather than a removal error; waiting for it is
   * bounded by REMOVE_AFTER_ANSWER_MS.
   */
  remove(slot: number): Promise<void> {
    this.checkSlot(slot);
    const entry = this.slots[slot];
    if (!entry) return Promise.reject(new CardlinkError('ERR_SLOT_UNAVAILABLE', 'slot is empty', { slot }));
    if (entry.removed) return entry.removed;
    entry.removing = true;
    entry.removed = new Promise<void>((resolve) => {
      entry.resolveRemoved = resolve;
    });
    let bound: NodeJS.Timeout | undefined;
    const answered = new Promise<void>((resolve) => {
      bound = setTimeout(resolve, REMOVE_AFTER_ANSWER_MS);
      void entry.queue.then(resolve);
    });
    void answered.then(() => {
      clearTimeout(bound);
      entry.removeSent = true;
      if (this.closed) {
        this.clearSlot(slot);
      } else {
        this.socket.write(encodeMessage(MessageType.REMOVE, slot));
      }
    });
    return entry.removed;
  }

  /** Closes the connection; the driver then reports every slot empty. */
  async close(): Promise<void> {
    if (!this.closed) this.socket.end();
    await this.closedPromise;
  }

  private checkSlot(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount) {
      throw new CardlinkError('ERR_SLOT_UNAVAILABLE', `no such slot (the reader has ${this.slotCount})`, {
        slot,
        slots: this.slotCount,
      });
    }
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    let messages: BridgeMessage[];
    try {
      messages = this.decoder.push(chunk);
    } catch (err) {
      this.protocolError(err instanceof CardlinkError ? err.message : 'undecodable data', {});
      return;
    }
    for (const m of messages) {
      if (this.closed) return;
      this.handle(m);
    }
  }

  private handle(m: BridgeMessage): void {
    const { type, slot, payload } = m;
    if (type === MessageType.GOODBYE) {
      if (payload.length !== 1 || slot !== 0) return this.protocolError('malformed GOODBYE', { type });
      const reason = payload[0]!;
      this.closeError = new CardlinkError(
        'ERR_BRIDGE_CLOSED',
        `reader driver closed the bridge: ${GoodbyeReason[reason] ?? `reason ${reason}`}`,
        {
          socket: this.socketPath,
          reason,
        },
      );
      return;
    }
    if (slot >= this.slotCount)
      return this.protocolError('message for a slot the reader does not have', { type, slot });
    switch (type) {
      case MessageType.POWER_ON:
      case MessageType.RESET:
      case MessageType.POWER_OFF: {
        if (payload.length !== 0) return this.protocolError('power message with a payload', { type, slot });
        if (type === MessageType.POWER_OFF) return;
        const entry = this.live(slot);
        if (!entry) return;
        this.enqueue(entry, async () => {
          try {
            entry.card.reset();
          } catch (err) {
            this.logger?.warn('card reset failed', { slot, error: err });
          }
        });
        return;
      }
      case MessageType.APDU: {
        if (payload.length < 1 || payload.length > MAX_PAYLOAD_BYTES)
          return this.protocolError('APDU of invalid length', { type, slot });
        const entry = this.live(slot);
        if (!entry) return; // a REMOVE is in flight: the driver fails this transmit itself
        this.enqueue(entry, async () => {
          const response = await transmitSafely(entry.card, payload, MAX_PAYLOAD_BYTES);
          if (this.slots[slot] === entry && !entry.removeSent && !this.closed)
            this.socket.write(encodeMessage(MessageType.RESPONSE, slot, response));
        });
        return;
      }
      case MessageType.REMOVED: {
        const entry = this.slots[slot];
        if (payload.length !== 0 || !entry || !entry.removing)
          return this.protocolError('unexpected REMOVED', { type, slot });
        this.clearSlot(slot);
        this.logger?.debug('reader slot emptied', { slot });
        return;
      }
      default:
        return this.protocolError('unknown message type', { type, slot });
    }
  }

  /** The slot's card if it is in and not being removed. */
  private live(slot: number): SlotEntry | undefined {
    const entry = this.slots[slot];
    return entry && !entry.removing ? entry : undefined;
  }

  private enqueue(entry: SlotEntry, work: () => Promise<void>): void {
    entry.queue = entry.queue.then(work).catch((err: unknown) => {
      this.logger?.error('reader bridge slot work failed', { error: err });
    });
  }

  private clearSlot(slot: number): void {
    const entry = this.slots[slot];
    this.slots[slot] = undefined;
    entry?.resolveRemoved?.();
  }

  private protocolError(message: string, context: Record<string, string | number | boolean>): void {
    this.closeError = new CardlinkError('ERR_BRIDGE_PROTOCOL', `reader bridge: ${message}`, {
      socket: this.socketPath,
      ...context,
    });
    this.logger?.error('reader bridge protocol error; closing', { code: this.closeError.code, message });
    this.socket.destroy();
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    for (let slot = 0; slot < this.slotCount; slot++) this.clearSlot(slot);
    this.emit('close', this.closeError);
  }
}
