/**
 * The vsmartcard vpcd protocol, card side, for systems where our own driver does not exist. Two modes:
 * - `listen` (vpcd's reversed mode): this process LISTENS on loopback and vpcd (the pcsc-lite driver
 *   libifdvpcd.so inside pcscd, reader.conf `DEVICENAME localhost:<port>`) connects to it;
 * - `connect` (vpcd's normal mode, and Windows' BixVReader, which knows no other): vpcd listens
 *   (`DEVICENAME /dev/null:<port>`) and this process CONNECTS to it, one connection per slot, and
 *   connects again, with a growing pause, whenever the reader goes away (pcscd restarted, BixVReader's
 *   driver reloaded). vpcd binds its listener to every interface (`INADDR_ANY` in vpcd.c's opensock,
 *   0.8 to 0.10, no setting), so the machine's firewall must keep the port to loopback
 *   (docs/reader-vpcd.md); this side only ever connects to a loopback address.
 *
 * vpcd protocol: every message is a 2-byte big-endian length, then the payload. A 1-byte payload is a
 * control message: 00 power off, 01 power on, 02 reset, 04 get ATR (answered with the ATR); anything
 * longer is a C-APDU, answered with the R-APDU.
 *
 * vpcd opens one connection per slot: slot i connects to port + i. Measured on Debian 12
 * (vsmartcard-vpcd 3.3+dfsg / virtualsmartcard 0.8, pcsc-lite 1.9.9):
 * - vpcd has two slots ("<FRIENDLYNAME> 00 00" on port P, "00 01" on port P+1) and pcscd aborts
 *   (FD_SETSIZE check in vpcd's select()) when a slot's connection fails or is closed, or when a GET
 *   ATR is answered with nothing. So: listen on both ports before pcscd starts, keep a card in every
 *   slot while pcscd runs, and stop pcscd before this server.
 * - pcscd blocks at start until every slot answers GET ATR, and polls GET ATR every 400 ms.
 * - vpcd sends length and payload in two send() calls without TCP_NODELAY; with delayed ACK an APDU
 *   costs about 40 ms (bench/pcsc-roundtrip.ts). Newer virtualsmartcard (0.9+) fixed this and also
 *   reconnects, so there an empty slot ("no card", an empty GET ATR answer) works.
 *   The cure on our side (`quickAck`): TCP_QUICKACK set again after every chunk read and every answer
 *   written, so the length prefix is acknowledged at once and Nagle releases the payload; Linux leaves
 *   quick-ACK mode by itself once it sees request/response traffic, hence "again" (tcp-quickack.ts).
 *
 * Who may connect: a loopback port is open to every local user. On Linux a connection is taken only
 * from root (pcscd) or this process's user (loopback-peer.ts), checked before it can replace vpcd's;
 * elsewhere there is no check (docs/reader-vpcd.md).
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { loopbackPeerUid } from './loopback-peer.js';
import { DEFAULT_VPCD_HOST, isVpcdLoopbackHost } from './reader-names.js';
import type { RearmQuickAck } from './tcp-quickack.js';
import { isPlausibleAtr, MAX_ATR_BYTES, transmitSafely, type VirtualCard } from './virtual-card.js';

/** Slots of Debian 12's vpcd (VPCDSLOTS): one TCP port each, from the configured port up. */
export const VPCD_SLOTS = 2;
/** Largest vpcd message payload: the 2-byte length prefix. */
export const VPCD_MAX_MESSAGE_BYTES = 0xffff;
/** The address this server listens on unless told another loopback address. */
export const VPCD_LOOPBACK_HOST = DEFAULT_VPCD_HOST;

/** Connect mode: first pause before connecting again to a reader that went away or is not there. */
export const VPCD_RECONNECT_INITIAL_MS = 250;
/** Connect mode: longest pause between attempts (the pause doubles up to it). */
export const VPCD_RECONNECT_MAX_MS = 5_000;

