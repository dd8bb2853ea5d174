/**
 * The vpcd transport (vsmartcard's libifdvpcd.so in reversed mode) with a real private pcscd, and the
 * card server's side of the vpcd protocol on its own.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { CardlinkError } from '../../../protocol/errors.js';
import { VpcdCardServer, VpcdControl, VPCD_LOOPBACK_HOST } from '../../../daemon/reader/vpcd-card-server.js';
import { waitForCardPresent } from '../../../daemon/reader/pcsc-presence.js';
import { EchoCard, echoAtr, ECHO_INS_COUNTER, ECHO_INS_FAIL } from '../../support/echo-card.js';
import { PcscClient } from '../../support/pcsc-client.js';
import { startPcscd, type PcscdInstance } from '../../support/pcscd.js';
import { VpcdPeer } from '../../support/vpcd-peer.js';

const COUNTER = Uint8Array.of(0x80, ECHO_INS_COUNTER, 0x00, 0x00, 0x04);

function counterValue(r: Buffer): number {
  assert.equal(r.length, 6);
  assert.deepEqual([...r.subarray(4)], [0x90, 0x00]);
  return r.readUInt32BE(0);
}

/** Listens on a free port pair (P, P+1), trying random ports. */
async function listenOnFreePorts(): Promise<VpcdCardServer> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    const server = new VpcdCardServer({ port });
    try {
      await server.listen();
      return server;
    } catch {
      await server.close();
    }
  }
  throw new Error('no free port pair for vpcd');
}

describe('vpcd card server on its own', () => {
  it('answers GET ATR, resets on power on / reset, echoes APDUs, and answers "no card" once removed', async () => {
    const server = await listenOnFreePorts();
    try {
      const card = new EchoCard();
      server.insert(0, card);
      assert.throws(
        () => server.insert(0, new EchoCard()),
        (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_SLOT_UNAVAILABLE',
      );
      const peer = await VpcdPeer.connect(server.port);
      assert.deepEqual([...(await peer.request(Uint8Array.of(VpcdControl.GET_ATR)))], [...card.atr]);
      peer.send(Uint8Array.of(VpcdControl.POWER_ON));
      peer.send(Uint8Array.of(VpcdControl.RESET));
      peer.send(Uint8Array.of(VpcdControl.POWER_OFF));
      const r = await peer.request(COUNTER); // ordered after the control messages
      assert.equal(card.resetCount, 2);
      assert.equal(counterValue(r), 1);
      assert.deepEqual([...(await peer.request(Uint8Array.of(0x80, ECHO_INS_FAIL, 0, 0)))], [0x6f, 0x00]);
      server.remove(0);
      assert.equal((await peer.request(Uint8Array.of(VpcdControl.GET_ATR))).length, 0);
      // slot 1 is its own port
      const peer1 = await VpcdPeer.connect(server.port + 1);
      assert.equal((await peer1.request(Uint8Array.of(VpcdControl.GET_ATR))).length, 0);
      peer.socket.destroy();
      peer1.socket.destroy();
    } finally {
      await server.close();
    }
  });

  it('listens on loopback only', async () => {
    const server = await listenOnFreePorts();
    try {
      await new Promise<void>((resolve, reject) => {
        const s = net.createConnection({ host: VPCD_LOOPBACK_HOST, port: server.port }, () => {
          assert.equal(s.localAddress, '127.0.0.1');
          assert.equal(s.remotePort, server.port);
          s.destroy();
          resolve();
        });
        s.once('error', reject);
      });
      const nonLoopback = Object.values((await import('node:os')).networkInterfaces())
        .flat()
        .find((a) => a && a.family === 'IPv4' && !a.internal);
      if (nonLoopback) {
        await assert.rejects(
          new Promise<void>((resolve, reject) => {
            const s = net.createConnection({ host: nonLoopback.address, port: server.port }, () => {
              s.destroy();
              resolve();
            });
            s.once('error', reject);
          }),
          /ECONNREFUSED/,
        );
      }
    } finally {
      await server.close();
    }
  });
});

describe('vpcd transport through pcscd', () => {
  let server: VpcdCardServer;
  let pcscd: PcscdInstance;
  let app: PcscClient;
  const a = new EchoCard({ atr: echoAtr('vpcd-A') });
  const b = new EchoCard({ atr: echoAtr('vpcd-B') });

  before(async () => {
    // vpcd connects to both ports while pcscd starts and aborts pcscd if one fails: cards in both first
    server = await listenOnFreePorts();
    server.insert(0, a);
    server.insert(1, b);
    pcscd = await startPcscd({ cardlink: false, vpcd: { port: server.port } });
    app = await PcscClient.open();
  });

  after(async () => {
    await app?.close();
    const running = pcscd?.running();
    // pcscd first: Debian 12's vpcd aborts pcscd when the card side goes away
    await pcscd?.stop();
    await server?.close();
    assert.ok(running, 'pcscd survived the tests');
  });

  it('both slots show their card with its ATR in "Virtual PCD 00 00" / "00 01"', async () => {
    assert.equal(pcscd.vpcdReaderName(1), 'Virtual PCD 00 01');
    assert.deepEqual([...(await waitForCardPresent(pcscd.vpcdReaderName(0)))], [...a.atr]);
    assert.deepEqual([...(await waitForCardPresent(pcscd.vpcdReaderName(1)))], [...b.atr]);
  });

  it('APDUs round-trip byte-exact, short and extended (4 KB); a rejecting card answers 6F00; slots are separate', async () => {
    const ca = await app.connect(pcscd.vpcdReaderName(0));
    const cb = await app.connect(pcscd.vpcdReaderName(1));
    const data = Uint8Array.from({ length: 4096 }, (_, i) => (i * 31 + 5) & 0xff);
    const extended = Uint8Array.from([0x00, 0x10, 0x00, 0x00, 0x00, 0x10, 0x00, ...data, 0x00, 0x00]);
    for (const apdu of [Uint8Array.of(0x00, 0xa4, 0x04, 0x00, 0x02, 0x3f, 0x00), extended]) {
      const r = await ca.transmit(apdu);
      assert.ok(Buffer.from(apdu).equals(r.subarray(0, apdu.length)));
      assert.deepEqual([...r.subarray(apdu.length)], [0x90, 0x00]);
    }
    assert.deepEqual([...(await ca.transmit(Uint8Array.of(0x80, ECHO_INS_FAIL, 0, 0)))], [0x6f, 0x00]);
    const before = b.transmitCount;
    await ca.transmit(COUNTER);
    assert.equal(b.transmitCount, before);
    await cb.transmit(COUNTER);
    assert.equal(b.transmitCount, before + 1);
    await ca.disconnect('leave');
    await cb.disconnect('leave');
  });

  it('reset clears the card state and calls card.reset()', async () => {
    let conn = await app.connect(pcscd.vpcdReaderName(0));
    await conn.disconnect('reset');
    const resets = a.resetCount;
    conn = await app.connect(pcscd.vpcdReaderName(0));
    assert.equal(counterValue(await conn.transmit(COUNTER)), 1);
    assert.equal(counterValue(await conn.transmit(COUNTER)), 2);
    await conn.disconnect('reset');
    assert.ok(a.resetCount > resets);
    conn = await app.connect(pcscd.vpcdReaderName(0));
    assert.equal(counterValue(await conn.transmit(COUNTER)), 1);
    await conn.disconnect('leave');
  });
});
