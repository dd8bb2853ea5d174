/**
 * The daemon's control socket over real Unix sockets in a temp dir: handshake, methods, events,
 * refusals, file permissions, stale sockets and the error mapping. The handler is a test fake.
 */
import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import winston from 'winston';
import { CardlinkError } from '../../../protocol/errors.js';
import type { Logger } from '../../../protocol/log.js';
import { ControlClient } from '../../../daemon/control/control-client.js';
import {
  CONTROL_SECRET_NAME,
  CONTROL_SOCKET_NAME,
  controlPaths,
  controlRuntimeDirectory,
  hasPosixPermissions,
  isNamedPipePath,
  ensurePrivateDirectory,
  readControlSecret,
} from '../../../daemon/control/control-paths.js';
import {
  CONTROL_PROTOCOL_VERSION,
  MAX_CONTROL_IN_FLIGHT,
  MAX_CONTROL_LINE_BYTES,
  type CardStatus,
  type ControlEvent,
  type ControlHandler,
  type DaemonStatus,
  type PinChangeParams,
  type PinResult,
  type PinUnblockParams,
  type PinSetParams,
  type SetPinResult,
  type TokenHandover,
} from '../../../daemon/control/control-protocol.js';
import { ControlServer } from '../../../daemon/control/control-server.js';
import { controlProof, newControlNonce } from '../../../daemon/control/control-proof.js';

const CARDS: CardStatus[] = [
  { cardId: 'c1', label: 'Work', slot: 0, readerName: 'cardlink Virtual Reader 00 00', state: 'inserted' },
  { cardId: 'c2', label: 'Old', state: 'taken-over', takenOverBy: 'laptop' },
];
const STATUS: DaemonStatus = {
  state: 'connected',
  serverUrl: 'wss://cards.example.test',
  user: 'alice',
  deviceId: 'd-1',
  deviceStatus: 'approved',
  tokenExpiresAt: 1_900_000_000,
  cards: CARDS,
};
/** A token-looking string that must never reach a log line. */
const ACCESS_TOKEN = 'eyJhbGciOiJFUzI1NiJ9.access-token-never-logged.sig';
const REFRESH_TOKEN = 'refresh-token-never-logged';

class FakeHandler implements ControlHandler {
  calls: string[] = [];
  tokens: TokenHandover[] = [];
  failWith: unknown = undefined;

  status(): DaemonStatus {
    this.calls.push('status');
    if (this.failWith) throw this.failWith;
    return STATUS;
  }
  cards(): CardStatus[] {
    this.calls.push('cards');
    return CARDS;
  }
  async handOverToken(t: TokenHandover): Promise<void> {
    this.calls.push('hand-over-token');
    this.tokens.push(t);
    if (this.failWith) throw this.failWith;
  }
  async logout(): Promise<void> {
    this.calls.push('logout');
    if (this.failWith) throw this.failWith;
  }
  async connect(): Promise<void> {
    this.calls.push('connect');
  }
  async disconnect(): Promise<void> {
    this.calls.push('disconnect');
  }
  pins: (PinChangeParams | PinUnblockParams | PinSetParams)[] = [];
  async changePin(p: PinChangeParams): Promise<PinResult> {
    this.calls.push('change-pin');
    this.pins.push(p);
    if (this.failWith) throw this.failWith;
    return { outcome: 'wrong', reference: 'pin', triesLeft: 2 };
  }
  async unblockPin(p: PinUnblockParams): Promise<PinResult> {
    this.calls.push('unblock-pin');
    this.pins.push(p);
    if (this.failWith) throw this.failWith;
    return { outcome: 'done' };
  }
  async enroll(p: { cardId?: string }): Promise<{ cardId: string; label: string; certificates: number }> {
    this.calls.push('enroll');
    if (this.failWith) throw this.failWith;
    return { cardId: p.cardId ?? 'only', label: 'card', certificates: 4 };
  }

  async setPin(p: PinSetParams): Promise<SetPinResult> {
    this.calls.push('set-pin');
    this.pins.push(p);
    if (this.failWith) throw this.failWith;
    return { outcome: 'done', kind: 'first' };
  }
}

/** A PIN and a PUK that must never reach a log line (nor an error message). */
const PIN_NEVER_LOGGED = '91735';
const PUK_NEVER_LOGGED = '48261507';

/** A client that speaks raw lines, to send what ControlClient never would. */
class RawPeer {
  readonly socket: net.Socket;
  readonly lines: unknown[] = [];
  readonly closed: Promise<void>;
  private buffer = '';
  private waiters: (() => void)[] = [];

