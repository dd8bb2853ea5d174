/**
 * The card server end to end: a real OpenID Provider issues the tokens, the server runs over
 * TLS with SQLite (and PostgreSQL for two server nodes), a protocol client authenticates with a
 * device key, opens a card and signs through it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { spawn, type ChildProcess } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createCard, loadDefaultProfile, type CreatedCard } from '../../../server/admin/index.js';
import { verifyChain } from '../../../server/audit/audit-log.js';
import { loadServerConfig } from '../../../server/config/server-config.js';
import { openServerResources, type ServerResources } from '../../../server/config/server-resources.js';
import { approveDevice } from '../../../server/storage/identities.js';
import { startTestCardServer, type TestCardServer } from '../../support/card-server.js';
import { BAD_TOKEN_KINDS, startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';
import { newDeviceKey, SessionClient, type DeviceKey } from '../../support/session-client.js';
import { createSoftHsmToken } from '../../support/softhsm.js';
import { REPO_ROOT } from '../../support/pcscd.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';
import type { KeyAlgorithm } from '../../../apdu/piv/index.js';

const TENANT = 'acme';
const MAIN = path.join(REPO_ROOT, 'dist', 'bin', 'main.js');
const PIN = '123456';
const PIN_APDU = `0020008008${Buffer.from(PIN).toString('hex')}FFFF`;
const WRONG_PIN_APDU = '00200080083939393939393939'.slice(0, 10) + '3939393939393939';
const SELECT_PIV = '00A4040009A00000030800001000';

type Node = TestCardServer;

function startNode(dataDir: string, idp: TestIdp, extra: Record<string, unknown> = {}): Promise<Node> {
  return startTestCardServer(dataDir, idp, {
    deviceRegistration: 'first-device',
    limits: { resumeGraceSeconds: 30 },
    ...extra,
  });
}

async function stopNode(node: Node): Promise<void> {
  await node.stop();
}

async function connect(node: Node): Promise<SessionClient> {
  const client = await SessionClient.connect(node.server.sessionUrl, node.tls.cert);
  await client.hello();
  return client;
}

async function login(node: Node, token: string, device: DeviceKey, name: string): Promise<SessionClient> {
  const client = await connect(node);
  const ok = await client.auth(token, device, name);
  assert.equal(ok.type, 'AUTH_OK', ok.type === 'ERROR' ? ok.code : '');
  return client;
}

async function openCard(client: SessionClient, cardId: string, takeOver = true): Promise<number> {
  const opened = await client.request({ type: 'OPEN_CARD', cardId, takeOver });
  assert.equal(opened.type, 'CARD_OPENED', opened.type === 'ERROR' ? opened.code : '');
  return (opened as { handle: number }).handle;
}

/** ECDSA P-256 on slot 9E through GENERAL AUTHENTICATE; returns the DER signature. */
async function signP256(
  client: SessionClient,
  handle: number,
  slot: string,
  digest: Buffer,
): Promise<Buffer> {
  const inner = Buffer.concat([Buffer.from('820081', 'hex'), Buffer.from([digest.length]), digest]);
  const template = Buffer.concat([Buffer.from([0x7c, inner.length]), inner]);
  const apdu = `008711${slot}${template.length.toString(16).padStart(2, '0')}${template.toString('hex')}00`;
  const answer = await client.apdu(handle, apdu);
  assert.equal(answer.slice(-4), '9000', `sign answered ${answer.slice(-4)}`);
  const body = Buffer.from(answer.slice(0, -4), 'hex');
  // 7C L 82 L sig
  assert.equal(body[0], 0x7c);
  assert.equal(body[2], 0x82);
  return body.subarray(4, 4 + body[3]!);
}