/** Who listens: this process (vpcd's reversed mode) or vpcd / BixVReader (normal mode). */
export type VpcdMode = 'listen' | 'connect';

/** vpcd control bytes (virtualsmartcard src/vpcd/vpcd.h). */
export const VpcdControl = { POWER_OFF: 0x00, POWER_ON: 0x01, RESET: 0x02, GET_ATR: 0x04 } as const;

export interface VpcdCardServerOptions {
  /** First port (slot 0); slot i uses port + i. The CHANNELID / DEVICENAME port of the vpcd reader. */
  port: number;
  /** Overrides VPCD_SLOTS. */
  slots?: number;
  /** Loopback address to listen on, or to connect to (isVpcdLoopbackHost); default VPCD_LOOPBACK_HOST. */
  host?: string;
  /** Overrides VPCD_RECONNECT_INITIAL_MS / VPCD_RECONNECT_MAX_MS (connect mode). */
  reconnect?: { initialMs: number; maxMs: number };
  /** Re-arms TCP_QUICKACK on vpcd's connections (tcp-quickack.ts); without it, delayed ACK applies. */
  quickAck?: RearmQuickAck | undefined;
  /**
   * Linux: the uids whose connections are taken (loopback-peer.ts), others are closed at once; in
   * connect mode, the uids that may own the listener's end (a squatter on vpcd's port gets no card).
   * Default: root (pcscd) and this process's user; elsewhere there is no check (docs/reader-vpcd.md).
   */
  allowedPeerUids?: readonly number[];
  logger?: Logger;
}

interface VpcdSlot {
  card: VirtualCard | undefined;
  server: net.Server;
  connection: net.Socket | undefined;
  /** Connect mode: the pending reconnect, and the pause before the next one. */
  retry: NodeJS.Timeout | undefined;
  delayMs: number;
  /** Connect mode: whether the last failure was logged (one line per outage, not one per attempt). */
  warned: boolean;
}

export class VpcdCardServer extends EventEmitter {
  readonly port: number;
  readonly host: string;
  readonly slotCount: number;
  private readonly slots: VpcdSlot[];
  private readonly logger: Logger | undefined;
  private readonly quickAck: RearmQuickAck | undefined;
  private readonly allowedPeerUids: readonly number[] | undefined;
  private readonly reconnect: { initialMs: number; maxMs: number };
  private closed = false;

  constructor(options: VpcdCardServerOptions) {
    super();
    const slots = options.slots ?? VPCD_SLOTS;
    if (!Number.isInteger(options.port) || options.port < 1 || options.port + slots - 1 > 0xffff) {
      throw new CardlinkError('ERR_CONFIG_INVALID', 'vpcd port out of range', { port: options.port, slots });
    }
    const host = options.host ?? VPCD_LOOPBACK_HOST;
    if (!isVpcdLoopbackHost(host))
      throw new CardlinkError('ERR_CONFIG_INVALID', 'vpcd host must be a loopback address', { host });
    this.port = options.port;
    // vpcd resolves "localhost" to 127.0.0.1 (IPv4 only); listen where it will connect.
    this.host = host === 'localhost' ? VPCD_LOOPBACK_HOST : host;
    this.quickAck = options.quickAck;
    this.allowedPeerUids =
      options.allowedPeerUids ??
      (process.platform === 'linux' && process.getuid ? [0, process.getuid()] : undefined);
    this.slotCount = slots;
    this.logger = options.logger;
    this.reconnect = options.reconnect ?? {
      initialMs: VPCD_RECONNECT_INITIAL_MS,
      maxMs: VPCD_RECONNECT_MAX_MS,
    };
    this.slots = Array.from({ length: slots }, (_, i) => ({
      card: undefined,
      connection: undefined,
      server: net.createServer((socket) => this.onConnection(i, socket)),
      retry: undefined,
      delayMs: this.reconnect.initialMs,
      warned: false,
    }));
  }

