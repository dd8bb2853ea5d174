/**
 * The listener's socket limits against a real card server on loopback, with real TLS and TCP
 * sockets (docs/connection-limits.md): sockets that stay silent, send half a request or never
 * start TLS are closed within their timeouts while an authenticated session goes on; the caps per
 * source address and in total refuse the excess and free their slots when sockets close; every
 * answer, refusals included, carries HSTS. The timeouts are set to 1-2 s; the bounds allow a
 * loaded machine many seconds of slack and still sit far below Node's defaults (120 s for the TLS
 * handshake, 30 s between header-timeout checks, no limit at all for an idle TLS socket).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import WebSocket from 'ws';
import { SESSION_PATH } from '../../../protocol/wire/limits.js';
import { HSTS_MAX_AGE_SECONDS } from '../../../server/http/responses.js';
import { startTestCardServer, type TestCardServer } from '../../support/card-server.js';
import { capturedLogger } from '../../support/captured-log.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { newDeviceKey, SessionClient } from '../../support/session-client.js';

/** Sockets of each kind in the timeout tests. */
const N = 60;
/** What a loaded 2-core machine may add to a timeout before we call it not enforced. */
const SLACK_MS = 15_000;
const HSTS = `max-age=${HSTS_MAX_AGE_SECONDS}`;

interface Probe {
  readonly socket: net.Socket;
  /** When the client saw the connection (TCP connect, or TLS secureConnect). */
  readonly openedAt: number;
  /** Milliseconds from openedAt to the close. */
  readonly lived: Promise<number>;
  /** Everything the server sent. */
  received(): string;
}

function probe(socket: net.Socket, openedAt: number): Probe {
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  socket.on('error', () => undefined); // a reset is one way of being closed
  socket.resume(); // only a reading socket sees the server's close
  const lived = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - openedAt)));
  return { socket, openedAt, lived, received: () => text };
}

/** A TLS socket past its handshake, or undefined when the server closed it before. */
function openTls(port: number, ca: string, localAddress = '127.0.0.1'): Promise<Probe | undefined> {
  return new Promise((resolve) => {
    // tls.connect passes the TCP options on, the source address among them.
    const options: tls.ConnectionOptions & net.TcpSocketConnectOpts = {
      host: '127.0.0.1',
      port,
      ca,
      localAddress,
    };
    const socket = tls.connect(options);
    socket.on('error', () => undefined);
    socket.once('secureConnect', () => resolve(probe(socket, Date.now())));
    socket.once('close', () => resolve(undefined));
  });
}

/** A TCP socket that will never start TLS. */
function openRaw(port: number): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('error', reject);
    socket.once('connect', () => resolve(probe(socket, Date.now())));
  });
}

/** A TLS socket that sends the start of a request, then one more header line every 300 ms. */
async function openPartial(port: number, ca: string): Promise<Probe> {
  const p = await openTls(port, ca);
  assert.ok(p, 'the partial-header socket connects');
  p.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  let line = 0;
  const drip = setInterval(() => {
    if (p.socket.writable) p.socket.write(`X-Slow-${line++}: 1\r\n`);
  }, 300);
  void p.lived.then(() => clearInterval(drip));
  return p;
}

async function inBatches<T>(count: number, open: () => Promise<T>): Promise<T[]> {
  const out: T[] = [];
  while (out.length < count)
    out.push(...(await Promise.all(Array.from({ length: Math.min(10, count - out.length) }, open))));
  return out;
}

/** Every probe closes, each having lived at least most of `timeoutMs` and at most it plus slack. */
async function assertClosedWithin(kind: string, probes: readonly Probe[], timeoutMs: number): Promise<void> {
  const lives = await Promise.all(probes.map((p) => p.lived));
  const shortest = Math.min(...lives);
  const longest = Math.max(...lives);
  // Timers never fire early: a close well before the timeout would be something else closing it
  // (half of it: the client and the server see a new connection at slightly different times).
  assert.ok(
    shortest >= timeoutMs * 0.5,
    `${kind}: one closed after ${shortest} ms, before the ${timeoutMs} ms timeout`,
  );
  assert.ok(
    longest <= timeoutMs + SLACK_MS,
    `${kind}: one stayed open ${longest} ms (timeout ${timeoutMs} ms)`,
  );
}

