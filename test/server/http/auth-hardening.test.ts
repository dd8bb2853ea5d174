/**
 * The card server under the attacks of issue 14, end to end over TLS with tokens from a real OpenID
 * Provider: a token whose times the protocol cannot carry, failures while a session is being
 * established, RENEW_TOKEN that cannot be answered, floods of failed sign-ins (throttled per
 * address and per user, with a bounded log), and OPEN_CARD of another user's card.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SUPPRESSED_LINES_MESSAGE } from '../../../protocol/log-limiter.js';
import type { Frame } from '../../../protocol/wire/frames.js';
import { createTestCard, startTestCardServer, type TestCardServer } from '../../support/card-server.js';
import { capturedLogger } from '../../support/captured-log.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { newDeviceKey, SessionClient, type DeviceKey, type Request } from '../../support/session-client.js';

/** An `exp` the IdP may sign but no u32 holds (2106 and later). */
const BEYOND_U32 = 2 ** 32 + 3600;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function connect(node: TestCardServer, localAddress?: string): Promise<SessionClient> {
  const client = await SessionClient.connect(
    node.server.sessionUrl,
    node.tls.cert,
    localAddress ? { localAddress } : {},
  );
  await client.hello();
  return client;
}

async function login(
  node: TestCardServer,
  token: string,
  device: DeviceKey,
  localAddress?: string,
): Promise<SessionClient> {
  const client = await connect(node, localAddress);
  const ok = await client.auth(token, device, 'laptop');
  assert.equal(ok.type, 'AUTH_OK', ok.type === 'ERROR' ? `${ok.code}: ${ok.message}` : '');
  return client;
}

const codeOf = (frame: Frame): string => (frame.type === 'ERROR' ? frame.code : frame.type);

/**
 * After a refused handshake, sends what an authenticated client would (the attack: LIST_CARDS,
 * OPEN_CARD, RENEW_TOKEN, PING) while the socket still takes frames, and returns every answer that
 * came before the close.
 */
async function requestsAfterRefusal(client: SessionClient, cardId: string, token: string): Promise<Frame[]> {
  const answered: Frame[] = [];
  const requests: Request[] = [
    { type: 'LIST_CARDS' },
    { type: 'OPEN_CARD', cardId, takeOver: true },
    { type: 'RENEW_TOKEN', accessToken: token },
    { type: 'PING' },
  ];
  if (client.ws.readyState === client.ws.OPEN) {
    for (const request of requests) void client.request(request).then((f) => answered.push(f));
  }
  await client.closed;
  await sleep(300);
  return answered;
}

/** The half of the running session service that does `part`'s work (server/session/session-service.ts). */
function servicePart(node: TestCardServer, part: 'establishment' | 'cards'): Record<string, unknown> {
  const half = (node.server.service as unknown as Record<string, unknown>)[part];
  assert.equal(typeof half, 'object', `the service has its ${part} half`);
  return half as Record<string, unknown>;
}

/** Replaces a method of one half of the running session service until the returned function restores it. */
function inject(
  node: TestCardServer,
  part: 'establishment' | 'cards',
  method: string,
  replacement: (...args: never[]) => unknown,
): () => void {
  const target = servicePart(node, part);
  assert.equal(typeof target[method], 'function', `the ${part} half has ${method}`);
  target[method] = replacement;
  return () => void delete target[method];
}