  /** Ports in slot order. */
  get ports(): number[] {
    return this.slots.map((_, i) => this.port + i);
  }

  /** Listens on the loopback host on every slot's port. Call before pcscd starts. */
  async listen(): Promise<void> {
    await Promise.all(
      this.slots.map(
        (s, i) =>
          new Promise<void>((resolve, reject) => {
            s.server.once('error', (err: NodeJS.ErrnoException) =>
              reject(
                new CardlinkError('ERR_CONFIG_INVALID', 'cannot listen for vpcd', {
                  port: this.port + i,
                  errno: err.code ?? 'unknown',
                }),
              ),
            );
            s.server.listen({ host: this.host, port: this.port + i, exclusive: true }, () => resolve());
          }),
      ),
    );
  }

  /**
   * Connect mode: connects to vpcd's listener on every slot's port and keeps connecting again while
   * this server is open. Returns at once; the reader need not be there yet (`connected` events).
   */
  connect(): void {
    for (let i = 0; i < this.slots.length; i++) this.connectSlot(i);
  }

  /** Whether vpcd is connected on `slot` (either mode). */
  isConnected(slot: number): boolean {
    return this.slot(slot).connection !== undefined;
  }

  /** Puts `card` into `slot`; vpcd reports it at its next GET ATR poll. */
  insert(slot: number, card: VirtualCard): void {
    const s = this.slot(slot);
    if (s.card) throw new CardlinkError('ERR_SLOT_UNAVAILABLE', 'slot already holds a card', { slot });
    if (!(card.atr instanceof Uint8Array) || !isPlausibleAtr(card.atr)) {
      throw new CardlinkError(
        'ERR_CONFIG_INVALID',
        `card ATR must be 1..${MAX_ATR_BYTES} bytes starting with 3B or 3F`,
        { slot },
      );
    }
    s.card = card;
  }

  /**
   * Empties `slot`: GET ATR is then answered with nothing ("no card"). Debian 12's vpcd aborts pcscd on
   * that (see the module comment): there, only remove a card after pcscd has stopped.
   */
  remove(slot: number): void {
    const s = this.slot(slot);
    if (!s.card) throw new CardlinkError('ERR_SLOT_UNAVAILABLE', 'slot is empty', { slot });
    s.card = undefined;
  }

  /**
   * Puts `card` into `slot` in place of what is there, in one step: vpcd's next GET ATR sees the new
   * card and never an empty slot (which Debian 12's vpcd cannot survive).
   */
  replace(slot: number, card: VirtualCard): void {
    const s = this.slot(slot);
    const previous = s.card;
    s.card = undefined;
    try {
      this.insert(slot, card);
    } catch (error) {
      s.card = previous;
      throw error;
    }
  }

  isOccupied(slot: number): boolean {
    return this.slot(slot).card !== undefined;
  }