async function until(what: string, test: () => boolean | Promise<boolean>, ms = 20_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) assert.fail(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function login(node: TestCardServer, idp: TestIdp): Promise<SessionClient> {
  const client = await SessionClient.connect(node.server.sessionUrl, node.tls.cert);
  await client.hello();
  const ok = await client.auth((await idp.login()).accessToken, newDeviceKey(), 'laptop');
  assert.equal(ok.type, 'AUTH_OK', ok.type === 'ERROR' ? ok.code : '');
  return client;
}

async function assertSessionWorks(client: SessionClient): Promise<void> {
  assert.equal((await client.request({ type: 'PING' })).type, 'PONG');
  assert.equal((await client.request({ type: 'LIST_CARDS' })).type, 'CARDS');
}

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
}

function request(
  node: TestCardServer,
  options: { method?: string; path: string; headers?: Record<string, string> },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: '127.0.0.1', port: node.server.port, ca: node.tls.cert, agent: false, ...options },
      (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, headers: res.headers });
      },
    );
    req.on('upgrade', () => reject(new Error('the upgrade was accepted')));
    req.on('error', reject);
    req.end();
  });
}

function upgradeHeaders(key = Buffer.alloc(16, 7).toString('base64')): Record<string, string> {
  return {
    Connection: 'Upgrade',
    Upgrade: 'websocket',
    'Sec-WebSocket-Version': '13',
    'Sec-WebSocket-Key': key,
  };
}

