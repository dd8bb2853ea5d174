/** The delaying, cuttable TCP proxy of test/support, against plain TCP servers. */
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.js';

interface TestServer {
  port: number;
  /** Sockets the server accepted, with what each received and whether it closed. */
  accepted: { socket: net.Socket; received: Buffer[]; closed: Promise<void> }[];
  close(): Promise<void>;
}

/** A TCP server; `echo` writes back everything it reads (and ends when the client ends). */
async function startServer(echo: boolean): Promise<TestServer> {
  const accepted: TestServer['accepted'] = [];
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.setNoDelay(true);
    const received: Buffer[] = [];
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      received.push(chunk);
      if (echo) socket.write(chunk);
    });
    socket.on('end', () => socket.end());
    accepted.push({ socket, received, closed: closed(socket) });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted,
    close: () =>
      new Promise((resolve) => {
        for (const a of accepted) a.socket.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Resolves when the socket has closed, whether or not it failed first. */
const closed = (socket: net.Socket): Promise<void> =>
  socket.closed ? Promise.resolve() : new Promise((resolve) => socket.once('close', () => resolve()));

async function connect(proxy: TcpProxy): Promise<net.Socket> {
  const socket = net.connect({ host: proxy.host, port: proxy.port, noDelay: true });
  await once(socket, 'connect');
  return socket;
}

/** Resolves with the next `n` bytes the socket reads. */
function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let got = 0;
    const onData = (chunk: Buffer): void => {
      parts.push(chunk);
      got += chunk.length;
      if (got >= n) {
        socket.off('data', onData);
        socket.off('error', reject);
        resolve(Buffer.concat(parts));
      }
    };
    socket.on('data', onData);
    socket.once('error', reject);
  });
}

async function waitFor(condition: () => boolean, timeoutMs = 2000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 5));
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function setup(echo: boolean, delayMs?: number): Promise<{ target: TestServer; proxy: TcpProxy }> {
  const target = await startServer(echo);
  cleanups.push(() => target.close());
  const proxy = await startTcpProxy({
    targetHost: '127.0.0.1',
    targetPort: target.port,
    ...(delayMs === undefined ? {} : { delayMs }),
  });
  cleanups.push(() => proxy.close());
  return { target, proxy };
}

async function roundTrip(socket: net.Socket): Promise<number> {
  const start = performance.now();
  const answer = readBytes(socket, 1);
  socket.write(Uint8Array.of(0x42));
  await answer;
  return performance.now() - start;
}

/** Upper margin over the configured delay a round trip may take (a loaded CI machine included). */
const RTT_MARGIN_MS = 250;