describe('a session is established whole or not at all', () => {
  let idp: TestIdp;
  let dir: string;
  let node: TestCardServer;
  let cardId: string;

  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-auth-hardening-'));
    // Every device approved at once: these tests use a new device key each.
    node = await startTestCardServer(dir, idp, {
      deviceRegistration: 'automatic',
      limits: { resumeGraceSeconds: 30 },
    });
    cardId = (await createTestCard(node, idp, { pin: '123456', puk: '12345678' })).cardId;
  });
  after(async () => {
    await node.stop();
    await idp.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a token the IdP signed with exp past 2^32 gets ERR_AUTH_TOKEN_INVALID and a closed connection that answers nothing', async () => {
    const sessions = node.server.service.liveSessions;
    const token = await idp.mintAccessToken({ claims: { exp: BEYOND_U32 } });
    const client = await connect(node);
    const answer = await client.auth(token, newDeviceKey(), 'laptop');
    assert.equal(codeOf(answer), 'ERR_AUTH_TOKEN_INVALID');
    const answered = await requestsAfterRefusal(client, cardId, token);
    assert.equal((await client.closed).code, 4003);
    assert.deepEqual(answered, []);
    assert.equal(node.server.service.liveSessions, sessions);
  });

  it('a failure after AUTH was accepted (while the session is registered) leaves no session and answers nothing', async () => {
    const sessions = node.server.service.liveSessions;
    const restore = inject(node, 'establishment', 'armTokenTimers', () => {
      throw new Error('injected failure while arming the token timers');
    });
    try {
      const token = (await idp.login()).accessToken;
      const client = await connect(node);
      const answer = await client.auth(token, newDeviceKey(), 'laptop');
      assert.equal(codeOf(answer), 'ERR_INTERNAL');
      const answered = await requestsAfterRefusal(client, cardId, token);
      assert.equal((await client.closed).code, 1011);
      assert.deepEqual(answered, []);
      assert.equal(node.server.service.liveSessions, sessions);
    } finally {
      restore();
    }
    // The next sign-in works as usual.
    const fine = await login(node, (await idp.login()).accessToken, newDeviceKey());
    assert.equal(node.server.service.liveSessions, sessions + 1);
    fine.close();
  });

  it('an AUTH_OK that cannot be encoded registers no device and no session', async () => {
    const sessions = node.server.service.liveSessions;
    const devices = async () =>
      (await node.resources.storage.db.selectFrom('devices').select('id').execute()).length;
    const devicesBefore = await devices();
    const restore = inject(node, 'establishment', 'encodeAnswer', () => {
      throw new RangeError('injected: the answer does not encode');
    });
    try {
      const token = (await idp.login()).accessToken;
      const client = await connect(node);
      assert.equal(codeOf(await client.auth(token, newDeviceKey(), 'new-box')), 'ERR_INTERNAL');
      assert.deepEqual(await requestsAfterRefusal(client, cardId, token), []);
      assert.equal((await client.closed).code, 1011);
    } finally {
      restore();
    }
    assert.equal(await devices(), devicesBefore);
    assert.equal(node.server.service.liveSessions, sessions);
  });

  it('a RESUME_OK that cannot be encoded spends nothing: the same resume token works after', async () => {
    const device = newDeviceKey();
    const client = await login(node, (await idp.login()).accessToken, device);
    const { sessionId } = client.session!;
    const resumeToken = client.resumeToken;
    client.ws.terminate();
    await client.closed;
    const restore = inject(node, 'establishment', 'encodeAnswer', () => {
      throw new RangeError('injected: the answer does not encode');
    });
    try {
      const refused = await connect(node);
      assert.equal(codeOf(await refused.resume(sessionId, resumeToken, device, 0)), 'ERR_INTERNAL');
      assert.equal((await refused.closed).code, 1011);
    } finally {
      restore();
    }
    const again = await connect(node);
    const resumed = await again.resume(sessionId, resumeToken, device, 0);
    assert.equal(codeOf(resumed), 'RESUME_OK');
    assert.equal((await again.request({ type: 'PING' })).type, 'PONG');
    again.close();
  });

  it('RENEW_TOKEN with exp past 2^32, or whose answer cannot be encoded, is refused; the session keeps its expiry', async () => {
    const device = newDeviceKey();
    const client = await login(node, (await idp.login()).accessToken, device);
    const expiry = client.session!.tokenExpiresAt;
    const outOfRange = await client.request({
      type: 'RENEW_TOKEN',
      accessToken: await idp.mintAccessToken({ claims: { exp: BEYOND_U32 } }),
    });
    assert.equal(codeOf(outOfRange), 'ERR_AUTH_TOKEN_INVALID');
    const later = expiry + 300;
    const restore = inject(node, 'establishment', 'encodeAnswer', () => {
      throw new RangeError('injected: the answer does not encode');
    });
    try {
      const unanswerable = await client.request({
        type: 'RENEW_TOKEN',
        accessToken: await idp.mintAccessToken({ claims: { exp: later } }),
      });
      assert.equal(codeOf(unanswerable), 'ERR_INTERNAL');
    } finally {
      restore();
    }
    // RESUME_OK reports the session's expiry: still the first token's.
    const { sessionId } = client.session!;
    client.ws.terminate();
    await client.closed;
    const again = await connect(node);
    const resumed = await again.resume(sessionId, client.resumeToken, device, 2);
    assert.equal(resumed.type, 'RESUME_OK');
    assert.equal((resumed as { tokenExpiresAt: number }).tokenExpiresAt, expiry);
    // A renewal that can be answered does move it.
    again.setNextId(3);
    const renewed = await again.request({
      type: 'RENEW_TOKEN',
      accessToken: await idp.mintAccessToken({ claims: { exp: later } }),
    });
    assert.equal(codeOf(renewed), 'TOKEN_RENEWED');
    assert.equal((renewed as { tokenExpiresAt: number }).tokenExpiresAt, later);
    again.close();
  });

  it('an OPEN_CARD whose CARD_OPENED cannot be encoded releases its claim: the card is not left open', async () => {
    const client = await login(node, (await idp.login()).accessToken, newDeviceKey());
    const cardHandling = servicePart(node, 'cards');
    const encodeAnswer = Object.getPrototypeOf(cardHandling).encodeAnswer as (frame: Frame) => Uint8Array;
    const restore = inject(node, 'cards', 'encodeAnswer', (frame: Frame) => {
      if (frame.type === 'CARD_OPENED') throw new RangeError('injected: the answer does not encode');
      return encodeAnswer.call(cardHandling, frame);
    });
    try {
      const failed = await client.request({ type: 'OPEN_CARD', cardId, takeOver: true });
      assert.equal(codeOf(failed), 'ERR_INTERNAL');
    } finally {
      restore();
    }
    const cards = await client.request({ type: 'LIST_CARDS' });
    assert.deepEqual(
      (cards as { cards: { cardId: string; openOn: string }[] }).cards.map((c) => [c.cardId, c.openOn]),
      [[cardId, '']],
    );
    // Not busy: nobody holds it, so it opens without taking it over.
    const opened = await client.request({ type: 'OPEN_CARD', cardId, takeOver: false });
    assert.equal(codeOf(opened), 'CARD_OPENED');
    client.close();
  });

  it("OPEN_CARD of another user's card and of a card that does not exist answer the same", async () => {
    const bob = await login(node, (await idp.login({ account: 'bob' })).accessToken, newDeviceKey());
    const theirs = await bob.request({ type: 'OPEN_CARD', cardId, takeOver: true });
    const none = await bob.request({
      type: 'OPEN_CARD',
      cardId: '00000000-0000-4000-8000-000000000000',
      takeOver: true,
    });
    assert.equal(codeOf(theirs), 'ERR_CARD_NOT_FOUND');
    assert.deepEqual({ ...theirs, id: 0 }, { ...none, id: 0 });
    bob.close();
  });
});