  private constructor(socket: net.Socket) {
    this.socket = socket;
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('utf8');
      let nl;
      while ((nl = this.buffer.indexOf('\n')) !== -1) {
        this.lines.push(JSON.parse(this.buffer.slice(0, nl)));
        this.buffer = this.buffer.slice(nl + 1);
      }
      this.wake();
    });
    socket.on('close', () => this.wake());
  }

  static connect(path: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ path });
      s.once('connect', () => resolve(new RawPeer(s)));
      s.once('error', reject);
    });
  }

  send(value: unknown): void {
    this.socket.write(typeof value === 'string' ? value : `${JSON.stringify(value)}\n`);
  }

  /** The next line received (index `n`), or undefined when the connection closes first. */
  async line(n: number): Promise<unknown> {
    while (this.lines.length <= n && !this.socket.destroyed) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    return this.lines[n];
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

function captureLogger(): { logger: Logger; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
  // No redaction here on purpose: the server must not hand secrets to the logger at all.
  const logger = winston.createLogger({
    level: 'debug',
    format: winston.format.json(),
    transports: [new winston.transports.Stream({ stream })],
  });
  return { logger, text: () => text };
}

function isCode(code: string, messagePart?: RegExp) {
  return (err: unknown) => {
    assert.ok(err instanceof CardlinkError, `expected a CardlinkError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (messagePart) assert.match(err.message, messagePart);
    return true;
  };
}

describe('control socket', () => {
  let dir: string;
  let runDir: string;
  let socketPath: string;
  let secretFile: string;
  let handler: FakeHandler;
  let server: ControlServer | undefined;
  const clients: ControlClient[] = [];
  const peers: RawPeer[] = [];

  async function startServer(extra: { handshakeTimeoutMs?: number; logger?: Logger } = {}) {
    server = await ControlServer.start({ socketPath, secretFile, handler, ...extra });
    return server;
  }
  async function client(name = 'test-client'): Promise<ControlClient> {
    const c = await ControlClient.connect({ socketPath, secretFile, clientName: name });
    clients.push(c);
    return c;
  }
  async function peer(): Promise<RawPeer> {
    const p = await RawPeer.connect(socketPath);
    peers.push(p);
    return p;
  }
  /** hello, the daemon's challenge (its proof checked), our auth with `secret`: the daemon's answer to that. */
  async function handshake(p: RawPeer, secret: string, client = 'raw'): Promise<unknown> {
    const nonce = newControlNonce();
    p.send({ type: 'hello', client, nonce });
    const challenge = (await p.line(0)) as { type: string; nonce: string; proof: string };
    assert.equal(challenge.type, 'challenge');
    const real = await readControlSecret(secretFile);
    assert.equal(challenge.proof, controlProof(real, 'daemon', nonce, challenge.nonce), "the daemon's proof");
    p.send({ type: 'auth', proof: controlProof(secret, 'client', nonce, challenge.nonce) });
    return p.line(1);
  }
  /** A raw peer past the handshake; its line 0 is the hello-ok (the challenge is dropped). */
  async function authedPeer(): Promise<RawPeer> {
    const p = await peer();
    assert.deepEqual(await handshake(p, await readControlSecret(secretFile)), {
      type: 'hello-ok',
      version: CONTROL_PROTOCOL_VERSION,
    });
    p.lines.shift();
    return p;
  }

  beforeEach(async () => {
    dir = await fs.mkdtemp(join(os.tmpdir(), 'cardlink-ctl-'));
    runDir = join(dir, 'run');
    socketPath = join(runDir, CONTROL_SOCKET_NAME);
    secretFile = join(runDir, CONTROL_SECRET_NAME);
    handler = new FakeHandler();
    server = undefined;
  });

  afterEach(async () => {
    for (const p of peers.splice(0)) p.socket.destroy();
    for (const c of clients.splice(0)) await c.close();
    await server?.close();
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('hands shakes and round-trips every method to the handler', async () => {
    await startServer();
    const c = await client();
    assert.deepEqual(await c.request('status'), STATUS);
    assert.deepEqual(await c.request('cards', {}), CARDS);
    const handover: TokenHandover = {
      accessToken: ACCESS_TOKEN,
      refreshToken: REFRESH_TOKEN,
      expiresAt: 1_900_000_000,
      issuer: 'https://idp.example.test/realms/x',
      clientId: 'cardlink-tray',
    };
    assert.equal(await c.request('hand-over-token', handover), null);
    assert.equal(await c.request('logout'), null);
    assert.equal(await c.request('connect'), null);
    assert.equal(await c.request('disconnect'), null);
    const change = { cardId: 'c1', currentPin: '123456', newPin: '24681357' };
    assert.deepEqual(await c.request('change-pin', change), {
      outcome: 'wrong',
      reference: 'pin',
      triesLeft: 2,
    });
    const unblock = { cardId: 'c1', puk: '12345678', newPin: '246813' };
    assert.deepEqual(await c.request('unblock-pin', unblock), { outcome: 'done' });
    assert.deepEqual(handler.calls, [
      'status',
      'cards',
      'hand-over-token',
      'logout',
      'connect',
      'disconnect',
      'change-pin',
      'unblock-pin',
    ]);
    assert.deepEqual(handler.pins, [change, unblock]);
    assert.deepEqual(handler.tokens, [handover]);
    // Concurrent requests are matched by id.
    const [s, k] = await Promise.all([c.request('status'), c.request('cards')]);
    assert.equal(s.state, 'connected');
    assert.equal(k.length, 2);
    assert.equal(server!.clientCount, 1);
  });

  it('passes only the hand-over-token fields that were given', async () => {
    await startServer();
    const c = await client();
    await c.request('hand-over-token', { accessToken: ACCESS_TOKEN });
    assert.deepEqual(handler.tokens, [{ accessToken: ACCESS_TOKEN }]);
  });

  it('refuses a wrong secret, closes the socket and never calls the handler', async () => {
    await startServer();
    const good = await readControlSecret(secretFile);
    const wrong = (good[0] === 'A' ? 'B' : 'A') + good.slice(1);
    for (const secret of [wrong, 'short', '']) {
      const p = await peer();
      const answer = (await handshake(p, secret, 'evil')) as { type: string; code: string };
      p.send({ type: 'request', id: 1, method: 'status' });
      assert.equal(answer.type, 'error');
      assert.equal(answer.code, 'ERR_CONTROL_AUTH');
      await p.closed;
      assert.equal(p.lines.length, 2, 'the challenge, then the refusal');
    }
    // Version 1's hello, the secret itself in it, is refused without an answer beyond the error.
    const legacy = await peer();
    legacy.send({ type: 'hello', secret: good, client: 'old' });
    assert.equal(((await legacy.line(0)) as { code: string }).code, 'ERR_CONTROL_AUTH');
    await legacy.closed;
    // Through the client: a secret file with another secret. The client finds out from the
    // daemon's proof, before it proves anything itself.
    const other = join(dir, 'other.secret');
    await fs.writeFile(other, `${wrong}\n`, { mode: 0o600 });
    await assert.rejects(
      ControlClient.connect({ socketPath, secretFile: other, clientName: 'cli' }),
      isCode('ERR_CONTROL_AUTH', /cannot prove it knows the secret/),
    );
    assert.deepEqual(handler.calls, []);
    assert.equal(server!.clientCount, 0);
  });

  it('a client that reached a squatter instead of the daemon sends it neither the secret nor a proof', async () => {
    // What a local process that took the socket path (or, on Windows, the pipe name) would see.
    await fs.mkdir(runDir, { mode: 0o700 });
    await fs.chmod(runDir, 0o700);
    const secret = 'x'.repeat(43);
    await fs.writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
    let received = '';
    const squatter = net.createServer((s) => {
      s.on('data', (d: Buffer) => {
        received += d.toString('utf8');
        // It answers like a daemon, but cannot make the proof.
        s.write(
          `${JSON.stringify({ type: 'challenge', nonce: newControlNonce(), proof: 'A'.repeat(43) })}\n`,
        );
      });
      s.on('error', () => {});
    });
    await new Promise<void>((resolve) => squatter.listen(socketPath, resolve));
    try {
      await assert.rejects(
        ControlClient.connect({ socketPath, secretFile, clientName: 'cli' }),
        isCode('ERR_CONTROL_AUTH', /cannot prove it knows the secret/),
      );
      const lines = received
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { type: string });
      assert.deepEqual(
        lines.map((l) => l.type),
        ['hello'],
      );
      assert.ok(!received.includes(secret), 'the secret never crossed the socket');
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });

  it('refuses a request before the hello', async () => {
    await startServer();
    const p = await peer();
    p.send({ type: 'request', id: 1, method: 'status' });
    const answer = (await p.line(0)) as { type: string; code: string };
    assert.deepEqual([answer.type, answer.code], ['error', 'ERR_CONTROL_AUTH']);
    await p.closed;
    assert.deepEqual(handler.calls, []);
  });

  it('refuses a hello with extra fields, a bad client name or nonce, and an auth before the hello', async () => {
    await startServer();
    const secret = await readControlSecret(secretFile);
    const nonce = newControlNonce();
    for (const hello of [
      { type: 'hello', client: 'x', nonce, extra: 1 },
      { type: 'hello', client: '', nonce },
      { type: 'hello', client: 'bad\nname', nonce },
      { type: 'hello', nonce },
      { type: 'hello', client: 'x' },
      { type: 'hello', client: 'x', nonce: 'short' },
      { type: 'hello', client: 'x', nonce: `${nonce.slice(1)}=` },
      { type: 'auth', proof: controlProof(secret, 'client', nonce, nonce) },
    ]) {
      const p = await peer();
      p.send(hello);
      assert.equal(((await p.line(0)) as { code: string }).code, 'ERR_CONTROL_AUTH');
      await p.closed;
    }
  });

  it('closes with an error on malformed JSON, an unknown type or a second hello or auth', async () => {
    await startServer();
    for (const bad of [
      '{"type":"request",\n',
      '[1,2]\n',
      '{"type":"nope"}\n',
      '{"type":"request","id":-1}\n',
    ]) {
      const p = await authedPeer();
      p.send(bad);
      const answer = (await p.line(1)) as { type: string; code: string };
      assert.deepEqual([answer.type, answer.code], ['error', 'ERR_CONTROL_PROTOCOL'], bad);
      await p.closed;
    }
    for (const again of [
      { type: 'hello', client: 'again', nonce: newControlNonce() },
      { type: 'auth', proof: 'x' },
    ]) {
      const p = await authedPeer();
      p.send(again);
      assert.equal(((await p.line(1)) as { code: string }).code, 'ERR_CONTROL_PROTOCOL');
      await p.closed;
    }
  });

  it('closes on a line longer than the limit, before and after the hello', async () => {
    await startServer();
    const before = await peer();
    before.send('x'.repeat(MAX_CONTROL_LINE_BYTES + 1));
    assert.equal(((await before.line(0)) as { code: string }).code, 'ERR_CONTROL_PROTOCOL');
    await before.closed;

    const after = await authedPeer();
    // A line exactly at the limit is fine; JSON whitespace pads the request to it.
    const request = JSON.stringify({ type: 'request', id: 7, method: 'cards' });
    after.send(`${request}${' '.repeat(MAX_CONTROL_LINE_BYTES - request.length)}\n`);
    assert.equal(((await after.line(1)) as { id: number }).id, 7);
    after.send(
      `{"type":"request","id":8,"method":"cards","params":{"a":"${'y'.repeat(MAX_CONTROL_LINE_BYTES)}`,
    );
    const answer = (await after.line(2)) as { type: string; code: string };
    assert.deepEqual([answer.type, answer.code], ['error', 'ERR_CONTROL_PROTOCOL']);
    await after.closed;
  });

  it('drops a connection that does not finish the handshake in time', async () => {
    await startServer({ handshakeTimeoutMs: 100 });
    const p = await peer();
    const started = Date.now();
    const answer = (await p.line(0)) as { type: string; code: string; message: string };
    assert.deepEqual([answer.type, answer.code], ['error', 'ERR_CONTROL_AUTH']);
    assert.match(answer.message, /handshake did not finish within 100 ms/);
    await p.closed;
    assert.ok(Date.now() - started < 2000);
    // A hello alone does not stop the clock.
    const halfway = await peer();
    halfway.send({ type: 'hello', client: 'slow', nonce: newControlNonce() });
    assert.equal(((await halfway.line(0)) as { type: string }).type, 'challenge');
    assert.equal(((await halfway.line(1)) as { code: string }).code, 'ERR_CONTROL_AUTH');
    await halfway.closed;
    // An authenticated client is not affected by the timeout.
    const c = await client();
    await new Promise((r) => setTimeout(r, 200));
    assert.equal((await c.request('status')).state, 'connected');
  });

  it('broadcasts events only to authenticated clients', async () => {
    await startServer();
    const c1 = await client('tray');
    const c2 = await client('cli');
    const got1: ControlEvent[] = [];
    const got2: ControlEvent[] = [];
    c1.on('event', (e) => got1.push(e));
    c2.on('event', (e) => got2.push(e));
    const waiting = await peer(); // connected, no hello yet
    const events: ControlEvent[] = [
      { event: 'connected', data: { serverUrl: 'wss://cards.example.test', user: 'alice' } },
      { event: 'card-inserted', data: { cardId: 'c1', label: 'Work', slot: 0 } },
      { event: 'taken-over', data: { cardId: 'c1', label: 'Work', byDeviceName: 'laptop' } },
      { event: 'token-expiring', data: { expiresAt: 1_900_000_000 } },
      { event: 'disconnected', data: { willReconnect: true } },
    ];
    for (const e of events) server!.broadcast(e);
    // A request after the broadcast: its response comes after the events on the same connection.
    await c1.request('status');
    await c2.request('status');
    assert.deepEqual(got1, events);
    assert.deepEqual(got2, events);
    // The waiting connection saw nothing: its first lines are the handshake's.
    assert.deepEqual(await handshake(waiting, await readControlSecret(secretFile), 'late'), {
      type: 'hello-ok',
      version: CONTROL_PROTOCOL_VERSION,
    });
    server!.broadcast({ event: 'error', data: { code: 'ERR_IDP_UNAVAILABLE', message: 'idp down' } });
    assert.deepEqual(await waiting.line(2), {
      type: 'event',
      event: 'error',
      data: { code: 'ERR_IDP_UNAVAILABLE', message: 'idp down' },
    });
  });

  it('answers an unknown method with ERR_CONTROL_METHOD and keeps the connection', async () => {
    await startServer();
    const p = await authedPeer();
    p.send({ type: 'request', id: 1, method: 'reboot' });
    assert.deepEqual(await p.line(1), {
      type: 'response',
      id: 1,
      ok: false,
      error: { code: 'ERR_CONTROL_METHOD', message: 'unknown method "reboot"' },
    });
    p.send({ type: 'request', id: 2, method: 42 });
    assert.equal(((await p.line(2)) as { error: { code: string } }).error.code, 'ERR_CONTROL_METHOD');
    p.send({ type: 'request', id: 3, method: 'cards' });
    assert.deepEqual(await p.line(3), { type: 'response', id: 3, ok: true, result: CARDS });
  });

  it('limits unanswered requests per client and closes on a duplicate id', async () => {
    await startServer();
    const releases: (() => void)[] = [];
    handler.logout = () => new Promise<void>((resolve) => releases.push(resolve));
    const p = await authedPeer();
    for (let id = 1; id <= MAX_CONTROL_IN_FLIGHT + 1; id++) p.send({ type: 'request', id, method: 'logout' });
    assert.deepEqual(await p.line(1), {
      type: 'response',
      id: MAX_CONTROL_IN_FLIGHT + 1,
      ok: false,
      error: {
        code: 'ERR_TOO_MANY_IN_FLIGHT',
        message: `at most ${MAX_CONTROL_IN_FLIGHT} requests may be unanswered at a time`,
      },
    });
    releases.shift()!();
    assert.deepEqual(await p.line(2), { type: 'response', id: 1, ok: true, result: null });
    p.send({ type: 'request', id: 2, method: 'cards' });
    const answer = (await p.line(3)) as { type: string; code: string };
    assert.deepEqual([answer.type, answer.code], ['error', 'ERR_CONTROL_PROTOCOL']);
    await p.closed;
    for (const r of releases) r();
  });

  it('validates params strictly, naming the field, without calling the handler', async () => {
    await startServer();
    const c = await client();
    const cases: [string, unknown, RegExp][] = [
      ['hand-over-token', {}, /params\.accessToken is required/],
      ['hand-over-token', undefined, /params\.accessToken is required/],
      ['hand-over-token', { accessToken: 5 }, /params\.accessToken must be a non-empty string/],
      ['hand-over-token', { accessToken: '' }, /params\.accessToken/],
      ['hand-over-token', { accessToken: 'a', refreshToken: null }, /params\.refreshToken/],
      [
        'hand-over-token',
        { accessToken: 'a', expiresAt: '1900000000' },
        /params\.expiresAt must be a positive/,
      ],
      ['hand-over-token', { accessToken: 'a', expiresAt: 1.5 }, /params\.expiresAt/],
      ['hand-over-token', { accessToken: 'a', issuer: 'not a url' }, /params\.issuer must be an http/],
      ['hand-over-token', { accessToken: 'a', clientId: ['x'] }, /params\.clientId/],
      ['hand-over-token', { accessToken: 'a', idToken: 'x' }, /params\.idToken is not a parameter/],
      ['hand-over-token', [ACCESS_TOKEN], /params must be an object/],
      ['change-pin', {}, /params\.cardId is required/],
      ['change-pin', { cardId: 'c1', newPin: '123456' }, /params\.currentPin is required/],
      ['change-pin', { cardId: 'c1', currentPin: '123456' }, /params\.newPin is required/],
      [
        'change-pin',
        { cardId: 'c1', currentPin: 123456, newPin: '654321' },
        /params\.currentPin must be a string/,
      ],
      [
        'change-pin',
        { cardId: 'c1', currentPin: '', newPin: '654321' },
        /params\.currentPin must be a string/,
      ],
      [
        'change-pin',
        { cardId: 'c1', currentPin: '1'.repeat(65), newPin: '654321' },
        /params\.currentPin .*1 to 64/,
      ],
      [
        'change-pin',
        { cardId: 'c1', puk: '12345678', currentPin: '1', newPin: '2' },
        /params\.puk is not a parameter of change-pin/,
      ],
      [
        'unblock-pin',
        { cardId: 'c1', currentPin: '123456', newPin: '654321' },
        /params\.currentPin is not a parameter of unblock-pin/,
      ],
      ['unblock-pin', { cardId: 'c1', newPin: '654321' }, /params\.puk is required/],
      [
        'unblock-pin',
        { cardId: ['c1'], puk: '12345678', newPin: '654321' },
        /params\.cardId must be a string/,
      ],
      ['unblock-pin', 'c1', /params must be an object/],
      ['status', { verbose: true }, /params\.verbose is not a parameter of status/],
      ['logout', 'now', /params must be an object/],
    ];
    for (const [method, params, message] of cases) {
      await assert.rejects(
        // Deliberately ill-typed: what a buggy tray could send.
        (c.request as (m: string, p?: unknown) => Promise<unknown>)(method, params),
        isCode('ERR_CONTROL_PARAMS', message),
        `${method} ${JSON.stringify(params)}`,
      );
    }
    assert.deepEqual(handler.calls, []);
    assert.equal((await c.request('status')).state, 'connected');
  });

  it('maps handler errors: CardlinkError passes through, anything else is ERR_INTERNAL', async () => {
    await startServer();
    const c = await client();
    handler.failWith = new CardlinkError('ERR_AUTH_TOKEN_INVALID', 'the token is not valid for this server');
    await assert.rejects(c.request('logout'), isCode('ERR_AUTH_TOKEN_INVALID', /^the token is not valid/));
    await assert.rejects(c.request('status'), isCode('ERR_AUTH_TOKEN_INVALID'));
    handler.failWith = new Error('db password hunter2 at /secret/path');
    await assert.rejects(c.request('logout'), (err: unknown) => {
      assert.ok(err instanceof CardlinkError);
      assert.equal(err.code, 'ERR_INTERNAL');
      assert.doesNotMatch(err.message, /hunter2|secret\/path/);
      assert.doesNotMatch(err.stack ?? '', /hunter2/);
      return true;
    });
    handler.failWith = 'a thrown string';
    await assert.rejects(c.request('status'), isCode('ERR_INTERNAL'));
    // The connection survives failed requests.
    handler.failWith = undefined;
    assert.equal((await c.request('status')).state, 'connected');
  });

  it('never writes the secret or a handed-over token to the log', async () => {
    const { logger, text } = captureLogger();
    await startServer({ logger });
    const secret = await readControlSecret(secretFile);
    const c = await client();
    await c.request('hand-over-token', { accessToken: ACCESS_TOKEN, refreshToken: REFRESH_TOKEN });
    handler.failWith = new Error(`could not parse ${ACCESS_TOKEN}`);
    await assert.rejects(c.request('hand-over-token', { accessToken: ACCESS_TOKEN }), isCode('ERR_INTERNAL'));
    await assert.rejects(
      (c.request as (m: string, p?: unknown) => Promise<unknown>)('hand-over-token', {
        accessToken: ACCESS_TOKEN,
        refreshToken: 7,
      }),
      isCode('ERR_CONTROL_PARAMS'),
    );
    const p = await peer();
    await handshake(p, `${secret.slice(1)}x`, 'evil');
    await p.closed;
    await server!.close();
    const log = text();
    assert.match(log, /control client authenticated/);
    assert.match(log, /control request failed unexpectedly/);
    assert.ok(!log.includes(ACCESS_TOKEN), 'access token in log');
    assert.ok(!log.includes('access-token-never-logged'), 'access token in log');
    assert.ok(!log.includes(REFRESH_TOKEN), 'refresh token in log');
    assert.ok(!log.includes(secret), 'secret in log');
    assert.ok(!log.includes(secret.slice(1)), 'secret in log');
  });

  it('never writes a PIN or PUK to the log or into an error message, refused or failed', async () => {
    const { logger, text } = captureLogger();
    await startServer({ logger });
    const c = await client();
    const call = (c.request as (m: string, p?: unknown) => Promise<unknown>).bind(c);
    await c.request('change-pin', { cardId: 'c1', currentPin: PIN_NEVER_LOGGED, newPin: PUK_NEVER_LOGGED });
    await c.request('unblock-pin', { cardId: 'c1', puk: PUK_NEVER_LOGGED, newPin: PIN_NEVER_LOGGED });
    const messages: string[] = [];
    const keep = (err: unknown) => {
      messages.push(err instanceof Error ? `${err.message} ${JSON.stringify(err)}` : String(err));
      return true;
    };
    await assert.rejects(call('change-pin', { cardId: 'c1', currentPin: PIN_NEVER_LOGGED, newPin: 7 }), keep);
    await assert.rejects(
      call('unblock-pin', { cardId: 'c1', puk: PUK_NEVER_LOGGED, pin: PIN_NEVER_LOGGED }),
      keep,
    );
    handler.failWith = new Error(`the card refused ${PIN_NEVER_LOGGED} and ${PUK_NEVER_LOGGED}`);
    await assert.rejects(
      c.request('change-pin', { cardId: 'c1', currentPin: PIN_NEVER_LOGGED, newPin: PUK_NEVER_LOGGED }),
      (err: unknown) => keep(err) && isCode('ERR_INTERNAL')(err),
    );
    await server!.close();
    const log = text();
    assert.match(log, /control request failed unexpectedly/);
    for (const where of [log, ...messages]) {
      assert.ok(!where.includes(PIN_NEVER_LOGGED), `PIN in: ${where}`);
      assert.ok(!where.includes(PUK_NEVER_LOGGED), `PUK in: ${where}`);
    }
  });

  it('creates the runtime directory 0700, the secret 0600 and the socket 0600', async () => {
    await startServer();
    assert.equal((await fs.stat(runDir)).mode & 0o777, 0o700);
    assert.equal((await fs.stat(secretFile)).mode & 0o777, 0o600);
    const socket = await fs.lstat(socketPath);
    assert.ok(socket.isSocket());
    assert.equal(socket.mode & 0o777, 0o600);
    const secret = await readControlSecret(secretFile);
    assert.match(secret, /^[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(secret, 'base64url').length, 32);
    assert.equal(await fs.readFile(secretFile, 'utf8'), `${secret}\n`);
    // No temporary file is left behind.
    assert.deepEqual((await fs.readdir(runDir)).sort(), [CONTROL_SECRET_NAME, CONTROL_SOCKET_NAME]);
    // A new secret at each start; close() removes both files.
    await server!.close();
    assert.deepEqual(await fs.readdir(runDir), []);
    await startServer();
    assert.notEqual(await readControlSecret(secretFile), secret);
  });

  it('refuses an existing directory that group or others may access, or a symlink', async () => {
    await fs.mkdir(runDir, { mode: 0o755 });
    await fs.chmod(runDir, 0o755);
    await assert.rejects(
      ensurePrivateDirectory(runDir),
      isCode('ERR_KEY_FILE_INSECURE', /run: has mode 0755/),
    );
    await assert.rejects(startServer(), (err: unknown) => {
      assert.ok(err instanceof CardlinkError);
      assert.equal(err.code, 'ERR_KEY_FILE_INSECURE');
      assert.ok(err.message.includes(runDir));
      assert.equal(err.context.path, runDir);
      return true;
    });
    // The client will not send its secret into a directory others could control either.
    await assert.rejects(
      ControlClient.connect({ socketPath, secretFile, clientName: 'cli' }),
      isCode('ERR_KEY_FILE_INSECURE'),
    );
    await fs.chmod(runDir, 0o700);
    await ensurePrivateDirectory(runDir);
    const link = join(dir, 'link');
    await fs.symlink(runDir, link);
    await assert.rejects(
      ensurePrivateDirectory(link),
      isCode('ERR_KEY_FILE_INSECURE', /must be a directory/),
    );
  });

  it('refuses a second server while the first runs, and replaces a stale socket', async () => {
    await startServer();
    const first = server!;
    const secret = await readControlSecret(secretFile);
    await assert.rejects(
      ControlServer.start({ socketPath, secretFile, handler: new FakeHandler() }),
      isCode('ERR_CONTROL_UNAVAILABLE', /daemon already runs/),
    );
    // The first one still works, with its secret untouched.
    assert.equal(await readControlSecret(secretFile), secret);
    const c = await client();
    assert.equal((await c.request('status')).state, 'connected');
    await c.close();
    await first.close();
    server = undefined;

    // A daemon that died: its socket file stays, nobody listens.
    const child = spawn(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(socketPath)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ]);
    await new Promise((resolve) => child.once('exit', resolve));
    assert.ok((await fs.lstat(socketPath)).isSocket());
    await startServer();
    const c2 = await client();
    assert.deepEqual(await c2.request('cards'), CARDS);
  });

  it('never replaces a file that is not a socket', async () => {
    await ensurePrivateDirectory(runDir);
    await fs.writeFile(socketPath, 'keep me');
    await assert.rejects(startServer(), isCode('ERR_CONTROL_UNAVAILABLE', /is not a socket/));
    assert.equal(await fs.readFile(socketPath, 'utf8'), 'keep me');
  });

  it('tells the user to start the daemon when no socket is there', async () => {
    await assert.rejects(
      ControlClient.connect({ socketPath, secretFile, clientName: 'cli' }),
      (err: unknown) => {
        assert.ok(err instanceof CardlinkError);
        assert.equal(err.code, 'ERR_CONTROL_UNAVAILABLE');
        assert.ok(err.message.includes(`no control socket at ${socketPath}`), err.message);
        assert.match(err.message, /start it with 'cardlink daemon'/);
        return true;
      },
    );
    await ensurePrivateDirectory(runDir);
    await assert.rejects(
      ControlClient.connect({ socketPath, secretFile, clientName: 'cli' }),
      isCode('ERR_CONTROL_UNAVAILABLE', /is not running/),
    );
  });

  it('rejects pending requests and emits close when the daemon stops', async () => {
    await startServer();
    const c = await client();
    let release: () => void = () => {};
    handler.logout = () => new Promise<void>((resolve) => (release = resolve));
    const closed = new Promise<CardlinkError | undefined>((resolve) => c.once('close', resolve));
    const pending = assert.rejects(c.request('logout'), isCode('ERR_CONTROL_UNAVAILABLE'));
    await new Promise((r) => setTimeout(r, 50));
    await server!.close();
    await pending;
    await closed;
    assert.equal(c.closed, true);
    await assert.rejects(c.request('status'), isCode('ERR_CONTROL_UNAVAILABLE', /closed/));
    release();
  });
});

describe('control paths', () => {
  it('uses $XDG_RUNTIME_DIR/cardlink, else /tmp/cardlink-<uid>', () => {
    assert.equal(controlRuntimeDirectory({ XDG_RUNTIME_DIR: '/run/user/1000' }), '/run/user/1000/cardlink');
    assert.equal(controlRuntimeDirectory({}), `/tmp/cardlink-${process.getuid!()}`);
    assert.equal(
      controlRuntimeDirectory({ XDG_RUNTIME_DIR: 'relative' }),
      `/tmp/cardlink-${process.getuid!()}`,
    );
    assert.deepEqual(controlPaths({ env: { XDG_RUNTIME_DIR: '/run/user/7' } }), {
      runtimeDir: '/run/user/7/cardlink',
      socketPath: '/run/user/7/cardlink/control.sock',
      secretFile: '/run/user/7/cardlink/control.secret',
    });
    assert.deepEqual(controlPaths({ runtimeDir: '/x', secretFile: '/y/s' }), {
      runtimeDir: '/x',
      socketPath: '/x/control.sock',
      secretFile: '/y/s',
    });
  });

  it('on Windows: a named pipe per user and the secret in %LOCALAPPDATA%\\cardlink', () => {
    const alice = controlPaths({
      platform: 'win32',
      env: { LOCALAPPDATA: 'C:\\Users\\alice\\AppData\\Local' },
    });
    assert.equal(alice.runtimeDir, 'C:\\Users\\alice\\AppData\\Local\\cardlink');
    assert.equal(alice.secretFile, 'C:\\Users\\alice\\AppData\\Local\\cardlink\\control.secret');
    assert.match(alice.socketPath, /^\\\\\.\\pipe\\cardlink-control-[0-9a-f]{16}$/);
    assert.ok(isNamedPipePath(alice.socketPath));
    assert.ok(!isNamedPipePath('/run/user/7/cardlink/control.sock'));
    // The same user always finds the same pipe (case does not matter on Windows); another user, another.
    const again = controlPaths({
      platform: 'win32',
      env: { LOCALAPPDATA: 'c:\\users\\ALICE\\AppData\\Local' },
    });
    assert.equal(again.socketPath, alice.socketPath);
    const bob = controlPaths({ platform: 'win32', env: { LOCALAPPDATA: 'C:\\Users\\bob\\AppData\\Local' } });
    assert.notEqual(bob.socketPath, alice.socketPath);
    assert.throws(
      () => controlPaths({ platform: 'win32', env: {} }),
      isCode('ERR_CONTROL_UNAVAILABLE', /LOCALAPPDATA/),
    );
    assert.equal(hasPosixPermissions('win32'), false);
    assert.equal(hasPosixPermissions('linux'), true);
  });
});
