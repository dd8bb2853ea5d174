/**
 * The vpcd transport (vsmartcard's libifdvpcd.so in reversed mode) with a real private pcscd, and the
 * card server's side of the vpcd protocol on its own.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import net from 'node:net';
import { CardlinkError } from '../../../protocol/errors.js';
import type { Logger } from '../../../protocol/log.js';
import { loopbackPeerUid } from '../../../daemon/reader/loopback-peer.js';
import { capturedLogger } from '../../support/captured-log.js';
import { VpcdCardServer, VpcdControl, VPCD_LOOPBACK_HOST } from '../../../daemon/reader/vpcd-card-server.js';
import { waitForCardPresent } from '../../../daemon/reader/pcsc-presence.js';
import { EchoCard, echoAtr, ECHO_INS_COUNTER, ECHO_INS_FAIL } from '../../support/echo-card.js';
import { PcscClient } from '../../support/pcsc-client.js';
import { startPcscd, type PcscdInstance } from '../../support/pcscd.js';
import { freePort } from '../../support/free-port.js';
import { VpcdPeer } from '../../support/vpcd-peer.js';

const COUNTER = Uint8Array.of(0x80, ECHO_INS_COUNTER, 0x00, 0x00, 0x04);

function counterValue(r: Buffer): number {
  assert.equal(r.length, 6);
  assert.deepEqual([...r.subarray(4)], [0x90, 0x00]);
  return r.readUInt32BE(0);
}

/** Listens on a free port pair (P, P+1), trying random ports. */
async function listenOnFreePorts(options: { logger?: Logger } = {}): Promise<VpcdCardServer> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = 20000 + Math.floor(Math.random() * 40000);
    const server = new VpcdCardServer({ port, ...options });
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

describe('vpcd card server: who may play vpcd (Linux)', () => {
  /** Connects from `uid` in a child process, sends GET ATR; "answered" or "closed". */
  function tryAs(uid: number, port: number): Promise<string> {
    const script = `const s = require('net').createConnection({ host: '127.0.0.1', port: ${port} });
      s.on('connect', () => s.write(Buffer.from([0, 1, ${VpcdControl.GET_ATR}])));
      s.on('data', () => { console.log('answered'); process.exit(0); });
      s.on('close', () => { console.log('closed'); process.exit(0); });
      s.on('error', () => {});`;
    return new Promise((resolve, reject) => {
      execFile(process.execPath, ['-e', script], { uid, gid: uid, timeout: 10_000 }, (error, stdout) =>
        error ? reject(error) : resolve(stdout.trim()),
      );
    });
  }

  it("closes a connection from another local user at once and keeps vpcd's", async () => {
    assert.equal(process.getuid?.(), 0, 'runs as root (as the pcscd tests do)');
    const { logger, lines } = capturedLogger();
    const server = await listenOnFreePorts({ logger });
    const card = new EchoCard();
    server.insert(0, card);
    const peer = await VpcdPeer.connect(server.port);
    try {
      assert.deepEqual([...(await peer.request(Uint8Array.of(VpcdControl.GET_ATR)))], [...card.atr]);
      const nobody = 65534;
      assert.equal(await tryAs(nobody, server.port), 'closed');
      const refused = lines.filter(
        (l) => l['message'] === 'vpcd connection refused: not from root or this user',
      );
      assert.deepEqual(
        refused.map((l) => [l['slot'], l['uid']]),
        [[0, nobody]],
      );
      // root's connection (pcscd's) is still the slot's
      assert.deepEqual([...(await peer.request(Uint8Array.of(VpcdControl.GET_ATR)))], [...card.atr]);
    } finally {
      peer.socket.destroy();
      await server.close();
    }
  });

  it("connect mode: gives no card to a listener another local user put on vpcd's port", async () => {
    const { logger, lines } = capturedLogger();
    const port = await freePort();
    // A squatter as nobody: listens, asks each connection for its ATR, says whether it got one.
    const script = `const srv = require('net').createServer((s) => {
        s.write(Buffer.from([0, 1, ${VpcdControl.GET_ATR}]));
        s.on('data', () => { console.log('answered'); process.exit(0); });
        s.on('close', () => { console.log('closed'); process.exit(0); });
        s.on('error', () => {});
      });
      srv.listen(${port}, '127.0.0.1', () => console.error('listening'));`;
    const nobody = 65534;
    const child = spawn(process.execPath, ['-e', script], { uid: nobody, gid: nobody });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    await new Promise<void>((resolve) => child.stderr.once('data', () => resolve()));
    const server = new VpcdCardServer({ port, slots: 1, logger });
    server.insert(0, new EchoCard());
    server.connect();
    try {
      await new Promise<void>((resolve) => child.once('exit', () => resolve()));
      assert.equal(out.trim(), 'closed', 'the squatter never saw an ATR');
      const refused = lines.filter(
        (l) => l['message'] === 'vpcd connection refused: not from root or this user',
      );
      assert.deepEqual(refused[0] && [refused[0]['slot'], refused[0]['uid']], [0, nobody]);
      assert.equal(server.isConnected(0), false);
    } finally {
      child.kill();
      await server.close();
    }
  });

  it('loopbackPeerUid names the owner of the other end', async () => {
    const listener = net.createServer();
    const accepted = new Promise<net.Socket>((resolve) => listener.once('connection', resolve));
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const client = net.createConnection({
      host: '127.0.0.1',
      port: (listener.address() as net.AddressInfo).port,
    });
    const socket = await accepted;
    try {
      assert.equal(loopbackPeerUid(socket), process.getuid?.());
      assert.equal(loopbackPeerUid(socket, '/nonexistent/tcp'), undefined);
    } finally {
      client.destroy();
      socket.destroy();
      await new Promise((r) => listener.close(r));
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