describe('failed sign-ins are throttled per address and per user, with a bounded log', () => {
  const FREE_FAILURES = 3;
  const LOG_LINES = 5;
  let idp: TestIdp;
  let dir: string;
  let node: TestCardServer | undefined;
  const log = capturedLogger('test-server', 'info');
  /** Every refused handshake in this server's life: each is one "authentication refused". */
  let refusals = 0;
  const secrets: string[] = [];

  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-throttle-'));
    node = await startTestCardServer(
      dir,
      idp,
      { limits: { authFreeFailures: FREE_FAILURES, logRepeatsPerMinute: LOG_LINES } },
      log.logger,
    );
  });
  after(async () => {
    await node?.stop();
    await idp.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** One AUTH from `address`; counts refusals. */
  async function attempt(
    address: string,
    token: string,
    device: DeviceKey,
    signWith?: DeviceKey,
  ): Promise<{ answer: Frame; client: SessionClient }> {
    const client = await connect(node!, address);
    const answer = await client.auth(token, device, 'laptop', signWith?.privateKey);
    if (answer.type === 'ERROR') refusals++;
    return { answer, client };
  }

  it("a user's failed device proofs from several addresses throttle that user only; the wait it names is enough", async () => {
    const bobToken = (await idp.login({ account: 'bob' })).accessToken;
    secrets.push(bobToken);
    const bobDevice = newDeviceKey();
    // Ready before the failures, so that its AUTH follows the last one at once.
    const waiting = await connect(node!, '127.0.0.5');
    // Two failures from each of two addresses: below the free failures per address, above per user.
    for (const address of ['127.0.0.3', '127.0.0.4', '127.0.0.3', '127.0.0.4']) {
      const { answer } = await attempt(address, bobToken, bobDevice, newDeviceKey());
      assert.equal(codeOf(answer), 'ERR_DEVICE_PROOF_INVALID', address);
    }
    const throttled = await waiting.auth(bobToken, bobDevice, 'laptop');
    refusals++;
    assert.equal(codeOf(throttled), 'ERR_AUTH_THROTTLED');
    const message = (throttled as { message: string }).message;
    assert.match(message, /for this user; try again in \d+ s$/);
    assert.equal((await waiting.closed).code, 1013);
    // Another user from the same address is not slowed.
    const alice = await login(node!, (await idp.login()).accessToken, newDeviceKey(), '127.0.0.5');
    alice.close();
    // After the wait it named, bob's real device signs in.
    await sleep(Number(/in (\d+) s/.exec(message)![1]) * 1000 + 200);
    const bob = await login(node!, bobToken, bobDevice, '127.0.0.5');
    bob.close();
  });

  it('a flood of failed AUTHs from one address is slowed down; another address signs in meanwhile', async () => {
    const badToken = await idp.mintBadToken('expired');
    const goodToken = (await idp.login()).accessToken;
    secrets.push(badToken, goodToken);
    const codes: string[] = [];
    for (let i = 0; i < 40; i++) {
      const { answer, client } = await attempt('127.0.0.1', badToken, newDeviceKey());
      codes.push(codeOf(answer));
      const closed = await client.closed;
      if (codeOf(answer) === 'ERR_AUTH_THROTTLED') {
        assert.equal(closed.code, 1013);
        assert.match((answer as { message: string }).message, /from this address; try again in \d+ s$/);
      }
    }
    const checked = codes.filter((c) => c === 'ERR_AUTH_TOKEN_INVALID').length;
    const throttled = codes.filter((c) => c === 'ERR_AUTH_THROTTLED').length;
    assert.equal(checked + throttled, codes.length);
    // The free failures, then one per wait of 1, 2, 4, 8 ... s: a handful, however slow this machine.
    assert.deepEqual(
      codes.slice(0, FREE_FAILURES + 1),
      Array(FREE_FAILURES + 1).fill('ERR_AUTH_TOKEN_INVALID'),
    );
    assert.ok(checked <= FREE_FAILURES + 8, `tokens checked: ${checked} of ${codes.length}`);
    assert.ok(throttled >= 40 - FREE_FAILURES - 8);
    // While it waits, even a good token from that address waits; other addresses do not.
    const blocked = await attempt('127.0.0.1', goodToken, newDeviceKey());
    assert.equal(codeOf(blocked.answer), 'ERR_AUTH_THROTTLED');
    const other = await login(node!, goodToken, newDeviceKey(), '127.0.0.2');
    assert.equal((await other.request({ type: 'PING' })).type, 'PONG');
    other.close();
  });

  it('the log holds a bounded number of "authentication refused" lines and a summary of the rest', async () => {
    await node!.stop(); // writes the summaries of the open intervals
    node = undefined;
    await sleep(100);
    const refused = log.lines.filter((l) => l['message'] === 'authentication refused');
    const summaries = log.lines.filter(
      (l) => l['message'] === SUPPRESSED_LINES_MESSAGE && l['repeated'] === 'authentication refused',
    );
    const suppressed = summaries.reduce((n, l) => n + Number(l['suppressed']), 0);
    assert.ok(refusals > 40);
    assert.equal(refused.length + suppressed, refusals);
    // One interval in all unless this run took more than a minute.
    assert.ok(summaries.length >= 1);
    assert.ok(refused.length <= LOG_LINES * summaries.length, `${refused.length} lines`);
    assert.ok(log.lines.length < 60, `${log.lines.length} lines in all`);
    for (const secret of secrets)
      assert.ok(!log.raw().includes(secret.split('.')[2]!), 'no token in the log');
  });
});
