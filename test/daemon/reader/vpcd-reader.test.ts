/**
 * The daemon's vpcd reader on its own, vpcd played by a TCP peer: every slot always holds a card (the
 * placeholder when the user's is not there), cards swap in one step, the slots it offers are capped,
 * and it refuses what it must (a taken port, a slot that is not its own). Plus the TCP_QUICKACK
 * addon it uses. Through real pcscd and vpcd: test/integration/daemon-vpcd.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { CardlinkError } from '../../../protocol/errors.js';
import type { Logger } from '../../../protocol/log.js';
import { loadTcpQuickAck } from '../../../daemon/reader/tcp-quickack.js';
import { VpcdControl, VpcdCardServer } from '../../../daemon/reader/vpcd-card-server.js';
import { VpcdPlaceholderCard } from '../../../daemon/reader/vpcd-placeholder-card.js';
import { VpcdReader } from '../../../daemon/reader/vpcd-reader.js';
import { capturedLogger } from '../../support/captured-log.js';
import { EchoCard, echoAtr, ECHO_INS_COUNTER } from '../../support/echo-card.js';
import { freePortPair } from '../../support/free-port.js';
import { VpcdPeer } from '../../support/vpcd-peer.js';

const GET_ATR = Uint8Array.of(VpcdControl.GET_ATR);
const COUNTER = Uint8Array.of(0x80, ECHO_INS_COUNTER, 0x00, 0x00, 0x04);
const PLACEHOLDER_ATR = [...new VpcdPlaceholderCard().atr];

async function openReader(maxSlots: number, logger: Logger): Promise<{ reader: VpcdReader; port: number }> {
  const port = await freePortPair();
  const reader = await VpcdReader.open({
    host: '127.0.0.1',
    port,
    friendlyName: 'Virtual PCD',
    maxSlots,
    logger,
  });
  return { reader, port };
}

describe('VpcdReader', () => {
  it('answers every GET ATR with a card: the placeholder, the inserted card, the placeholder again', async () => {
    const { logger } = capturedLogger();
    const { reader, port } = await openReader(4, logger);
    const peers: VpcdPeer[] = [];
    try {
      assert.equal(reader.slotCount, 2, 'vpcd has two slots, whatever reader.slots says');
      assert.equal(reader.readerName(1), 'Virtual PCD 00 01');
      const slot0 = await VpcdPeer.connect(port);
      const slot1 = await VpcdPeer.connect(port + 1);
      peers.push(slot0, slot1);
      assert.deepEqual([...(await slot0.request(GET_ATR))], PLACEHOLDER_ATR);
      assert.deepEqual([...(await slot0.request(COUNTER))], [0x6d, 0x00], 'the placeholder refuses commands');

      const card = new EchoCard({ atr: echoAtr('vpcd-reader-0') });
      reader.insert(0, card);
      assert.deepEqual([...(await slot0.request(GET_ATR))], [...card.atr]);
      const answer = await slot0.request(COUNTER);
      assert.deepEqual([...answer.subarray(4)], [0x90, 0x00]);
      assert.equal(card.transmitCount, 1);
      assert.deepEqual([...(await slot1.request(GET_ATR))], PLACEHOLDER_ATR, 'slot 1 untouched');

      await reader.remove(0);
      assert.deepEqual([...(await slot0.request(GET_ATR))], PLACEHOLDER_ATR, 'never an empty ATR');
      await slot0.request(COUNTER);
      assert.equal(card.transmitCount, 1, 'nothing reaches a card taken out');
    } finally {
      for (const p of peers) p.socket.destroy();
      await reader.close();
    }
  });

  it('offers only reader.slots slots, yet keeps a placeholder on every port vpcd polls', async () => {
    const { logger } = capturedLogger();
    const { reader, port } = await openReader(1, logger);
    try {
      assert.equal(reader.slotCount, 1);
      assert.throws(
        () => reader.insert(1, new EchoCard()),
        (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_SLOT_UNAVAILABLE',
      );
      const slot1 = await VpcdPeer.connect(port + 1);
      assert.deepEqual([...(await slot1.request(GET_ATR))], PLACEHOLDER_ATR);
      slot1.socket.destroy();
    } finally {
      await reader.close();
    }
  });

  it('stops with ERR_PORT_IN_USE naming the ports when another program holds one', async () => {
    const { logger } = capturedLogger();
    const port = await freePortPair();
    const squatter = new VpcdCardServer({ port: port + 1, slots: 1 });
    await squatter.listen();
    try {
      await assert.rejects(
        VpcdReader.open({ host: '127.0.0.1', port, friendlyName: 'Virtual PCD', maxSlots: 2, logger }),
        (e: unknown) =>
          e instanceof CardlinkError &&
          e.code === 'ERR_PORT_IN_USE' &&
          e.message.includes(`${port}, ${port + 1}`),
      );
    } finally {
      await squatter.close();
    }
  });

  it('refuses a host that is not loopback, even when called directly', () => {
    for (const host of ['0.0.0.0', '192.168.0.1', '::1'])
      assert.throws(
        () => new VpcdCardServer({ port: 40000, host }),
        (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_CONFIG_INVALID',
        host,
      );
  });

  it('logs no TCP_QUICKACK warning when the addon is built', async () => {
    const { logger, raw } = capturedLogger();
    const { reader } = await openReader(2, logger);
    await reader.close();
    assert.equal(loadTcpQuickAck().rearm !== undefined, true, 'npm run build builds the addon on Linux');
    assert.doesNotMatch(raw(), /TCP_QUICKACK/);
  });

  it('without the addon it still serves its cards and says once why it may be slow', async () => {
    const { logger, lines } = capturedLogger();
    const port = await freePortPair();
    const reader = await VpcdReader.open({
      host: 'localhost',
      port,
      friendlyName: 'Virtual PCD',
      maxSlots: 2,
      logger,
      quickAck: { rearm: undefined, why: 'the addon is not built (test)' },
    });
    const peer = await VpcdPeer.connect(port);
    try {
      const card = new EchoCard({ atr: echoAtr('no-quickack') });
      reader.insert(0, card);
      assert.deepEqual([...(await peer.request(GET_ATR))], [...card.atr]);
      assert.deepEqual([...(await peer.request(COUNTER)).subarray(4)], [0x90, 0x00]);
      await new Promise((r) => setImmediate(r));
      const warnings = lines.filter((l) => /TCP_QUICKACK is not available/.test(String(l['message'])));
      assert.equal(warnings.length, 1, JSON.stringify(lines));
      assert.equal(warnings[0]!['reason'], 'the addon is not built (test)');
      assert.equal(warnings[0]!['level'], 'warn');
    } finally {
      peer.socket.destroy();
      await reader.close();
    }
  });
});

/** vpcd in its normal mode, played by the test: listens on `port` and hands over each connection. */
class FakeVpcdListener {
  private readonly accepted: VpcdPeer[] = [];
  private readonly waiters: ((p: VpcdPeer) => void)[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly server = net.createServer((socket) => {
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    const peer = VpcdPeer.wrap(socket);
    const waiter = this.waiters.shift();
    if (waiter) waiter(peer);
    else this.accepted.push(peer);
  });
  connections = 0;

  static async listen(port: number): Promise<FakeVpcdListener> {
    const l = new FakeVpcdListener();
    l.server.on('connection', () => l.connections++);
    await new Promise<void>((resolve) => l.server.listen({ host: '127.0.0.1', port }, resolve));
    return l;
  }

  next(): Promise<VpcdPeer> {
    const ready = this.accepted.shift();
    return ready ? Promise.resolve(ready) : new Promise((resolve) => this.waiters.push(resolve));
  }

  /** The reader goes away: its connections drop and nothing listens. */
  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((r) => this.server.close(r));
  }
}

