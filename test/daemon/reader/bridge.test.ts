/**
 * The reader bridge end to end: our pcsc-lite driver inside a real (private) pcscd, the Node bridge
 * client, and PC/SC applications (npm pcsclite, OpenSC's opensc-tool) on the other side.
 */
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import { promisify } from 'node:util';
import { CardlinkError } from '../../../protocol/errors.js';
import { BridgeSocketClient, REMOVE_AFTER_ANSWER_MS } from '../../../daemon/reader/bridge-socket-client.js';
import {
  encodeMessage,
  MessageDecoder,
  MessageType,
  type BridgeMessage,
} from '../../../daemon/reader/bridge-protocol.js';
import {
  assertPcscdAvailable,
  openPcsc,
  waitForCardAbsent,
  waitForCardPresent,
} from '../../../daemon/reader/pcsc-presence.js';
import { EchoCard, echoAtr, ECHO_INS_COUNTER, ECHO_INS_FAIL } from '../../support/echo-card.js';
import { PcscClient } from '../../support/pcsc-client.js';
import { startPcscd, type PcscdInstance, type StartPcscdOptions } from '../../support/pcscd.js';

const execFileP = promisify(execFile);

const COUNTER = Uint8Array.of(0x80, ECHO_INS_COUNTER, 0x00, 0x00, 0x04);
/** How long a removal or disconnect may take to reach PC/SC applications. */
const PROMPT_MS = 1000;

function counterValue(r: Buffer): number {
  assert.equal(r.length, 6);
  assert.deepEqual([...r.subarray(4)], [0x90, 0x00]);
  return r.readUInt32BE(0);
}

/** Extended-length case 4 APDU (ISO/IEC 7816-4 §5.1): CLA INS P1 P2 00 Lc1 Lc2 data Le1 Le2. */
function extendedApdu(data: Uint8Array): Uint8Array {
  const out = new Uint8Array(4 + 3 + data.length + 2);
  out.set([0x00, 0x10, 0x00, 0x00, 0x00, data.length >> 8, data.length & 0xff]);
  out.set(data, 7);
  return out;
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 7 + 13) & 0xff;
  return b;
}

/** A bridge peer that speaks raw frames, to send what the real client never would. */
class RawPeer {
  readonly socket: net.Socket;
  readonly messages: BridgeMessage[] = [];
  readonly closed: Promise<void>;
  private readonly decoder = new MessageDecoder();

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (c: Buffer) => this.messages.push(...this.decoder.push(c)));
    socket.on('error', () => undefined);
  }

  static connect(path: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path });
      s.once('connect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  send(bytes: Uint8Array): void {
    this.socket.write(bytes);
  }

  async hello(): Promise<void> {
    await this.waitFor((m) => m.type === MessageType.WELCOME);
    this.send(encodeMessage(MessageType.HELLO, 0, Uint8Array.of(1)));
  }

  async waitFor(pred: (m: BridgeMessage) => boolean, timeoutMs = 3000): Promise<BridgeMessage> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const m = this.messages.find(pred);
      if (m) return m;
      if (Date.now() > end) throw new Error('expected bridge message did not arrive');
      await new Promise((r) => setTimeout(r, 5));
    }
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)),
  ]);
}

