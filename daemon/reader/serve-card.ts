/**
 * Serves one VirtualCard into a PC/SC reader through either transport and waits until pcscd itself
 * reports the card present. Used by `cardlink local-card` (and, later, the daemon for each card).
 */
import fs from 'node:fs';
import { CardlinkError } from '../../protocol/errors.js';
import { BridgeSocketClient } from './bridge-socket-client.js';
import { assertPcscdAvailable, waitForCardPresent } from './pcsc-presence.js';
import { DEFAULT_READER_NAME, DEFAULT_VPCD_READER_NAME, pcscReaderName } from './reader-names.js';
import { loadTcpQuickAck } from './tcp-quickack.js';
import type { VirtualCard } from './virtual-card.js';
import { VpcdCardServer } from './vpcd-card-server.js';
import { VpcdPlaceholderCard } from './vpcd-placeholder-card.js';

export type ReaderTransport = 'bridge' | 'vpcd';

// Also here for the callers that serve cards; they live in reader-names.ts so that the daemon and
// the CLI's definitions can read them without loading the PC/SC client.
export {
  DEFAULT_BRIDGE_SOCKET,
  DEFAULT_READER_NAME,
  DEFAULT_VPCD_READER_NAME,
  pcscReaderName,
} from './reader-names.js';
/** How long to wait for the driver's socket to appear after pcscd was woken (socket activation). */
export const DRIVER_SOCKET_WAIT_MS = 5000;

export interface ServeCardOptions {
  transport: ReaderTransport;
  bridgeSocket: string;
  slot: number;
  /** FRIENDLYNAME; pcscd adds " 00 <slot>". */
  readerName: string;
  vpcdPort: number;
  readyTimeoutMs: number;
}

export interface ServedCard {
  /** The full PC/SC reader name the card is in. */
  readonly readerName: string;
  /** Called once if the transport drops the card (driver gone, pcscd stopped). */
  onLost(listener: (err: CardlinkError) => void): void;
  /** Removes the card and closes the transport. */
  stop(): Promise<void>;
}

async function waitForSocket(path: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (fs.existsSync(path)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function serveOverBridge(card: VirtualCard, o: ServeCardOptions): Promise<ServedCard> {
  // Opening a PC/SC context first wakes a socket-activated pcscd, which then loads our driver.
  assertPcscdAvailable();
  if (!(await waitForSocket(o.bridgeSocket, DRIVER_SOCKET_WAIT_MS))) {
    throw new CardlinkError(
      'ERR_READER_DRIVER_MISSING',
      `pcscd runs but the cardlink reader driver is not listening on ${o.bridgeSocket}: ` +
        'register it with "sudo bash install-scripts/debian/setup.sh" (it writes /etc/reader.conf.d/cardlink and restarts pcscd)',
      { socket: o.bridgeSocket },
    );
  }
  const client = await BridgeSocketClient.connect({ socketPath: o.bridgeSocket });
  if (o.slot >= client.slotCount) {
    await client.close();
    throw new CardlinkError(
      'ERR_CONFIG_INVALID',
      `--slot ${o.slot} does not exist: the reader has ${client.slotCount} slots`,
      {
        option: 'slot',
        slots: client.slotCount,
      },
    );
  }
  client.insert(o.slot, card);
  const readerName = pcscReaderName(o.readerName, o.slot);
  try {
    await waitForCardPresent(readerName, o.readyTimeoutMs);
  } catch (err) {
    await client.close();
    throw err;
  }
  let stopping = false;
  return {
    readerName,
    onLost(listener) {
      client.once('close', (err) => {
        if (!stopping)
          listener(err ?? new CardlinkError('ERR_BRIDGE_CLOSED', 'the reader driver closed the connection'));
      });
    },
    async stop() {
      stopping = true;
      await client.remove(o.slot).catch(() => undefined);
      await client.close();
    },
  };
}

async function serveOverVpcd(card: VirtualCard, o: ServeCardOptions): Promise<ServedCard> {
  // vpcd (reversed mode) connects to us; pcscd blocks until both ports answer, so listen first.
  // TCP_QUICKACK as in the daemon (docs/reader-vpcd.md); without the addon, slower but the same.
  const server = new VpcdCardServer({ port: o.vpcdPort, quickAck: loadTcpQuickAck().rearm });
  await server.listen();
  server.insert(0, card);
  // Debian 12's vpcd cannot live with an empty slot: the second one gets an inert card.
  for (let slot = 1; slot < server.slotCount; slot++) server.insert(slot, new VpcdPlaceholderCard());
  const friendly = o.readerName === DEFAULT_READER_NAME ? DEFAULT_VPCD_READER_NAME : o.readerName;
  const readerName = pcscReaderName(friendly, 0);
  try {
    assertPcscdAvailable();
    await waitForCardPresent(readerName, o.readyTimeoutMs);
  } catch (err) {
    await server.close();
    throw err;
  }
  return {
    readerName,
    onLost() {
      // vpcd reconnects on its own; nothing is lost while we listen.
    },
    async stop() {
      await server.close();
    },
  };
}

export function serveCardIntoReader(card: VirtualCard, options: ServeCardOptions): Promise<ServedCard> {
  return options.transport === 'vpcd' ? serveOverVpcd(card, options) : serveOverBridge(card, options);
}