/** GENERAL AUTHENTICATE (sign) of `input` with an extended-length APDU; follows 61xx. */
async function generalAuthenticate(
  client: SessionClient,
  handle: number,
  alg: number,
  slot: number,
  input: Buffer,
): Promise<Buffer> {
  const inner = Buffer.concat([
    Buffer.from('8200', 'hex'),
    Buffer.from([0x81]),
    derLength(input.length),
    input,
  ]);
  const template = Buffer.concat([Buffer.from([0x7c]), derLength(inner.length), inner]);
  const header = Buffer.from([0x00, 0x87, alg, slot, 0x00, template.length >> 8, template.length & 0xff]);
  let answer = Buffer.from(
    await client.apdu(handle, Buffer.concat([header, template, Buffer.from([0, 0])]).toString('hex')),
    'hex',
  );
  let body = answer.subarray(0, -2);
  while (answer[answer.length - 2] === 0x61) {
    answer = Buffer.from(await client.apdu(handle, '00C0000000'), 'hex');
    body = Buffer.concat([body, answer.subarray(0, -2)]);
  }
  assert.equal(answer.subarray(-2).toString('hex'), '9000');
  // 7C L { 82 L signature }
  let at = 1;
  at += lengthBytes(body, at);
  assert.equal(body[at], 0x82);
  at += 1;
  const len = readLength(body, at);
  at += lengthBytes(body, at);
  return body.subarray(at, at + len);
}

function derLength(n: number): Buffer {
  if (n < 0x80) return Buffer.from([n]);
  if (n < 0x100) return Buffer.from([0x81, n]);
  return Buffer.from([0x82, n >> 8, n & 0xff]);
}

function lengthBytes(b: Buffer, at: number): number {
  const first = b[at]!;
  return first < 0x80 ? 1 : 1 + (first & 0x7f);
}

function readLength(b: Buffer, at: number): number {
  const first = b[at]!;
  if (first < 0x80) return first;
  let n = 0;
  for (let i = 1; i <= (first & 0x7f); i++) n = (n << 8) | b[at + i]!;
  return n;
}

function publicKeyOf(card: CreatedCard, slot: number) {
  const entry = card.slots.find((s) => s.slot === slot);
  assert.ok(entry, `card has slot ${slot.toString(16)}`);
  return createPublicKey({ key: Buffer.from(entry.publicKeySpki), format: 'der', type: 'spki' });
}

async function retriesLeft(client: SessionClient, handle: number): Promise<string> {
  return (await client.apdu(handle, '0020008000')).slice(-4);
}

/** Each backend the server runs on in production: SQLite with the key file, PostgreSQL with an HSM. */
const BACKENDS: {
  name: string;
  settings: (dir: string) => Promise<{ extra: Record<string, unknown>; drop(): Promise<void> }>;
}[] = [
  { name: 'SQLite and the key file', settings: async () => ({ extra: {}, drop: async () => undefined }) },
  {
    name: 'PostgreSQL and SoftHSM2',
    settings: async (dir) => {
      const db = await createTestDatabase('cardlink_server');
      const token = await createSoftHsmToken();
      const pinFile = path.join(dir, 'hsm.pin');
      fs.writeFileSync(pinFile, token.pin, { mode: 0o600 });
      return {
        extra: {
          databaseUrl: db.url,
          kek: { provider: 'pkcs11', module: token.modulePath, tokenLabel: token.tokenLabel, pinFile },
        },
        drop: () => db.drop(),
      };
    },
  },
];

