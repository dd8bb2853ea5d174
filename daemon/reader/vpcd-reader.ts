/**
 * The daemon's reader on vsmartcard's vpcd (setting `reader.transport: "vpcd"`): where our pcsc-lite
 * driver does not exist (macOS, Windows), the daemon serves a card per vpcd slot, one loopback TCP
 * connection per slot. `reader.vpcdMode` says who listens: `listen`, pcscd's vpcd driver connects in
 * reversed mode to this daemon; `connect`, vpcd (normal mode) or Windows' BixVReader listens and the
 * daemon connects to it, again and again while the reader is away.
 *
 * Debian 12's vpcd (virtualsmartcard 0.8, vpcd-card-server.ts) aborts pcscd when a slot answers "no
 * card" or its connection drops, so a slot is never empty: every slot without a user's card holds the
 * inert placeholder card, and putting a card in or taking it out swaps in one step. pcscd therefore
 * never sees a card inserted or removed here, only a different ATR at its next power-up of the slot
 * (it powers an idle card down within about a second); docs/reader-vpcd.md says what that means for
 * middleware. The listener outlives pcscd restarts: vpcd reconnects to it (newer vpcd versions) or
 * pcscd's start connects anew.
 */
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import type { ReaderSlots } from './bridge-reader.js';
import { pcscReaderName } from './reader-names.js';
import { loadTcpQuickAck, type TcpQuickAck } from './tcp-quickack.js';
import type { VirtualCard } from './virtual-card.js';
import { VpcdCardServer, VPCD_SLOTS, type VpcdMode } from './vpcd-card-server.js';
import { VpcdPlaceholderCard } from './vpcd-placeholder-card.js';

export interface VpcdReaderOptions {
  /** `reader.vpcdMode`: the daemon listens (vpcd's reversed mode) or connects (normal mode, BixVReader). */
  mode?: VpcdMode;
  /** Loopback address to listen on or connect to (`reader.vpcdHost`). */
  host: string;
  /** Port of slot 0 (`reader.vpcdPort`, the DEVICENAME port of the vpcd reader); slot i is port + i. */
  port: number;
  /** FRIENDLYNAME of the vpcd reader in reader.conf. */
  friendlyName: string;
  /** Slots cards may go into (`reader.slots`), never more than vpcd has. */
  maxSlots: number;
  logger: Logger;
  /** The TCP_QUICKACK addon as loaded (default loadTcpQuickAck()); false serves without it. */
  quickAck?: TcpQuickAck | false;
}

export class VpcdReader implements ReaderSlots {
  /** The inert card every unused slot holds; one is enough, it keeps no state. */
  private readonly placeholder = new VpcdPlaceholderCard();

  private constructor(
    private readonly server: VpcdCardServer,
    private readonly friendlyName: string,
    readonly slotCount: number,
  ) {}

  /**
   * Listens on every port vpcd connects to (all of vpcd's slots, also those beyond `maxSlots`), each
   * holding the placeholder. Start the daemon before pcscd: Debian 12's pcscd waits at start for
   * every vpcd slot and gives up the reader when one does not answer.
   *
   * Connect mode: connects to every slot's port instead and returns without waiting (the reader may
   * start later). Every slot holds the placeholder here too: the daemon keeps each slot's connection
   * for as long as it runs, so nobody else on the machine can take the slot and pose as a card.
   */
  static async open(options: VpcdReaderOptions): Promise<VpcdReader> {
    const quickAck = options.quickAck === false ? undefined : (options.quickAck ?? loadTcpQuickAck());
    if (quickAck && !quickAck.rearm)
      options.logger.warn('vpcd reader: TCP_QUICKACK is not available; each APDU may wait ~40 ms', {
        reason: quickAck.why,
      });
    const server = new VpcdCardServer({
      host: options.host,
      port: options.port,
      slots: VPCD_SLOTS,
      quickAck: quickAck?.rearm,
      logger: options.logger,
    });
    const reader = () => new VpcdReader(server, options.friendlyName, Math.min(VPCD_SLOTS, options.maxSlots));
    if (options.mode === 'connect') {
      const connected = reader();
      for (let slot = 0; slot < server.slotCount; slot++) server.insert(slot, connected.placeholder);
      server.connect();
      return connected;
    }
    try {
      await server.listen();
    } catch (error) {
      await server.close();
      throw new CardlinkError(
        'ERR_PORT_IN_USE',
        `cannot listen for vpcd on ${server.host} ports ${server.ports.join(', ')}: another program ` +
          '(a second daemon, cardlink local-card) may hold them; see reader.vpcdPort in docs/daemon-config.md',
        {
          port: options.port,
          cause: error instanceof CardlinkError ? String(error.context['errno'] ?? error.code) : 'listen',
        },
      );
    }
    const listening = reader();
    for (let slot = 0; slot < server.slotCount; slot++) server.insert(slot, listening.placeholder);
    return listening;
  }

  readerName(slot: number): string {
    return pcscReaderName(this.friendlyName, slot);
  }

  insert(slot: number, card: VirtualCard): void {
    this.check(slot);
    this.server.replace(slot, card);
  }

  remove(slot: number): Promise<void> {
    this.check(slot);
    this.server.replace(slot, this.placeholder);
    return Promise.resolve();
  }

  /** Whether vpcd is connected on `slot` (diagnostics, tests). */
  isConnected(slot: number): boolean {
    return this.server.isConnected(slot);
  }

  /**
   * Stops listening or connecting. Listen mode: pcscd's vpcd reader then fails (Debian 12: pcscd
   * aborts); stop pcscd first. Connect mode: the reader sees its card go, nothing else.
   */
  async close(): Promise<void> {
    for (let slot = 0; slot < this.server.slotCount; slot++) this.server.replace(slot, this.placeholder);
    await this.server.close();
  }

  private check(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.slotCount)
      throw new CardlinkError('ERR_SLOT_UNAVAILABLE', `slot ${slot} does not exist`, { slot });
  }
}