  /** Stops listening (or connecting) and drops vpcd's connections. Listen mode: stop pcscd first. */
  async close(): Promise<void> {
    this.closed = true;
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            clearTimeout(s.retry);
            s.connection?.destroy();
            if (s.server.listening) s.server.close(() => resolve());
            else resolve();
          }),
      ),
    );
  }

  private connectSlot(slot: number): void {
    const s = this.slots[slot]!;
    s.retry = undefined;
    if (this.closed) return;
    const socket = net.connect({ host: this.host, port: this.port + slot });
    const retry = (why: string) => {
      if (this.closed || s.retry) return;
      if (!s.warned) {
        // Once per outage: the reader not running yet is normal at boot, not worth a line a second.
        this.logger?.info('vpcd reader not reachable; connecting again', {
          slot,
          port: this.port + slot,
          why,
        });
        s.warned = true;
      }
      s.retry = setTimeout(() => this.connectSlot(slot), s.delayMs);
      s.delayMs = Math.min(s.delayMs * 2, this.reconnect.maxMs);
    };
    socket.once('connect', () => {
      if (this.closed) return socket.destroy();
      if (!this.attach(slot, socket)) return retry('listener not owned by root or this user');
      s.delayMs = this.reconnect.initialMs;
      s.warned = false;
      socket.once('close', () => retry('disconnected'));
    });
    socket.on('error', (err: NodeJS.ErrnoException) => {
      socket.destroy();
      retry(err.code ?? 'error');
    });
  }

  private slot(slot: number): VpcdSlot {
    const s = Number.isInteger(slot) ? this.slots[slot] : undefined;
    if (!s)
      throw new CardlinkError('ERR_SLOT_UNAVAILABLE', `no such slot (vpcd has ${this.slotCount})`, { slot });
    return s;
  }

  private onConnection(slot: number, socket: net.Socket): void {
    this.attach(slot, socket);
  }

  /** Serves `slot` on a connection with vpcd (accepted or made); false when its peer was refused. */
  private attach(slot: number, socket: net.Socket): boolean {
    const s = this.slots[slot]!;
    if (this.allowedPeerUids) {
      // Before anything else: a refused peer must not displace vpcd's connection either. In connect
      // mode the peer is the listener's accepted socket, owned by whoever listens on vpcd's port.
      const uid = loopbackPeerUid(socket);
      if (uid === undefined || !this.allowedPeerUids.includes(uid)) {
        this.logger?.warn('vpcd connection refused: not from root or this user', {
          slot,
          uid: uid ?? 'unknown',
        });
        socket.destroy();
        return false;
      }
    }
    socket.setNoDelay(true);
    // vpcd opens one connection per slot; a new one (a reconnect) replaces the old one.
    s.connection?.destroy();
    s.connection = socket;
    this.logger?.info('vpcd connected', { slot });
    this.quickAck?.(socket);
    let buffered: Buffer = Buffer.alloc(0);
    let queue: Promise<void> = Promise.resolve();
    socket.on('data', (chunk: Buffer) => {
      // Armed before the next segment arrives: the rest of this message, or the next message.
      this.quickAck?.(socket);
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      while (buffered.length >= 2) {
        const len = buffered.readUInt16BE(0);
        if (buffered.length < 2 + len) break;
        const payload = Buffer.from(buffered.subarray(2, 2 + len));
        buffered = buffered.subarray(2 + len);
        queue = queue
          .then(() => this.handle(slot, socket, payload))
          .catch((err: unknown) => {
            this.logger?.error('vpcd message failed', { slot, error: err });
          });
      }
    });
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      if (s.connection === socket) s.connection = undefined;
      this.logger?.info('vpcd disconnected', { slot });
    });
    return true;
  }

  private async handle(slot: number, socket: net.Socket, payload: Buffer): Promise<void> {
    const card = this.slots[slot]!.card;
    if (payload.length === 0) return;
    if (payload.length === 1) {
      switch (payload[0]) {
        case VpcdControl.GET_ATR:
          return this.reply(socket, card ? card.atr : new Uint8Array(0));
        case VpcdControl.POWER_ON:
        case VpcdControl.RESET:
          try {
            card?.reset();
          } catch (err) {
            this.logger?.warn('card reset failed', { slot, error: err });
          }
          return;
        case VpcdControl.POWER_OFF:
          return;
        default:
          this.logger?.warn('unknown vpcd control message', { slot, control: payload[0] });
          return;
      }
    }
    if (!card) return this.reply(socket, new Uint8Array(0));
    const response = await transmitSafely(card, payload, VPCD_MAX_MESSAGE_BYTES);
    this.reply(socket, response);
  }

  private reply(socket: net.Socket, data: Uint8Array): void {
    if (socket.destroyed) return;
    const out = Buffer.allocUnsafe(2 + data.length);
    out.writeUInt16BE(data.length, 0);
    out.set(data, 2);
    socket.write(out);
    // Sending the answer puts Linux back into delayed-ACK mode; the next length prefix must not wait.
    this.quickAck?.(socket);
  }
}