describe('VpcdReader in connect mode (vpcd normal mode, BixVReader)', () => {
  it("connects to each slot's port, serves the placeholder and the card, and connects again when the reader is back", async () => {
    const { logger, lines } = capturedLogger();
    const port = await freePortPair();
    const listeners = [await FakeVpcdListener.listen(port), await FakeVpcdListener.listen(port + 1)];
    const reader = await VpcdReader.open({
      mode: 'connect',
      host: '127.0.0.1',
      port,
      friendlyName: 'Virtual PCD',
      maxSlots: 2,
      logger,
    });
    try {
      const [slot0, slot1] = await Promise.all(listeners.map((l) => l.next()));
      assert.deepEqual([...(await slot0!.request(GET_ATR))], PLACEHOLDER_ATR);
      assert.deepEqual([...(await slot1!.request(GET_ATR))], PLACEHOLDER_ATR);
      const card = new EchoCard({ atr: echoAtr('vpcd-connect-0') });
      reader.insert(0, card);
      assert.deepEqual([...(await slot0!.request(GET_ATR))], [...card.atr]);
      assert.deepEqual([...(await slot0!.request(COUNTER)).subarray(4)], [0x90, 0x00]);

      // The reader goes away (pcscd stopped): the daemon tries again and again, says so once.
      slot0!.socket.destroy();
      await listeners[0]!.close();
      for (const deadline = Date.now() + 2000; reader.isConnected(0) && Date.now() < deadline;)
        await new Promise((r) => setTimeout(r, 20));
      assert.equal(reader.isConnected(0), false);
      assert.equal(reader.isConnected(1), true, 'slot 1 is not disturbed');
      await new Promise((r) => setTimeout(r, 1000)); // attempts at ~250, 750 ms
      const outage = lines.filter((l) => l['message'] === 'vpcd reader not reachable; connecting again');
      assert.deepEqual(
        outage.map((l) => [l['slot'], l['why']]),
        [[0, 'disconnected']],
        'one line for the outage, not one per attempt',
      );

      // Back: the card is still in its slot.
      listeners[0] = await FakeVpcdListener.listen(port);
      const again = await listeners[0].next();
      assert.deepEqual([...(await again.request(GET_ATR))], [...card.atr]);
      assert.equal(reader.isConnected(0), true);
    } finally {
      await reader.close();
    }
    // Closed: no more attempts.
    const before = listeners.map((l) => l.connections);
    await new Promise((r) => setTimeout(r, 600));
    assert.deepEqual(
      listeners.map((l) => l.connections),
      before,
    );
    for (const l of listeners) await l.close();
  });
});

describe('TCP_QUICKACK addon', () => {
  it('sets the option on a connected TCP socket and reports false once it is closed', async () => {
    const quickAck = loadTcpQuickAck();
    assert.ok(quickAck.rearm, `addon loads: ${'why' in quickAck ? quickAck.why : ''}`);
    const server = net.createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const socket = net.createConnection({ host: '127.0.0.1', port });
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    try {
      assert.equal(quickAck.rearm(socket), true);
      socket.destroy();
      assert.equal(quickAck.rearm(socket), false);
    } finally {
      socket.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