describe('reader bridge through pcscd', () => {
  let pcscd: PcscdInstance | undefined;
  const cleanups: (() => unknown)[] = [];

  async function start(options?: StartPcscdOptions): Promise<PcscdInstance> {
    pcscd = await startPcscd(options);
    return pcscd;
  }
  async function bridge(p: PcscdInstance): Promise<BridgeSocketClient> {
    const c = await BridgeSocketClient.connect({ socketPath: p.socketPath });
    cleanups.push(() => c.close());
    return c;
  }
  async function pcsc(): Promise<PcscClient> {
    const c = await PcscClient.open();
    cleanups.push(() => c.close());
    return c;
  }

  beforeEach(() => {
    cleanups.length = 0;
  });
  afterEach(async () => {
    for (const f of cleanups.reverse()) {
      try {
        await f();
      } catch {
        // best effort
      }
    }
    const p = pcscd;
    pcscd = undefined;
    if (p) {
      const running = p.running();
      await p.stop();
      assert.ok(running, 'pcscd must still be running at the end of each test');
    }
  });

  it('an inserted card is present with its ATR in "<FRIENDLYNAME> 00 00", for npm pcsclite and OpenSC', async () => {
    const p = await start();
    const c = await bridge(p);
    assert.equal(c.slotCount, 4);
    const card = new EchoCard();
    c.insert(0, card);
    const atr = await waitForCardPresent(p.readerName(0));
    assert.deepEqual([...atr], [...card.atr]);
    assert.equal(p.readerName(0), 'cardlink Test Reader 00 00');

    const list = (await execFileP('opensc-tool', ['-l'], { env: p.env })).stdout;
    assert.match(list, /Yes\s+cardlink Test Reader 00 00/);
    assert.match(list, /No\s+cardlink Test Reader 00 01/);
    const atrOut = (await execFileP('opensc-tool', ['-r', p.readerName(0), '-a'], { env: p.env })).stdout;
    assert.ok(atrOut.includes(Buffer.from(card.atr).toString('hex').match(/../g)!.join(':')), atrOut);
    const sent = (
      await execFileP('opensc-tool', ['-r', p.readerName(0), '-s', '80 42 01 02 03 AA BB CC'], { env: p.env })
    ).stdout;
    assert.match(sent, /Received \(SW1=0x90, SW2=0x00\):\s*80 42 01 02 03 AA BB CC/);
  });

  it('two cards in two slots answer separately', async () => {
    const p = await start({ cardlink: { slots: 2 } });
    const c = await bridge(p);
    const a = new EchoCard({ atr: echoAtr('card-A') });
    const b = new EchoCard({ atr: echoAtr('card-B') });
    c.insert(0, a);
    c.insert(1, b);
    assert.deepEqual([...(await waitForCardPresent(p.readerName(0)))], [...a.atr]);
    assert.deepEqual([...(await waitForCardPresent(p.readerName(1)))], [...b.atr]);
    const app = await pcsc();
    const ca = await app.connect(p.readerName(0));
    const cb = await app.connect(p.readerName(1));
    assert.equal(counterValue(await ca.transmit(COUNTER)), 1);
    assert.equal(counterValue(await ca.transmit(COUNTER)), 2);
    assert.equal(counterValue(await cb.transmit(COUNTER)), 1);
    const [ra, rb] = await Promise.all([ca.transmit(COUNTER), cb.transmit(COUNTER)]);
    assert.equal(counterValue(ra), 3);
    assert.equal(counterValue(rb), 2);
    assert.equal(a.transmitCount, 3);
    assert.equal(b.transmitCount, 2);
    assert.throws(
      () => c.insert(1, new EchoCard()),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_SLOT_UNAVAILABLE',
    );
    assert.throws(
      () => c.insert(2, new EchoCard()),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_SLOT_UNAVAILABLE',
    );
  });

  it('APDUs round-trip byte-exact, short and extended (4 KB, 65000 bytes); a rejecting card answers 6F00', async () => {
    const p = await start();
    const c = await bridge(p);
    c.insert(0, new EchoCard());
    await waitForCardPresent(p.readerName(0));
    const card = await (await pcsc()).connect(p.readerName(0));
    for (const apdu of [
      Uint8Array.of(0x00, 0xa4, 0x04, 0x00),
      Uint8Array.of(0x00, 0xa4, 0x04, 0x00, 0x05, 1, 2, 3, 4, 5, 0x00),
      Uint8Array.from([0x00, 0xd6, 0x00, 0x00, 0xff, ...randomBytes(255)]),
      extendedApdu(randomBytes(4096)),
      extendedApdu(randomBytes(65000)),
    ]) {
      const r = await card.transmit(apdu);
      assert.equal(r.length, apdu.length + 2);
      assert.ok(
        Buffer.from(apdu).equals(r.subarray(0, apdu.length)),
        `echo of a ${apdu.length}-byte APDU differs`,
      );
      assert.deepEqual([...r.subarray(apdu.length)], [0x90, 0x00]);
    }
    assert.deepEqual([...(await card.transmit(Uint8Array.of(0x80, ECHO_INS_FAIL, 0, 0)))], [0x6f, 0x00]);
  });

  it('remove: the reader reports empty promptly, the card gets no APDU after', async () => {
    const p = await start();
    const c = await bridge(p);
    const card = new EchoCard();
    c.insert(0, card);
    await waitForCardPresent(p.readerName(0));
    const conn = await (await pcsc()).connect(p.readerName(0));
    await conn.transmit(COUNTER);
    const t0 = Date.now();
    await c.remove(0);
    await waitForCardAbsent(p.readerName(0), PROMPT_MS);
    assert.ok(Date.now() - t0 < PROMPT_MS);
    const count = card.transmitCount;
    await assert.rejects(conn.transmit(COUNTER));
    assert.equal(card.transmitCount, count);
    assert.equal(c.isOccupied(0), false);
    await assert.rejects(
      c.remove(0),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_SLOT_UNAVAILABLE',
    );
    // the slot takes a card again
    const again = new EchoCard({ atr: echoAtr('again') });
    c.insert(0, again);
    assert.deepEqual([...(await waitForCardPresent(p.readerName(0)))], [...again.atr]);
  });

  it('remove + insert in quick succession is seen as a card change', async () => {
    const p = await start();
    const c = await bridge(p);
    c.insert(0, new EchoCard({ atr: echoAtr('first') }));
    await waitForCardPresent(p.readerName(0));
    const conn = await (await pcsc()).connect(p.readerName(0));
    await conn.transmit(COUNTER);
    const second = new EchoCard({ atr: echoAtr('second') });
    await c.remove(0);
    c.insert(0, second);
    // the old handle is invalid (card removed), the new card is there
    await assert.rejects(conn.transmit(COUNTER));
    assert.deepEqual([...(await waitForCardPresent(p.readerName(0)))], [...second.atr]);
    const conn2 = await (await pcsc()).connect(p.readerName(0));
    assert.equal(counterValue(await conn2.transmit(COUNTER)), 1);
  });

  it('reset clears the card state and calls card.reset()', async () => {
    const p = await start();
    const c = await bridge(p);
    const card = new EchoCard();
    c.insert(0, card);
    await waitForCardPresent(p.readerName(0));
    const app = await pcsc();
    let conn = await app.connect(p.readerName(0));
    const resetsAtConnect = card.resetCount;
    assert.ok(resetsAtConnect >= 1, 'power-up resets the card');
    assert.equal(counterValue(await conn.transmit(COUNTER)), 1);
    assert.equal(counterValue(await conn.transmit(COUNTER)), 2);
    await conn.disconnect('reset');
    conn = await app.connect(p.readerName(0));
    assert.ok(card.resetCount > resetsAtConnect);
    assert.equal(counterValue(await conn.transmit(COUNTER)), 1);
    // leaving the card keeps its state
    await conn.disconnect('leave');
    conn = await app.connect(p.readerName(0));
    assert.equal(counterValue(await conn.transmit(COUNTER)), 2);
  });

  it('when the Node client disconnects every slot empties, pcscd keeps running, a new client can serve again', async () => {
    const p = await start({ cardlink: { slots: 2 } });
    const c = await BridgeSocketClient.connect({ socketPath: p.socketPath });
    c.insert(0, new EchoCard());
    c.insert(1, new EchoCard());
    await waitForCardPresent(p.readerName(0));
    await waitForCardPresent(p.readerName(1));
    const closed = new Promise<CardlinkError | undefined>((resolve) => c.once('close', resolve));
    await c.close();
    assert.equal(await closed, undefined);
    await waitForCardAbsent(p.readerName(0), PROMPT_MS);
    await waitForCardAbsent(p.readerName(1), PROMPT_MS);
    assert.ok(p.running());
    const c2 = await bridge(p);
    c2.insert(1, new EchoCard());
    await waitForCardPresent(p.readerName(1));
  });

  it('a transmit waiting on the card fails promptly when the client disconnects or removes the card', async () => {
    const p = await start();
    const c = await BridgeSocketClient.connect({ socketPath: p.socketPath });
    const slow = new EchoCard({ delayMs: 60_000 });
    c.insert(0, slow);
    await waitForCardPresent(p.readerName(0));
    const app = await pcsc();
    const conn = await app.connect(p.readerName(0));
    let pending = conn.transmit(COUNTER);
    await new Promise((r) => setTimeout(r, 100));
    let t0 = Date.now();
    let failed = assert.rejects(withTimeout(pending, PROMPT_MS, 'transmit after remove'));
    await c.remove(0);
    await failed;
    assert.ok(Date.now() - t0 < PROMPT_MS);
    await waitForCardAbsent(p.readerName(0), PROMPT_MS);

    c.insert(0, slow);
    await waitForCardPresent(p.readerName(0));
    const conn2 = await (await pcsc()).connect(p.readerName(0));
    pending = conn2.transmit(COUNTER);
    await new Promise((r) => setTimeout(r, 100));
    t0 = Date.now();
    failed = assert.rejects(withTimeout(pending, PROMPT_MS, 'transmit after disconnect'));
    await c.close();
    await failed;
    assert.ok(Date.now() - t0 < PROMPT_MS);
    assert.ok(p.running());
  });

  it('a card removed while it answers an APDU gets that answer out first, then leaves', async () => {
    const p = await start();
    const c = await BridgeSocketClient.connect({ socketPath: p.socketPath });
    // Answers within REMOVE_AFTER_ANSWER_MS, as a remote command the daemon aborts does.
    const card = new EchoCard({ delayMs: REMOVE_AFTER_ANSWER_MS / 4 });
    c.insert(0, card);
    await waitForCardPresent(p.readerName(0));
    const conn = await (await pcsc()).connect(p.readerName(0));
    const pending = conn.transmit(COUNTER);
    while (card.transmitCount === 0) await new Promise((r) => setTimeout(r, 5));
    const removed = c.remove(0);
    assert.equal(counterValue(await pending), 1, 'the program got the card answer, not a removal error');
    await removed;
    await waitForCardAbsent(p.readerName(0), PROMPT_MS);
    assert.equal(c.isOccupied(0), false);
    await c.close();
  });

  it('only one bridge client at a time: a second one is refused as busy', async () => {
    const p = await start();
    await bridge(p);
    await assert.rejects(
      BridgeSocketClient.connect({ socketPath: p.socketPath }),
      (e: unknown) =>
        e instanceof CardlinkError && e.code === 'ERR_BRIDGE_CLOSED' && /another client/.test(e.message),
    );
  });

  it('the socket is 0600 and only root or the configured uid may connect (SO_PEERCRED)', async () => {
    const allowedUid = 1; // "daemon" on Debian
    const nobody = 65534;
    const p = await start({ cardlink: { uid: allowedUid } });
    fs.chmodSync(p.dir, 0o755); // mkdtemp made it 0700; the socket's own mode is what is tested
    const st = fs.statSync(p.socketPath);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal(st.uid, allowedUid);

    const tryAs = (uid: number): Promise<{ result: string }> =>
      new Promise((resolve, reject) => {
        const script = `
          const net = require('node:net');
          const s = net.createConnection({ path: process.argv[1] });
          let got = Buffer.alloc(0), result = 'closed';
          s.on('data', (d) => { got = Buffer.concat([got, d]); if (got.length >= 8 && got[4] === 0x81) { result = 'welcome'; s.end(Buffer.from([0,0,0,3,1,0,1])); } });
          s.on('error', (e) => { result = e.code; });
          s.on('close', () => process.stdout.write(JSON.stringify({ result })));`;
        const child = spawn(process.execPath, ['-e', script, p.socketPath], {
          uid,
          gid: uid === nobody ? 65534 : uid,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.on('error', reject);
        child.on('exit', () => resolve(JSON.parse(out || '{"result":"no output"}') as { result: string }));
      });

    assert.deepEqual(await tryAs(allowedUid), { result: 'welcome' });
    assert.deepEqual(await tryAs(nobody), { result: 'EACCES' });
    // Past the file permissions (as if they were wrong), the driver still refuses by peer uid.
    fs.chmodSync(p.socketPath, 0o666);
    assert.deepEqual(await tryAs(nobody), { result: 'closed' });
    assert.match(p.log(), /connection from uid 65534 .* refused/);
    // root is always allowed
    const c = await bridge(p);
    c.insert(0, new EchoCard());
    await waitForCardPresent(p.readerName(0));
  });

  it('malformed frames drop the connection (slots empty), pcscd survives and serves the next client', async () => {
    const p = await start();
    const cases: { name: string; hello: boolean; bytes: Uint8Array; reason?: number }[] = [
      { name: 'length below 2', hello: true, bytes: Uint8Array.of(0, 0, 0, 1, 0x02) },
      { name: 'length above the maximum', hello: true, bytes: Uint8Array.of(0, 2, 0, 0, 0x02, 0) },
      { name: 'no HELLO first', hello: false, bytes: encodeMessage(MessageType.INSERT, 0, echoAtr()) },
      {
        name: 'unsupported version',
        hello: false,
        bytes: encodeMessage(MessageType.HELLO, 0, Uint8Array.of(9)),
        reason: 2,
      },
      { name: 'unknown type', hello: true, bytes: encodeMessage(0x7f, 0) },
      { name: 'slot out of range', hello: true, bytes: encodeMessage(MessageType.INSERT, 4, echoAtr()) },
      {
        name: 'ATR too long',
        hello: true,
        bytes: encodeMessage(MessageType.INSERT, 0, new Uint8Array(34).fill(0x3b)),
      },
      {
        name: 'ATR with a bad TS',
        hello: true,
        bytes: encodeMessage(MessageType.INSERT, 0, Uint8Array.of(0x12, 0x34)),
      },
      {
        name: 'RESPONSE without an APDU',
        hello: true,
        bytes: encodeMessage(MessageType.RESPONSE, 0, Uint8Array.of(0x90, 0)),
      },
      { name: 'REMOVE of an empty slot', hello: true, bytes: encodeMessage(MessageType.REMOVE, 1) },
      { name: 'second HELLO', hello: true, bytes: encodeMessage(MessageType.HELLO, 0, Uint8Array.of(1)) },
    ];
    for (const tc of cases) {
      const peer = await RawPeer.connect(p.socketPath);
      if (tc.hello) {
        await peer.hello();
        // a card in slot 0 must go away with the connection
        peer.send(encodeMessage(MessageType.INSERT, 0, echoAtr()));
        await waitForCardPresent(p.readerName(0));
      }
      peer.send(tc.bytes);
      await withTimeout(peer.closed, 2000, `drop on ${tc.name}`);
      const bye = peer.messages.find((m) => m.type === MessageType.GOODBYE);
      assert.ok(bye, `GOODBYE sent on ${tc.name}`);
      assert.equal(bye.payload[0], tc.reason ?? 1, tc.name);
      if (tc.hello) await waitForCardAbsent(p.readerName(0), PROMPT_MS);
      assert.ok(p.running(), `pcscd alive after ${tc.name}`);
    }
    // frames split across many writes are fine
    const peer = await RawPeer.connect(p.socketPath);
    await peer.waitFor((m) => m.type === MessageType.WELCOME);
    for (const b of Buffer.concat([
      encodeMessage(MessageType.HELLO, 0, Uint8Array.of(1)),
      encodeMessage(MessageType.INSERT, 2, echoAtr()),
    ])) {
      peer.send(Uint8Array.of(b));
      await new Promise((r) => setTimeout(r, 1));
    }
    await waitForCardPresent(p.readerName(2));
    peer.socket.destroy();
    await peer.closed;
    await waitForCardAbsent(p.readerName(2), PROMPT_MS);
    // and the real client still works
    const c = await bridge(p);
    c.insert(0, new EchoCard());
    await waitForCardPresent(p.readerName(0));
    const conn = await (await pcsc()).connect(p.readerName(0));
    assert.equal(counterValue(await conn.transmit(COUNTER)), 1);
  });

  it('a client that never says HELLO is dropped, so it cannot block the reader', async () => {
    const p = await start();
    const peer = await RawPeer.connect(p.socketPath);
    await withTimeout(peer.closed, 8000, 'drop without HELLO');
    await bridge(p);
  });

  it('two PC/SC applications use the card in turn (exclusive access) with consistent answers', async () => {
    const p = await start();
    const c = await bridge(p);
    c.insert(0, new EchoCard());
    await waitForCardPresent(p.readerName(0));
    const appA = await pcsc();
    const appB = await pcsc();
    const a = await appA.connect(p.readerName(0), 'exclusive');
    assert.equal(counterValue(await a.transmit(COUNTER)), 1);
    await assert.rejects(appB.connect(p.readerName(0), 'shared'), /Sharing violation|0x8010000b/i);
    assert.equal(counterValue(await a.transmit(COUNTER)), 2);
    await a.disconnect('leave');
    const b = await appB.connect(p.readerName(0), 'exclusive');
    assert.equal(counterValue(await b.transmit(COUNTER)), 3);
    await assert.rejects(appA.connect(p.readerName(0), 'shared'), /Sharing violation|0x8010000b/i);
    await b.disconnect('leave');
    const a2 = await appA.connect(p.readerName(0), 'exclusive');
    assert.equal(counterValue(await a2.transmit(COUNTER)), 4);
  });

  it('without pcscd, PC/SC access fails with ERR_PCSCD_UNAVAILABLE naming the fix', async () => {
    const p = await startPcscd();
    try {
      assertPcscdAvailable();
    } finally {
      await p.stop();
    }
    assert.throws(
      () => openPcsc(),
      (e: unknown) =>
        e instanceof CardlinkError &&
        e.code === 'ERR_PCSCD_UNAVAILABLE' &&
        /apt-get install pcscd/.test(e.message) &&
        /start/.test(e.message),
    );
    await assert.rejects(
      waitForCardPresent('cardlink Test Reader 00 00', 500),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_PCSCD_UNAVAILABLE',
    );
  });
});