describe('connection limits of the card server listener', () => {
  let idp: TestIdp;
  const dirs: string[] = [];
  const tempDir = async (): Promise<string> => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cardlink-sockets-'));
    dirs.push(dir);
    return dir;
  };

  before(async () => {
    idp = await startTestIdp();
  });
  after(async () => {
    await idp.close();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  describe('timeouts before the upgrade (guard at 2 s, TLS handshake 1 s)', () => {
    let node: TestCardServer;
    before(async () => {
      node = await startTestCardServer(await tempDir(), idp, {
        limits: {
          tlsHandshakeTimeoutSeconds: 1,
          socketIdleTimeoutSeconds: 2,
          // Far away: here only the guard may close slow headers.
          headersTimeoutSeconds: 120,
          handshakeTimeoutSeconds: 8,
        },
      });
    });
    after(() => node.stop());

    it(
      'closes idle TLS, partial-header and silent TCP sockets while a session goes on',
      { timeout: 120_000 },
      async () => {
        const session = await login(node, idp);
        const sessionFrom = Date.now();
        // Upgraded but silent: the session's handshake timeout (8 s) closes it with 4009, not the
        // socket guard (2 s) with a bare close: the guard lets go of a socket at the upgrade.
        const silentWs = new WebSocket(node.server.sessionUrl, { ca: node.tls.cert });
        silentWs.on('error', () => undefined);
        const silentWsClosed = new Promise<number>((resolve) =>
          silentWs.on('close', (code) => resolve(code)),
        );

        const { port } = node.server;
        const ca = node.tls.cert;
        const raw = await inBatches(N, () => openRaw(port));
        const idle = await inBatches(N, async () => {
          const p = await openTls(port, ca);
          assert.ok(p, 'an idle TLS socket connects');
          return p;
        });
        const partial = await inBatches(N, () => openPartial(port, ca));

        await assertClosedWithin('raw TCP (TLS handshake timeout)', raw, 1000);
        await assertClosedWithin('idle TLS (socket idle timeout)', idle, 2000);
        await assertClosedWithin('partial headers (socket idle timeout)', partial, 2000);
        assert.equal(await silentWsClosed, 4009);

        assert.ok(Date.now() - sessionFrom > 2000, 'the session outlived the socket idle timeout');
        await assertSessionWorks(session);
        // Each closed socket gave back its count: only the session's is left.
        await until('only the session holds a socket', () => node.server.sockets() === 1);
        session.close();
      },
    );

    it(
      'a socket with one request answered gets the full idle time again, then closes',
      { timeout: 60_000 },
      async () => {
        const p = await openTls(node.server.port, node.tls.cert);
        assert.ok(p);
        p.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
        await until('the answer arrived', () => p.received().includes('"ok"'));
        const answeredAt = Date.now();
        await p.lived;
        // Node's own keep-alive timeout (5 s) is longer than the 2 s guard here.
        const idleFor = Date.now() - answeredAt;
        assert.ok(idleFor >= 1000 && idleFor <= 2000 + SLACK_MS, `closed ${idleFor} ms after the answer`);
      },
    );
  });

  describe('header timeout under many idle sockets (1 s, guard far away)', () => {
    let node: TestCardServer;
    before(async () => {
      node = await startTestCardServer(await tempDir(), idp, {
        limits: { headersTimeoutSeconds: 1, socketIdleTimeoutSeconds: 3_600 },
      });
    });
    after(() => node.stop());

    it(
      'closes partial-header and idle TLS sockets within the header timeout, answering 408 with HSTS',
      { timeout: 120_000 },
      async () => {
        const session = await login(node, idp);
        const { port } = node.server;
        const ca = node.tls.cert;
        const idle = await inBatches(2 * N, async () => {
          const p = await openTls(port, ca);
          assert.ok(p, 'an idle TLS socket connects');
          return p;
        });
        const partial = await inBatches(N, () => openPartial(port, ca));

        await assertClosedWithin('partial headers (headers timeout)', partial, 1000);
        await assertClosedWithin('idle TLS (headers timeout)', idle, 1000);
        for (const p of partial) {
          const answer = p.received();
          assert.match(answer, /^HTTP\/1\.1 408 /);
          assert.match(answer, new RegExp(`\r\nStrict-Transport-Security: ${HSTS}\r\n`));
        }
        await assertSessionWorks(session);
        session.close();
      },
    );
  });

  describe('socket caps: 4 per address, 10 in total', () => {
    let node: TestCardServer;
    const log = capturedLogger('test-server', 'info');
    const logLines = log.lines;
    const refused = { maxSockets: 0, maxSocketsPerAddress: 0 };
    const held: Probe[] = [];
    let stopped = false;

    before(async () => {
      // The server of test/support/card-server.ts, with its log lines captured.
      node = await startTestCardServer(
        await tempDir(),
        idp,
        { limits: { maxSockets: 10, maxSocketsPerAddress: 4, maxConnections: 2 } },
        log.logger,
      );
    });
    after(async () => {
      for (const p of held) p.socket.destroy();
      if (!stopped) await node.stop();
    });

    const connect = async (from: string): Promise<Probe | undefined> => {
      const p = await openTls(node.server.port, node.tls.cert, from);
      if (p) held.push(p);
      return p;
    };
    const mustConnect = async (from: string): Promise<Probe> => {
      const p = await connect(from);
      assert.ok(p, `a socket from ${from} connects`);
      return p;
    };
    const mustBeRefused = async (from: string, by: keyof typeof refused): Promise<void> => {
      assert.equal(await connect(from), undefined, `a socket from ${from} is refused (${by})`);
      refused[by]++;
    };
    /** Retries until a socket from `from` gets through (the server sees closes a moment later). */
    const connectOnceFree = async (from: string, by: keyof typeof refused): Promise<Probe> => {
      let p: Probe | undefined;
      await until(`a socket from ${from} gets through`, async () => {
        p = await connect(from);
        if (!p) refused[by]++;
        return p !== undefined;
      });
      return p!;
    };
    const closeAll = async (): Promise<void> => {
      for (const p of held.splice(0)) p.socket.destroy();
      await until('every socket is closed on the server', () => node.server.sockets() === 0);
    };

    it('refuses sockets beyond the per-address cap while another address still connects', async () => {
      const first = [];
      for (let i = 0; i < 4; i++) first.push(await mustConnect('127.0.0.1'));
      await mustBeRefused('127.0.0.1', 'maxSocketsPerAddress');
      for (let i = 0; i < 4; i++) await mustConnect('127.0.0.2');
      await mustBeRefused('127.0.0.2', 'maxSocketsPerAddress');
      await mustBeRefused('127.0.0.1', 'maxSocketsPerAddress');
      // A closed socket frees its slot for the same address.
      first[0]!.socket.destroy();
      await connectOnceFree('127.0.0.1', 'maxSocketsPerAddress');
      await closeAll();
    });

    it('refuses sockets beyond the total cap; closing sockets frees their slots', async () => {
      const first = [];
      for (let i = 0; i < 4; i++) first.push(await mustConnect('127.0.0.1'));
      for (let i = 0; i < 4; i++) await mustConnect('127.0.0.2');
      for (let i = 0; i < 2; i++) await mustConnect('127.0.0.3');
      assert.equal(node.server.sockets(), 10);
      await mustBeRefused('127.0.0.4', 'maxSockets');
      await mustBeRefused('127.0.0.3', 'maxSockets');
      first[0]!.socket.destroy();
      first[1]!.socket.destroy();
      await connectOnceFree('127.0.0.4', 'maxSockets');
      await connectOnceFree('127.0.0.4', 'maxSockets');
      await mustBeRefused('127.0.0.5', 'maxSockets');
      await closeAll();
      // A WebSocket session needs no more than its one socket.
      const session = await login(node, idp);
      await assertSessionWorks(session);
      session.close();
      await session.closed;
    });

    it('logs what the caps refused as summaries, not a line per socket', async () => {
      const from = Date.now();
      for (let i = 0; i < 4; i++) await mustConnect('127.0.0.6');
      for (let i = 0; i < 30; i++) await mustBeRefused('127.0.0.6', 'maxSocketsPerAddress');
      await closeAll();
      await node.stop(); // writes the pending summary
      stopped = true;
      const summaries = logLines.filter((l) => String(l['message']).startsWith('connection limits'));
      const total = (name: string): number =>
        summaries.reduce((n, l) => n + ((l['limits'] as Record<string, number>)[`limits.${name}`] ?? 0), 0);
      assert.equal(total('maxSocketsPerAddress'), refused.maxSocketsPerAddress);
      assert.equal(total('maxSockets'), refused.maxSockets);
      assert.ok(refused.maxSocketsPerAddress >= 33, String(refused.maxSocketsPerAddress));
      // One line per 10 s window at most (and one at shutdown), whatever the number of sockets.
      assert.ok(
        summaries.length <= Math.ceil((Date.now() - from) / 10_000) + 3,
        `${summaries.length} summary lines`,
      );
      assert.ok(summaries.every((l) => l['level'] === 'warn'));
      const named = summaries.flatMap((l) => l['addresses'] as { address: string }[]).map((a) => a.address);
      assert.ok(named.includes('127.0.0.6'), named.join(' '));
    });
  });

  describe('HSTS on every answer, refusals included', () => {
    let node: TestCardServer;
    before(async () => {
      node = await startTestCardServer(await tempDir(), idp, { limits: { maxConnections: 1 } });
    });
    after(() => node.stop());

    it('is sent with /healthz, /readyz, 404, 405 and refused upgrades (wrong path, bad key, full)', async () => {
      const expect = async (status: number, options: Parameters<typeof request>[1]): Promise<void> => {
        const answer = await request(node, options);
        assert.equal(answer.status, status, `${options.method ?? 'GET'} ${options.path}`);
        assert.equal(
          answer.headers['strict-transport-security'],
          HSTS,
          `${options.method ?? 'GET'} ${options.path}`,
        );
      };
      await expect(200, { path: '/healthz' });
      await expect(200, { path: '/readyz' });
      await expect(404, { path: '/nothing-here' });
      await expect(405, { method: 'POST', path: '/healthz' });
      await expect(404, { path: '/elsewhere', headers: upgradeHeaders() });
      await expect(400, { path: SESSION_PATH, headers: upgradeHeaders('not a key') });
      // maxConnections 1: one WebSocket fills it, the next upgrade is refused with 503.
      const ws = new WebSocket(node.server.sessionUrl, { ca: node.tls.cert });
      await new Promise((resolve, reject) => {
        ws.once('open', resolve);
        ws.once('error', reject);
      });
      await expect(503, { path: SESSION_PATH, headers: upgradeHeaders() });
      ws.close();
    });
  });
});