for (const backend of BACKENDS)
  describe(`card server over TLS on ${backend.name}, tokens from a real OpenID Provider`, () => {
    let idp: TestIdp;
    let dir: string;
    let node: Node;
    let card: CreatedCard;
    let allAlgorithms: CreatedCard;
    let extra: Record<string, unknown>;
    let drop: () => Promise<void>;
    const laptop = newDeviceKey();

    before(async () => {
      idp = await startTestIdp();
      dir = await mkdtemp(path.join(tmpdir(), 'cardlink-server-'));
      ({ extra, drop } = await backend.settings(dir));
      node = await startNode(dir, idp, extra);
      card = await createCard({
        storage: node.resources.storage,
        kek: node.resources.kek,
        user: { issuer: idp.issuer, subject: 'alice', tenant: TENANT },
        profile: await loadDefaultProfile(),
        pin: PIN,
        puk: '12345678',
      });
      allAlgorithms = await createCard({
        storage: node.resources.storage,
        kek: node.resources.kek,
        user: { issuer: idp.issuer, subject: 'carol', tenant: TENANT },
        profile: {
          name: 'every-algorithm',
          label: 'every algorithm',
          slots: [
            { slot: '9A', algorithm: 'RSA2048', pinPolicy: 'once' },
            { slot: '9C', algorithm: 'ECCP384', pinPolicy: 'always' },
            { slot: '9D', algorithm: 'RSA3072', pinPolicy: 'once' },
            { slot: '9E', algorithm: 'ECCP256', pinPolicy: 'never' },
          ],
          pin: { minLength: 6, maxLength: 8, retries: 3 },
          puk: { minLength: 8, maxLength: 8, retries: 3 },
          managementKey: { algorithm: 'AES192' },
          certificateValidityDays: 30,
        },
        pin: PIN,
        puk: '12345678',
      });
    });
    after(async () => {
      await stopNode(node);
      await idp.close();
      await drop();
      await rm(dir, { recursive: true, force: true });
    });

    it('signs with RSA-2048, RSA-3072, P-256 and P-384 through the server; openssl-equivalent verification passes', async () => {
      const client = await login(
        node,
        await idp.mintAccessToken({ claims: { sub: 'carol' } }),
        newDeviceKey(),
        'carol-laptop',
      );
      const handle = await openCard(client, allAlgorithms.cardId);
      const message = Buffer.from(`signed through the ${backend.name} card server`);
      const cases: [number, KeyAlgorithm][] = [
        [0x9a, 'RSA2048'],
        [0x9c, 'ECCP384'],
        [0x9d, 'RSA3072'],
        [0x9e, 'ECCP256'],
      ];
      for (const [slot, algorithm] of cases) {
        assert.equal(await client.apdu(handle, PIN_APDU), '9000'); // 9C is PIN-always
        const rsa = algorithm.startsWith('RSA');
        const hash = algorithm === 'ECCP384' ? 'sha384' : 'sha256';
        const input = rsa
          ? Buffer.from(pkcs1v15Sha256Block(message, algorithm === 'RSA2048' ? 256 : 384))
          : createHash(hash).update(message).digest();
        const signature = await generalAuthenticate(client, handle, ALGORITHM_IDS[algorithm], slot, input);
        assert.ok(
          verify(hash, message, publicKeyOf(allAlgorithms, slot), signature),
          `${algorithm} in ${slot.toString(16)} verifies`,
        );
      }
      client.close();
    });

    it('answers /healthz and /readyz with nosniff and no-store, over TLS 1.2+ only', async () => {
      for (const p of ['/healthz', '/readyz']) {
        const res = await new Promise<{ status: number; headers: Record<string, unknown>; protocol: string }>(
          (resolve, reject) => {
            const req = https.get(
              { host: '127.0.0.1', port: node.server.port, path: p, ca: node.tls.cert },
              (r) => {
                r.resume();
                resolve({
                  status: r.statusCode ?? 0,
                  headers: r.headers,
                  protocol: (r.socket as import('node:tls').TLSSocket).getProtocol() ?? '',
                });
              },
            );
            req.on('error', reject);
          },
        );
        assert.equal(res.status, 200);
        assert.equal(res.headers['x-content-type-options'], 'nosniff');
        assert.equal(res.headers['cache-control'], 'no-store');
        assert.match(res.protocol, /^TLSv1\.[23]$/);
      }
      await assert.rejects(
        new Promise((resolve, reject) => {
          const req = https.get(
            {
              host: '127.0.0.1',
              port: node.server.port,
              path: '/healthz',
              ca: node.tls.cert,
              maxVersion: 'TLSv1.1',
              minVersion: 'TLSv1',
            },
            resolve,
          );
          req.on('error', reject);
        }),
      );
    });

    it('authenticates, lists, opens, verifies the PIN and signs with P-256; the signature verifies', async () => {
      const tokens = await idp.login();
      const client = await login(node, tokens.accessToken, laptop, 'laptop');
      assert.equal(client.session?.deviceStatus, 'approved'); // the user's first device
      const cards = await client.request({ type: 'LIST_CARDS' });
      assert.equal(cards.type, 'CARDS');
      assert.deepEqual(
        (cards as { cards: { cardId: string }[] }).cards.map((c) => c.cardId),
        [card.cardId],
      );
      const handle = await openCard(client, card.cardId);
      assert.equal((await client.apdu(handle, SELECT_PIV)).slice(-4), '9000');
      assert.equal(await client.apdu(handle, PIN_APDU), '9000');
      const message = Buffer.from('hello card server');
      const signature = await signP256(client, handle, '9E', createHash('sha256').update(message).digest());
      assert.ok(verify('sha256', message, publicKeyOf(card, 0x9e), signature));
      client.close();
      await client.closed;
    });

    it('refuses every bad token with ERR_AUTH_TOKEN_INVALID and close 4003, registering nothing', async () => {
      const before = await node.resources.storage.db.selectFrom('devices').select('id').execute();
      for (const kind of BAD_TOKEN_KINDS) {
        const client = await connect(node);
        const answer = await client.auth(await idp.mintBadToken(kind), newDeviceKey(), `bad-${kind}`);
        assert.equal(answer.type, 'ERROR', kind);
        assert.equal((answer as { code: string }).code, 'ERR_AUTH_TOKEN_INVALID', kind);
        assert.equal((await client.closed).code, 4003, kind);
      }
      const afterRows = await node.resources.storage.db.selectFrom('devices').select('id').execute();
      assert.equal(afterRows.length, before.length);
    });

    it('refuses a valid token whose device proof is signed by another key', async () => {
      const tokens = await idp.login();
      const client = await connect(node);
      const answer = await client.auth(tokens.accessToken, laptop, 'laptop', newDeviceKey().privateKey);
      assert.equal(answer.type, 'ERROR');
      assert.equal((answer as { code: string }).code, 'ERR_DEVICE_PROOF_INVALID');
      assert.equal((await client.closed).code, 4003);
    });

    it('a second, new device of the same user waits for approval and cannot open cards', async () => {
      const tokens = await idp.login();
      const client = await login(node, tokens.accessToken, newDeviceKey(), 'stolen-token-box');
      assert.equal(client.session?.deviceStatus, 'pending');
      const answer = await client.request({ type: 'OPEN_CARD', cardId: card.cardId, takeOver: true });
      assert.equal(answer.type, 'ERROR');
      assert.equal((answer as { code: string }).code, 'ERR_DEVICE_PENDING');
      client.close();
    });

    it("user B can neither list nor open nor learn of user A's card", async () => {
      const tokens = await idp.login({ account: 'bob' });
      const client = await login(node, tokens.accessToken, newDeviceKey(), 'bob-laptop');
      const cards = await client.request({ type: 'LIST_CARDS' });
      assert.deepEqual((cards as { cards: unknown[] }).cards, []);
      const open = await client.request({ type: 'OPEN_CARD', cardId: card.cardId, takeOver: true });
      const missing = await client.request({
        type: 'OPEN_CARD',
        cardId: '00000000-0000-4000-8000-000000000000',
        takeOver: true,
      });
      assert.equal((open as { code: string }).code, 'ERR_CARD_NOT_FOUND');
      assert.deepEqual({ ...open, id: 0 }, { ...missing, id: 0 });
      client.close();
    });

    it('a second device that opens the card takes it over: the first is told who, and refused after', async () => {
      const first = await login(node, (await idp.login()).accessToken, laptop, 'laptop');
      const h1 = await openCard(first, card.cardId);
      assert.equal(await first.apdu(h1, PIN_APDU), '9000');

      const desktopKey = newDeviceKey();
      const second = await login(node, (await idp.login()).accessToken, desktopKey, 'desktop');
      await node.resources.storage.transaction((tx) => approveDevice(tx, second.session!.deviceId));
      second.close();
      const desktop = await login(node, (await idp.login()).accessToken, desktopKey, 'desktop');
      const busy = await desktop.request({ type: 'OPEN_CARD', cardId: card.cardId, takeOver: false });
      assert.equal((busy as { code: string }).code, 'ERR_CARD_BUSY');
      const h2 = await openCard(desktop, card.cardId, true);

      await waitFor(() => first.pushes.some((p) => p.type === 'TAKEN_OVER'));
      const push = first.pushes.find((p) => p.type === 'TAKEN_OVER') as {
        byDeviceName: string;
        handle: number;
      };
      assert.equal(push.byDeviceName, 'desktop');
      assert.equal(push.handle, h1);
      const refused = await first.request({
        type: 'APDU',
        handle: h1,
        command: Buffer.from(SELECT_PIV, 'hex'),
      });
      assert.equal((refused as { code: string }).code, 'ERR_CARD_TAKEN_OVER');
      assert.equal((refused as { byDeviceName?: string }).byDeviceName, 'desktop', 'named in a field');
      // The new holder starts unverified: the old session's PIN state did not move with the card.
      assert.equal(await desktop.apdu(h2, '0020008000'), '63C3');
      first.close();
      desktop.close();
    });

    it('a replayed sequence after RESUME returns the stored answer: one wrong PIN costs one try', async () => {
      const client = await login(node, (await idp.login()).accessToken, laptop, 'laptop');
      const handle = await openCard(client, card.cardId);
      assert.equal(await retriesLeft(client, handle), '63C3');
      const wrongId = 3;
      const first = await client.request(
        { type: 'APDU', handle, command: Buffer.from(WRONG_PIN_APDU, 'hex') },
        { id: wrongId },
      );
      client.setNextId(wrongId + 1);
      assert.equal(Buffer.from((first as { response: Uint8Array }).response).toString('hex'), '63c2');
      const sessionId = client.session!.sessionId;
      const resumeToken = client.resumeToken;
      client.ws.terminate();
      await client.closed;

      const again = await connect(node);
      const resumed = await again.resume(sessionId, resumeToken, laptop, 1);
      assert.equal(
        resumed.type,
        'RESUME_OK',
        resumed.type === 'ERROR' ? (resumed as { code: string }).code : '',
      );
      assert.equal((resumed as { lastReceivedSequence: number }).lastReceivedSequence, wrongId);
      const replay = await again.request(
        { type: 'APDU', handle, command: Buffer.from(WRONG_PIN_APDU, 'hex') },
        { id: wrongId, retransmit: true },
      );
      assert.equal(Buffer.from((replay as { response: Uint8Array }).response).toString('hex'), '63c2');
      again.setNextId(wrongId + 1);
      assert.equal(await retriesLeft(again, handle), '63C2');
      assert.equal(await again.apdu(handle, PIN_APDU), '9000');
      // The old resume token is spent.
      const stale = await connect(node);
      const refused = await stale.resume(sessionId, resumeToken, laptop, 0);
      assert.equal((refused as { code: string }).code, 'ERR_RESUME_REJECTED');
      again.close();
    });

    it('malformed, truncated, text and oversized frames close that connection with a reason; others go on', async () => {
      const cases: [string, (c: SessionClient) => void, number][] = [
        ['garbage', (c) => c.sendRaw(Buffer.from('ffffffffffffffff', 'hex')), 4000],
        ['truncated HELLO', (c) => c.sendRaw(Buffer.from('010000000000', 'hex')), 4000],
        ['text', (c) => c.sendRaw('hello'), 4000],
        ['oversized', (c) => c.sendRaw(Buffer.alloc(node.config.limits.maxFrameBytes + 1)), 1009],
        ['server frame', (c) => c.sendFrame({ type: 'PONG', id: 0, flags: 0 }), 4008],
      ];
      for (const [name, send, code] of cases) {
        const client = await SessionClient.connect(node.server.sessionUrl, node.tls.cert);
        send(client);
        const closed = await client.closed;
        assert.equal(closed.code, code, name);
      }
      const fine = await login(node, (await idp.login()).accessToken, laptop, 'laptop');
      const pong = await fine.request({ type: 'PING' });
      assert.equal(pong.type, 'PONG');
      // A request out of sequence is a protocol violation.
      fine.sendFrame({ type: 'PING', id: 99, flags: 0 });
      assert.equal((await fine.closed).code, 4008);
    });

    it('renews the token in place; an expired one closes the session with 4004', async () => {
      const shortLived = await idp.mintAccessToken({ claims: { exp: Math.floor(Date.now() / 1000) + 3 } });
      const client = await login(node, shortLived, laptop, 'laptop');
      const renewed = await client.request({
        type: 'RENEW_TOKEN',
        accessToken: (await idp.login()).accessToken,
      });
      assert.equal(renewed.type, 'TOKEN_RENEWED');
      const other = await login(
        node,
        await idp.mintAccessToken({ claims: { exp: Math.floor(Date.now() / 1000) + 2 } }),
        laptop,
        'laptop',
      );
      const notBob = await other.request({
        type: 'RENEW_TOKEN',
        accessToken: (await idp.login({ account: 'bob' })).accessToken,
      });
      assert.equal((notBob as { code: string }).code, 'ERR_AUTH_TOKEN_INVALID');
      assert.equal((await other.closed).code, 4004);
      assert.equal(client.ws.readyState, client.ws.OPEN);
      client.close();
    });

    it('a token valid for longer than a timer can wait (30 days) keeps the session open', async () => {
      const longLived = await idp.mintAccessToken({
        claims: { exp: Math.floor(Date.now() / 1000) + 30 * 86_400 },
      });
      const client = await login(node, longLived, laptop, 'laptop');
      await new Promise((r) => setTimeout(r, 300));
      const answer = await Promise.race([
        client.request({ type: 'PING' }).then((f) => f.type),
        client.closed.then((c) => `closed ${c.code}`),
      ]);
      assert.equal(answer, 'PONG');
      client.close();
    });

    it('after a restart the card still works, and the audit chain verifies', async () => {
      await stopNode(node);
      node = await startNode(dir, idp, extra);
      const client = await login(node, (await idp.login()).accessToken, laptop, 'laptop');
      const handle = await openCard(client, card.cardId);
      assert.equal(await client.apdu(handle, PIN_APDU), '9000');
      const message = Buffer.from('after restart');
      const signature = await signP256(client, handle, '9C', createHash('sha256').update(message).digest());
      assert.ok(verify('sha256', message, publicKeyOf(card, 0x9c), signature));
      client.close();
      const chain = await verifyChain(node.resources.storage);
      assert.equal(chain.ok, true);
    });
  });