describe('startTcpProxy', () => {
  it('adds twice the one-way delay to a round trip, and setDelay changes it', async () => {
    const { proxy } = await setup(true, 20);
    assert.match(proxy.url('wss', '/x'), new RegExp(`^wss://127\\.0\\.0\\.1:${proxy.port}/x$`));
    const socket = await connect(proxy);
    cleanups.push(() => void socket.destroy());
    for (let i = 0; i < 5; i++) {
      const rtt = await roundTrip(socket);
      assert.ok(rtt >= 40, `round trip of ${rtt} ms under 2 * 20 ms`);
      assert.ok(rtt < 40 + RTT_MARGIN_MS, `round trip of ${rtt} ms far over 2 * 20 ms`);
    }
    proxy.setDelay(0);
    const fast = await roundTrip(socket);
    assert.ok(fast < RTT_MARGIN_MS / 2, `round trip of ${fast} ms without delay`);
    proxy.setDelay(35);
    const slow = await roundTrip(socket);
    assert.ok(slow >= 70 && slow < 70 + RTT_MARGIN_MS, `round trip of ${slow} ms with 35 ms one way`);
    assert.equal(proxy.connections, 1);
    assert.equal(proxy.acceptedConnections, 1);
  });

  it('keeps the order of many chunks, across delay changes and the end of the stream', async () => {
    const { proxy } = await setup(true, 3);
    const socket = await connect(proxy);
    const chunks: Buffer[] = [];
    for (let i = 0; i < 500; i++) {
      const chunk = Buffer.alloc(1 + ((i * 37) % 300));
      for (let j = 0; j < chunk.length; j++) chunk[j] = (i + j) & 0xff;
      chunks.push(chunk);
    }
    const expected = Buffer.concat(chunks);
    const received: Buffer[] = [];
    socket.on('data', (c: Buffer) => received.push(c));
    const ended = once(socket, 'end');
    for (let i = 0; i < chunks.length; i++) {
      socket.write(chunks[i]!);
      if (i === 100) proxy.setDelay(15);
      if (i === 200) proxy.setDelay(0); // must not overtake the chunks held for 15 ms
      if (i === 300) proxy.setDelay(7);
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    socket.end();
    await ended;
    assert.equal(proxy.clientBytes, expected.length);
    assert.ok(Buffer.concat(received).equals(expected), 'echoed bytes differ from the bytes sent');
    await closed(socket);
    await waitFor(() => proxy.connections === 0);
  });

  it('cutAll resets both sides of every connection', async () => {
    const { target, proxy } = await setup(true);
    const a = await connect(proxy);
    const b = await connect(proxy);
    await roundTrip(a);
    await roundTrip(b);
    assert.equal(proxy.connections, 2);
    const errors: string[] = [];
    for (const s of [a, b]) s.on('error', (e: NodeJS.ErrnoException) => errors.push(e.code ?? '?'));
    const clientsClosed = Promise.all([closed(a), closed(b)]);
    proxy.cutAll();
    assert.equal(proxy.connections, 0);
    await clientsClosed;
    await Promise.all(target.accepted.map((t) => t.closed));
    assert.deepEqual(errors, ['ECONNRESET', 'ECONNRESET']);
    // The proxy goes on accepting.
    const c = await connect(proxy);
    cleanups.push(() => void c.destroy());
    await roundTrip(c);
  });

  it('armCut with forwardFirst delivers the chunk to the server, then cuts', async () => {
    const { target, proxy } = await setup(false, 5);
    const socket = await connect(proxy);
    socket.on('error', () => {});
    socket.write('hello ');
    await waitFor(() => target.accepted[0]?.received.length === 1);
    const cut = proxy.armCut({ onNextClientChunk: true, forwardFirst: true });
    socket.write('COMMAND');
    await cut;
    await target.accepted[0]!.closed;
    await closed(socket);
    assert.ok(socket.destroyed);
    assert.equal(Buffer.concat(target.accepted[0]!.received).toString(), 'hello COMMAND');
    assert.equal(proxy.connections, 0);
  });

  it('armCut without forwardFirst drops the chunk; afterClientBytes counts bytes since arming', async () => {
    const { target, proxy } = await setup(false);
    const socket = await connect(proxy);
    socket.on('error', () => {});
    const cut = proxy.armCut({ afterClientBytes: 10, forwardFirst: false });
    assert.throws(() => proxy.armCut({ onNextClientChunk: true, forwardFirst: false }));
    socket.write('12345');
    await waitFor(() => target.accepted[0]?.received.length === 1);
    socket.write('67890-secret');
    await cut;
    await target.accepted[0]!.closed;
    assert.equal(Buffer.concat(target.accepted[0]!.received).toString(), '12345');
    assert.equal(proxy.connections, 0);
  });

  it('pause resets new connections until resume; open ones keep working', async () => {
    const { target, proxy } = await setup(true);
    const open = await connect(proxy);
    cleanups.push(() => void open.destroy());
    proxy.pause();
    const refused = net.connect({ host: proxy.host, port: proxy.port });
    const outcome = await new Promise<string>((resolve) => {
      refused.on('data', () => resolve('data'));
      refused.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      refused.on('close', () => resolve('closed'));
    });
    assert.ok(outcome === 'ECONNRESET' || outcome === 'closed', outcome);
    await roundTrip(open);
    assert.equal(target.accepted.length, 1, 'the paused proxy connected upstream');
    assert.equal(proxy.acceptedConnections, 1);
    proxy.resume();
    const later = await connect(proxy);
    cleanups.push(() => void later.destroy());
    await roundTrip(later);
    assert.equal(proxy.acceptedConnections, 2);
  });
});