describe('idle connections', () => {
  let idp: TestIdp;
  let dir: string;
  let node: Node;
  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-idle-'));
    node = await startNode(dir, idp, { limits: { idleTimeoutSeconds: 5 } });
  });
  after(async () => {
    await stopNode(node);
    await idp.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('frames keep a connection open past the idle timeout; silence closes it with 4007', async () => {
    const client = await login(node, (await idp.login()).accessToken, newDeviceKey(), 'laptop');
    const opened = Date.now();
    // PINGs every 2 s carry it past the 5 s limit.
    for (let i = 0; i < 4; i++) {
      await new Promise((r) => setTimeout(r, 2000));
      assert.equal((await client.request({ type: 'PING' })).type, 'PONG');
    }
    assert.ok(Date.now() - opened > 7000);
    const silentFrom = Date.now();
    assert.equal((await client.closed).code, 4007);
    const silentFor = Date.now() - silentFrom;
    assert.ok(silentFor >= 4500 && silentFor < 8000, `closed after ${silentFor} ms of silence`);
  });
});

/** A `cardlink server` child process; resolves once it prints its ready line. */
async function spawnServer(
  configFile: string,
): Promise<{ child: ChildProcess; sessionUrl: string; cert: string; stop(): Promise<void> }> {
  const child = spawn(process.execPath, [MAIN, 'server', '--config', configFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const sessionUrl = await new Promise<string>((resolve, reject) => {
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = out.match(/ready on (wss:\/\/\S+)/);
      if (m) resolve(m[1]!);
    });
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => reject(new Error(`server exited ${code}: ${out}`)));
  });
  const settings = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { dataDir: string };
  const cert = fs.readFileSync(path.join(settings.dataDir, 'tls', 'server.crt'), 'utf8');
  return {
    child,
    sessionUrl,
    cert,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

describe('two card server processes on one PostgreSQL', () => {
  let idp: TestIdp;
  let db: TestDatabase;
  const dirs: string[] = [];
  const servers: Awaited<ReturnType<typeof spawnServer>>[] = [];
  let resources: ServerResources;

  before(async () => {
    idp = await startTestIdp();
    db = await createTestDatabase('cardlink_nodes');
    for (let i = 0; i < 2; i++) {
      const dir = await mkdtemp(path.join(tmpdir(), `cardlink-node${i}-`));
      dirs.push(dir);
      // Both nodes share the KEK: the first creates it, the second gets a copy.
      if (i === 1) fs.copyFileSync(path.join(dirs[0]!, 'kek.json'), path.join(dir, 'kek.json'));
      const configFile = path.join(dir, 'server.json');
      fs.writeFileSync(
        configFile,
        JSON.stringify({
          dataDir: dir,
          listen: { host: '127.0.0.1', port: 0 },
          publicUrl: 'https://127.0.0.1:0/',
          audience: idp.resource,
          issuers: [{ issuer: idp.issuer, tenant: TENANT }],
          databaseUrl: db.url,
          log: { level: 'warn' },
        }),
      );
      servers.push(await spawnServer(configFile));
    }
    resources = await openServerResources(
      loadServerConfig({ config: path.join(dirs[0]!, 'server.json') }, {}),
    );
  });
  after(async () => {
    for (const s of servers) await s.stop();
    await resources.close();
    await db.drop();
    await idp.close();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('a login on process B takes the card from process A: A is told who took it and is fenced', async () => {
    const [a, b] = servers as [(typeof servers)[0], (typeof servers)[0]];
    const card = await createCard({
      storage: resources.storage,
      kek: resources.kek,
      user: { issuer: idp.issuer, subject: 'alice', tenant: TENANT },
      profile: await loadDefaultProfile(),
      pin: PIN,
      puk: '12345678',
    });
    const clientOf = async (s: typeof a, token: string, key: DeviceKey, name: string) => {
      const c = await SessionClient.connect(s.sessionUrl, s.cert);
      await c.hello();
      const ok = await c.auth(token, key, name);
      assert.equal(ok.type, 'AUTH_OK', ok.type === 'ERROR' ? ok.code : '');
      return c;
    };
    const keyA = newDeviceKey();
    const keyB = newDeviceKey();
    const onA = await clientOf(a, (await idp.login()).accessToken, keyA, 'process-a-laptop');
    const hA = await openCard(onA, card.cardId);
    assert.equal(await onA.apdu(hA, PIN_APDU), '9000');
    const firstB = await clientOf(b, (await idp.login()).accessToken, keyB, 'process-b-desktop');
    await resources.storage.transaction((tx) => approveDevice(tx, firstB.session!.deviceId));
    firstB.close();
    const onB = await clientOf(b, (await idp.login()).accessToken, keyB, 'process-b-desktop');
    const hB = await openCard(onB, card.cardId);
    await waitFor(() => onA.pushes.some((p) => p.type === 'TAKEN_OVER'));
    assert.equal((onA.pushes[0] as { byDeviceName: string }).byDeviceName, 'process-b-desktop');
    const refused = await onA.request({ type: 'APDU', handle: hA, command: Buffer.from(PIN_APDU, 'hex') });
    assert.equal((refused as { code: string }).code, 'ERR_CARD_TAKEN_OVER');
    assert.equal((refused as { byDeviceName?: string }).byDeviceName, 'process-b-desktop');
    assert.equal(await onB.apdu(hB, PIN_APDU), '9000');
    onA.close();
    onB.close();
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
