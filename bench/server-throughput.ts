/**
 * Card server throughput and memory, in one run, all on 127.0.0.1:
 *
 *   node dist/bench/server-throughput.js [--sessions 100] [--seconds 10] [--warmup 2] [--idle 5000]
 *                                         [--profile DIR]
 *
 * 1. P-256 signatures per second through the server: `--sessions` concurrent sessions (each its
 *    own device key and its own card), each signing in lock-step with GENERAL AUTHENTICATE on 9E
 *    (`00 87 11 9E ..`, PIN policy never), `--warmup` seconds unmeasured, then `--seconds`
 *    measured; per-request latency as the client sees it (send of the APDU frame to its answer).
 * 2. The same for RSA-2048 on 9A (`00 87 07 9A`, PIN policy once: VERIFY once per session before
 *    the loop), as an extended-length APDU (Lc 00 01 0A, Le 00 00), a PKCS#1 v1.5 block in 81.
 * 3. node:crypto on the same machine in the same run, single-threaded with a cached KeyObject:
 *    crypto.sign ECDSA P-256 (SHA-256) and RSA-2048 PKCS#1 v1.5 (SHA-256), `--seconds` each; and,
 *    for reference, @noble/curves P-256 over a digest (what the server's card signs with), 3 s.
 * 4. Ratio server/raw for each.
 * 5. Server memory per authenticated idle connection: `--idle` sessions (HELLO + AUTH, no card)
 *    opened in parallel batches; the server's process.memoryUsage() after a full GC before and
 *    after, divided by the number of connections. This runs first, on a server that has opened no
 *    card yet; a second, small one (500) runs at the end, after the signing sessions opened and
 *    closed their cards, for comparison (memory the process already grew to is reused). Next to it, the
 *    platform's floor: the same number of connections to a bare node:tls + ws server
 *    (bench/support/tls-ws-floor.ts).
 *
 * The server (with the test OpenID Provider, test/support/oidc-provider.ts) runs in this process,
 * as in test/server/http/card-server.test.ts (SQLite in a temporary directory, TLS, device
 * registration "automatic"); the clients run in a forked child process (this same file with
 * `--clients`), so their CPU stays out of the server's event loop. Card creation (RSA key
 * generation) happens before anything is measured. Writes bench/results/server-throughput.json
 * and prints it.
 */
import { fork, execSync, type ChildProcess } from 'node:child_process';
import {
  createHash,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import v8 from 'node:v8';
import vm from 'node:vm';
import { p256 } from '@noble/curves/nist.js';
import { DYN_AUTH, parseDynamicAuthTemplate } from '../apdu/piv/index.js';
import { createCard, parseCardProfile, type CreatedCard } from '../server/admin/index.js';
import { startCpuProfile } from './support/cpu-profile.js';
import { benchCommand, writeBenchResult } from './support/results.js';
import { percentile, round } from './support/stats.js';
import {
  P256_DIGEST_OFFSET,
  p256Command,
  pkcs1Block,
  RSA_DIGEST_OFFSET,
  rsaCommand,
} from './support/sign-commands.js';
import { measureTlsWsFloor } from './support/tls-ws-floor.js';
import { startTestCardServer, TEST_TENANT, type TestCardServer } from '../test/support/card-server.js';
import { startTestIdpProcess } from '../test/support/idp-process.js';
import type { TestIdpClient } from '../test/support/oidc-provider.js';
import { newDeviceKey, SessionClient, type DeviceKey } from '../test/support/session-client.js';

/** Concurrent signing sessions, unless --sessions says otherwise. */
const DEFAULT_SESSIONS = 100;
/** Measured seconds per signing phase and per raw baseline, unless --seconds says otherwise. */
const DEFAULT_SECONDS = 10;
/** Unmeasured seconds before each signing phase, unless --warmup says otherwise. */
const DEFAULT_WARMUP = 2;
/** Idle authenticated connections for the memory measurement, unless --idle says otherwise. */
const DEFAULT_IDLE = 5000;
/** Idle connections being opened at once (TLS + HELLO + AUTH in flight). */
const IDLE_CONCURRENCY = 50;
/** Sessions set up at once before the signing phases. */
const SETUP_CONCURRENCY = 20;
/** Cards created at once (RSA key generation runs on the libuv pool; the machine may have 2 cores). */
const CARD_CONCURRENCY = Math.max(1, Math.min(4, os.cpus().length));
/** Seconds of the @noble/curves reference baseline. */
const NOBLE_SECONDS = 3;
/** The whole run is abandoned after this (the brief: under 4 minutes, stops by itself). */
const WATCHDOG_MS = 235_000;
/** Idle connections are no longer started this long after the run began (then the rest is skipped). */
const IDLE_DEADLINE_MS = 140_000;
/** Idle connections of the second, small memory measurement (after cards were opened). */
const LATE_IDLE = 500;
/** The second memory measurement only starts this early in the run. */
const LATE_IDLE_LATEST_START_MS = 190_000;

const TARGETS = {
  p256RatioOfRaw: 0.5,
  rsa2048RatioOfRaw: 0.5,
  kibPerIdleConnection: 20,
};

const TENANT = TEST_TENANT;
const PIN = '123456';
const PUK = '12345678';
const SELECT_PIV = Buffer.from('00A4040009A00000030800001000', 'hex');
const VERIFY_PIN = Buffer.concat([
  Buffer.from('0020008008', 'hex'),
  Buffer.from(PIN),
  Buffer.from('FFFF', 'hex'),
]);

/** One card per session: only the two slots measured, no certificates (faster to create). */
const BENCH_PROFILE = {
  name: 'bench-throughput',
  label: 'cardlink throughput bench',
  slots: [
    { slot: '9A', algorithm: 'RSA2048', pinPolicy: 'once', certificate: false },
    { slot: '9E', algorithm: 'ECCP256', pinPolicy: 'never', certificate: false },
  ],
  pin: { minLength: 6, maxLength: 8, retries: 3 },
  puk: { minLength: 8, maxLength: 8, retries: 3 },
  managementKey: { algorithm: 'AES192' },
};

/** A measured phase: signing with one algorithm, or PING (the same path without card work). */
type Alg = 'p256' | 'rsa2048' | 'ping';

interface LatencyStats {
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  mean_ms: number;
}

interface SignResult {
  completed: number;
  errors: number;
  firstError: string | undefined;
  window_ms: number;
  per_second: number;
  latency: LatencyStats;
  verified_signatures: number;
  client_cpu_percent: number;
}

// --- messages between the server process and the client process ----------------------------------

interface SessionSpec {
  token: string;
  cardId: string;
  spki9a: string; // base64 DER
  spki9e: string;
}

type ToClients =
  | { op: 'setup'; url: string; ca: string; sessions: SessionSpec[] }
  | { op: 'sign'; alg: Alg; warmupMs: number; measureMs: number }
  | { op: 'close-sessions' }
  | { op: 'idle-tokens'; tokens: string[] }
  /** `budgetMs`: no new connection is started after this long (the run must end in time). */
  | { op: 'idle-open'; url: string; ca: string; concurrency: number; budgetMs: number }
  | { op: 'idle-close' }
  | { op: 'exit' };

type FromClients =
  | { op: 'ready'; ms: number; failed: number; firstError?: string }
  | { op: 'measuring' }
  | { op: 'signed'; result: SignResult }
  | { op: 'closed' }
  | { op: 'tokens-stored' }
  | {
      op: 'idle-opened';
      opened: number;
      failed: number;
      skipped: number;
      firstError?: string;
      ms: number;
      clientRssMiB: number;
    }
  | { op: 'idle-closed'; ms: number };

// --- helpers ---------------------------------------------------------------------------------------

function latencyStats(values: number[]): LatencyStats {
  const sorted = Float64Array.from(values).sort();
  let sum = 0;
  for (const v of values) sum += v;
  return {
    p50_ms: round(percentile(sorted, 50)),
    p90_ms: round(percentile(sorted, 90)),
    p99_ms: round(percentile(sorted, 99)),
    max_ms: round(sorted.length ? sorted[sorted.length - 1]! : NaN),
    mean_ms: round(values.length ? sum / values.length : NaN),
  };
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs `fn` over `items` with at most `concurrency` at once. */
async function pool<T>(
  items: readonly T[],
  concurrency: number,
  fn: (item: T, index: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const workers = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  });
  await Promise.all(workers);
}

/** The response (82) of a GENERAL AUTHENTICATE answer's dynamic authentication template (SW stripped). */
function dynAuthResponse(body: Uint8Array): Uint8Array {
  const response = parseDynamicAuthTemplate(body).get(DYN_AUTH.RESPONSE);
  if (!response) throw new Error('answer has no response (82) in its 7C template');
  return response;
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

// --- the client process ----------------------------------------------------------------------------

interface BenchSession {
  client: SessionClient;
  handle: number;
  spki9a: KeyObject;
  spki9e: KeyObject;
}

function send(message: FromClients): void {
  process.send!(message);
}

async function withClose<T>(client: SessionClient, work: Promise<T>, what: string): Promise<T> {
  return Promise.race([
    work,
    client.closed.then((c) => {
      throw new Error(`${what}: connection closed ${c.code} ${c.reason}`);
    }),
  ]);
}

async function openSession(
  url: string,
  ca: string,
  token: string,
  device: DeviceKey,
  name: string,
): Promise<SessionClient> {
  const client = await SessionClient.connect(url, ca);
  await withClose(client, client.hello(), 'HELLO');
  const ok = await withClose(client, client.auth(token, device, name), 'AUTH');
  if (ok.type !== 'AUTH_OK')
    throw new Error(`AUTH answered ${ok.type} ${ok.type === 'ERROR' ? ok.code : ''}`);
  if (ok.deviceStatus !== 'approved') throw new Error(`device is ${ok.deviceStatus}`);
  return client;
}

async function apdu(s: { client: SessionClient; handle: number }, command: Uint8Array): Promise<Uint8Array> {
  const answer = await s.client.request({ type: 'APDU', handle: s.handle, command });
  if (answer.type !== 'APDU_RESULT')
    throw new Error(`APDU answered ${answer.type} ${answer.type === 'ERROR' ? answer.code : ''}`);
  return answer.response;
}

function swOf(response: Uint8Array): number {
  return (response[response.length - 2]! << 8) | response[response.length - 1]!;
}

async function signPhase(
  sessions: BenchSession[],
  alg: Alg,
  warmupMs: number,
  measureMs: number,
): Promise<SignResult> {
  // First signature of every session over a real message, verified against the card's public key.
  let verified = 0;
  const commands = await Promise.all(
    sessions.map(async (s) => {
      if (alg === 'ping') return Buffer.alloc(0);
      const message = randomBytes(64);
      const digest = createHash('sha256').update(message).digest();
      const command = alg === 'p256' ? p256Command(digest) : rsaCommand(pkcs1Block(digest));
      const response = await apdu(s, command);
      if (swOf(response) !== 0x9000) throw new Error(`${alg} sign answered ${swOf(response).toString(16)}`);
      const signature = dynAuthResponse(response.subarray(0, -2));
      const key = alg === 'p256' ? s.spki9e : s.spki9a;
      if (!cryptoVerify('sha256', message, key, signature))
        throw new Error(`${alg} signature does not verify`);
      verified++;
      return command;
    }),
  );

  const start = performance.now();
  const measureFrom = start + warmupMs;
  const end = measureFrom + measureMs;
  let cpuAtMeasure: NodeJS.CpuUsage | undefined;
  const warmupTimer = setTimeout(() => {
    cpuAtMeasure = process.cpuUsage();
    send({ op: 'measuring' });
  }, warmupMs);
  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  const offset = alg === 'p256' ? P256_DIGEST_OFFSET : RSA_DIGEST_OFFSET;

  await Promise.all(
    sessions.map(async (s, i) => {
      const command = commands[i]!;
      let counter = 0;
      for (;;) {
        const t0 = performance.now();
        if (t0 >= end) return;
        let ok = false;
        try {
          if (alg === 'ping') {
            const response = await s.client.request({ type: 'PING' });
            ok = response.type === 'PONG';
            if (!ok) firstError ??= response.type;
          } else {
            // A new digest each time (the frame encoder copies the command, so rewriting is safe).
            command.writeUInt32BE(counter++ >>> 0, offset);
            const response = await s.client.request({ type: 'APDU', handle: s.handle, command });
            if (response.type === 'APDU_RESULT' && swOf(response.response) === 0x9000) ok = true;
            else
              firstError ??=
                response.type === 'APDU_RESULT'
                  ? `SW ${swOf(response.response).toString(16)}`
                  : response.type;
          }
        } catch (error) {
          firstError ??= error instanceof Error ? error.message : String(error);
        }
        const t1 = performance.now();
        if (!ok) errors++;
        else if (t1 >= measureFrom && t1 <= end) latencies.push(t1 - t0);
      }
    }),
  );
  clearTimeout(warmupTimer);
  const cpu = process.cpuUsage(cpuAtMeasure);
  return {
    completed: latencies.length,
    errors,
    firstError,
    window_ms: measureMs,
    per_second: round(latencies.length / (measureMs / 1000), 1),
    latency: latencyStats(latencies),
    verified_signatures: verified,
    client_cpu_percent: round(((cpu.user + cpu.system) / 1000 / measureMs) * 100, 1),
  };
}

async function clientsMain(): Promise<void> {
  process.on('disconnect', () => process.exit(0));
  let sessions: BenchSession[] = [];
  let idle: SessionClient[] = [];
  let idleTokens: string[] = [];
  process.on('message', (message: ToClients) => {
    void (async () => {
      switch (message.op) {
        case 'setup': {
          const t0 = performance.now();
          let failed = 0;
          let firstError: string | undefined;
          const opened: BenchSession[] = [];
          await pool(message.sessions, SETUP_CONCURRENCY, async (spec, i) => {
            try {
              const client = await openSession(
                message.url,
                message.ca,
                spec.token,
                newDeviceKey(),
                `bench-signer-${i}`,
              );
              const opened1 = await client.request({
                type: 'OPEN_CARD',
                cardId: spec.cardId,
                takeOver: false,
              });
              if (opened1.type !== 'CARD_OPENED')
                throw new Error(
                  `OPEN_CARD answered ${opened1.type} ${opened1.type === 'ERROR' ? opened1.code : ''}`,
                );
              const s: BenchSession = {
                client,
                handle: opened1.handle,
                spki9a: createPublicKey({
                  key: Buffer.from(spec.spki9a, 'base64'),
                  format: 'der',
                  type: 'spki',
                }),
                spki9e: createPublicKey({
                  key: Buffer.from(spec.spki9e, 'base64'),
                  format: 'der',
                  type: 'spki',
                }),
              };
              if (swOf(await apdu(s, SELECT_PIV)) !== 0x9000) throw new Error('SELECT failed');
              // 9A has PIN policy "once": one VERIFY per session, outside the measurement.
              if (swOf(await apdu(s, VERIFY_PIN)) !== 0x9000) throw new Error('VERIFY failed');
              opened.push(s);
            } catch (error) {
              failed++;
              firstError ??= error instanceof Error ? error.message : String(error);
            }
          });
          sessions = opened;
          send({
            op: 'ready',
            ms: round(performance.now() - t0, 1),
            failed,
            ...(firstError ? { firstError } : {}),
          });
          return;
        }
        case 'sign':
          send({
            op: 'signed',
            result: await signPhase(sessions, message.alg, message.warmupMs, message.measureMs),
          });
          return;
        case 'close-sessions':
          for (const s of sessions) s.client.close();
          await Promise.all(sessions.map((s) => s.client.closed));
          sessions = [];
          send({ op: 'closed' });
          return;
        case 'idle-tokens':
          idleTokens = message.tokens;
          send({ op: 'tokens-stored' });
          return;
        case 'idle-open': {
          const t0 = performance.now();
          let failed = 0;
          let skipped = 0;
          let firstError: string | undefined;
          await pool(idleTokens, message.concurrency, async (token, i) => {
            if (performance.now() - t0 > message.budgetMs) {
              skipped++;
              return;
            }
            try {
              idle.push(await openSession(message.url, message.ca, token, newDeviceKey(), `bench-idle-${i}`));
            } catch (error) {
              failed++;
              firstError ??= error instanceof Error ? error.message : String(error);
            }
          });
          send({
            op: 'idle-opened',
            opened: idle.length,
            failed,
            skipped,
            ...(firstError ? { firstError } : {}),
            ms: round(performance.now() - t0, 1),
            clientRssMiB: round(process.memoryUsage().rss / 1048576, 1),
          });
          return;
        }
        case 'idle-close': {
          const t0 = performance.now();
          for (const c of idle) c.close();
          await Promise.race([Promise.all(idle.map((c) => c.closed)), sleep(20_000)]);
          idle = [];
          send({ op: 'idle-closed', ms: round(performance.now() - t0, 1) });
          return;
        }
        case 'exit':
          process.exit(0);
      }
    })().catch((error: unknown) => {
      console.error('bench clients:', error);
      process.exit(1);
    });
  });
}

// --- the server process ----------------------------------------------------------------------------

class Clients {
  private readonly queue: FromClients[] = [];
  private waiter: ((m: FromClients) => void) | undefined;
  private exited: Error | undefined;

  constructor(readonly child: ChildProcess) {
    child.on('message', (m: FromClients) => {
      if (this.waiter) {
        const w = this.waiter;
        this.waiter = undefined;
        w(m);
      } else this.queue.push(m);
    });
    child.on('exit', (code, signal) => {
      this.exited = new Error(`client process exited (${code ?? signal})`);
      const w = this.waiter;
      this.waiter = undefined;
      w?.({ op: 'closed' });
    });
  }

  send(m: ToClients): void {
    this.child.send(m);
  }

  async next<K extends FromClients['op']>(op: K): Promise<Extract<FromClients, { op: K }>> {
    const m = this.queue.shift() ?? (await new Promise<FromClients>((resolve) => (this.waiter = resolve)));
    if (this.exited) throw this.exited;
    if (m.op !== op) throw new Error(`expected ${op} from the client process, got ${m.op}`);
    return m as Extract<FromClients, { op: K }>;
  }
}

type ServerNode = TestCardServer;

function startServer(dataDir: string, idp: TestIdpClient): Promise<ServerNode> {
  return startTestCardServer(dataDir, idp, {
    deviceRegistration: 'automatic',
    limits: {
      maxConnections: 20_000,
      // Every benchmark client connects from 127.0.0.1.
      maxSocketsPerAddress: 21_000,
      // Closed benchmark sessions end at once instead of waiting for a RESUME.
      resumeGraceSeconds: 0,
      // Idle connections must outlive the memory measurement.
      idleTimeoutSeconds: 600,
      handshakeTimeoutSeconds: 30,
    },
  });
}

/** Single-threaded signatures per second over `ms`, checked every 64 calls. */
function rawRate(ms: number, signOnce: (i: number) => void): { per_second: number; completed: number } {
  for (let i = 0; i < 200; i++) signOnce(i); // warm-up
  let n = 0;
  const t0 = performance.now();
  const end = t0 + ms;
  let now = t0;
  while (now < end) {
    for (let k = 0; k < 64; k++) signOnce(n++);
    now = performance.now();
  }
  return { per_second: round(n / ((now - t0) / 1000), 1), completed: n };
}

function rawBaselines(seconds: number) {
  const ec = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey;
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  const data = randomBytes(32);
  const p256Raw = rawRate(seconds * 1000, (i) => {
    data.writeUInt32BE(i >>> 0, 0);
    cryptoSign('sha256', data, ec);
  });
  const rsaRaw = rawRate(seconds * 1000, (i) => {
    data.writeUInt32BE(i >>> 0, 0);
    cryptoSign('sha256', data, rsa);
  });
  const scalar = Buffer.from(ec.export({ format: 'jwk' }).d!, 'base64url');
  const digest = new Uint8Array(32);
  const nobleRaw = rawRate(NOBLE_SECONDS * 1000, (i) => {
    digest[0] = i & 0xff;
    digest[1] = (i >>> 8) & 0xff;
    p256.sign(digest, scalar, { prehash: false, lowS: false, format: 'der' });
  });
  return { p256Raw, rsaRaw, nobleRaw };
}

function exposeGc(): () => void {
  const existing = (globalThis as { gc?: () => void }).gc;
  if (typeof existing === 'function') return existing;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

interface MemorySample {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
}

async function settledMemory(gc: () => void): Promise<MemorySample> {
  for (let i = 0; i < 3; i++) {
    await sleep(300);
    gc();
  }
  const m = process.memoryUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
  };
}

async function waitUntil(check: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await sleep(50);
  }
  return check();
}

/** Event-loop utilisation and CPU of this (the server's) process between two points. */
function serverMeter() {
  const elu = performance.eventLoopUtilization();
  const cpu = process.cpuUsage();
  const t0 = performance.now();
  return () => {
    const wall = performance.now() - t0;
    const e = performance.eventLoopUtilization(elu);
    const c = process.cpuUsage(cpu);
    return {
      event_loop_utilization: round(e.utilization, 3),
      cpu_percent: round(((c.user + c.system) / 1000 / wall) * 100, 1),
      cpu_user_percent: round((c.user / 1000 / wall) * 100, 1),
      cpu_system_percent: round((c.system / 1000 / wall) * 100, 1),
    };
  };
}

function ulimitN(): string {
  try {
    return execSync('ulimit -n', { shell: '/bin/sh', encoding: 'utf8' }).trim();
  } catch {
    return 'unknown';
  }
}

/** Opens `count` authenticated idle sessions from the client process; the server's memory before and after. */
async function measureIdle(
  node: ServerNode,
  idp: TestIdpClient,
  clients: Clients,
  gc: () => void,
  count: number,
  budgetMs: number,
  subjectPrefix: string,
) {
  const { server, tls } = node;
  await waitUntil(() => server.connections() === 0 && server.service.liveSessions === 0, 10_000);
  const tokens: string[] = [];
  for (let i = 0; i < count; i++)
    tokens.push(await idp.mintAccessToken({ claims: { sub: `${subjectPrefix}-${i}` } }));
  clients.send({ op: 'idle-tokens', tokens });
  await clients.next('tokens-stored');
  tokens.length = 0;
  const connectionsBefore = server.connections();
  const before = await settledMemory(gc);
  const idleMeter = serverMeter();
  clients.send({
    op: 'idle-open',
    url: server.sessionUrl,
    ca: tls.cert,
    concurrency: IDLE_CONCURRENCY,
    budgetMs,
  });
  const opened = await clients.next('idle-opened');
  const openStats = idleMeter();
  const connectionsOpen = server.connections();
  const liveSessionsOpen = server.service.liveSessions;
  const afterMem = await settledMemory(gc);
  clients.send({ op: 'idle-close' });
  const closedIdle = await clients.next('idle-closed');
  const drained = await waitUntil(
    () => server.connections() === 0 && server.service.liveSessions === 0,
    20_000,
  );

  const n = Math.max(1, connectionsOpen - connectionsBefore);
  const kib = (a: number, b: number) => round((b - a) / 1024 / n, 2);
  const rssPerConn = kib(before.rss, afterMem.rss);
  return {
    requested: count,
    opened: opened.opened,
    failed: opened.failed,
    not_attempted_for_lack_of_time: opened.skipped,
    ...(opened.firstError ? { first_error: opened.firstError } : {}),
    server_connections_open: connectionsOpen,
    server_live_sessions: liveSessionsOpen,
    open_concurrency: IDLE_CONCURRENCY,
    open_s: round(opened.ms / 1000, 2),
    opened_per_s: round(opened.opened / (opened.ms / 1000), 1),
    open_server_process: openStats,
    close_s: round(closedIdle.ms / 1000, 2),
    drained_to_zero: drained,
    server_memory_before_mib: mib(before),
    server_memory_after_mib: mib(afterMem),
    kib_per_connection: {
      rss: rssPerConn,
      heap_used: kib(before.heapUsed, afterMem.heapUsed),
      heap_total: kib(before.heapTotal, afterMem.heapTotal),
      external: kib(before.external, afterMem.external),
      array_buffers: kib(before.arrayBuffers, afterMem.arrayBuffers),
    },
    client_process_rss_mib: opened.clientRssMiB,
  };
}

async function serverMain(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sessions: { type: 'string' },
      seconds: { type: 'string' },
      warmup: { type: 'string' },
      idle: { type: 'string' },
      profile: { type: 'string' },
    },
  });
  const sessionsN = Number(values.sessions ?? DEFAULT_SESSIONS);
  const seconds = Number(values.seconds ?? DEFAULT_SECONDS);
  const warmup = Number(values.warmup ?? DEFAULT_WARMUP);
  const idleN = Number(values.idle ?? DEFAULT_IDLE);
  if (
    ![sessionsN, seconds, idleN].every((v) => Number.isInteger(v) && v >= 1) ||
    !Number.isInteger(warmup) ||
    warmup < 0
  ) {
    throw new Error('--sessions, --seconds, --idle take whole numbers >= 1, --warmup >= 0');
  }

  const watchdog = setTimeout(() => {
    console.error(`server-throughput: gave up after ${WATCHDOG_MS / 1000} s`);
    process.exit(3);
  }, WATCHDOG_MS);
  watchdog.unref();
  const runStart = performance.now();
  const gc = exposeGc();

  const idp = await startTestIdpProcess();
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cardlink-bench-throughput-'));
  let node: ServerNode | undefined;
  let clients: Clients | undefined;
  try {
    node = await startServer(dir, idp);
    const { server, resources, tls } = node;

    // Cards, before anything is measured.
    const profile = parseCardProfile(BENCH_PROFILE);
    const cards: CreatedCard[] = [];
    const tCards = performance.now();
    await pool(Array.from({ length: sessionsN }), CARD_CONCURRENCY, async () => {
      cards.push(
        await createCard({
          storage: resources.storage,
          kek: resources.kek,
          user: { issuer: idp.issuer, subject: 'alice', tenant: TENANT },
          profile,
          pin: PIN,
          puk: PUK,
        }),
      );
    });
    const cardCreationMs = performance.now() - tCards;

    const child = fork(fileURLToPath(import.meta.url), ['--clients'], {
      execArgv: [],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    clients = new Clients(child);

    // Memory per idle connection first, on a server that has not opened any card yet.
    const idle = await measureIdle(
      node,
      idp,
      clients,
      gc,
      idleN,
      IDLE_DEADLINE_MS - (performance.now() - runStart),
      'idle',
    );
    // The same count against bare node:tls + ws in processes of their own: the platform's floor.
    const floor = await measureTlsWsFloor({
      count: idleN,
      certFile: node.config.tls.certFile,
      keyFile: node.config.tls.keyFile,
    });

    const specs: SessionSpec[] = [];
    for (const card of cards) {
      const spki = (slot: number) => toBase64(card.slots.find((s) => s.slot === slot)!.publicKeySpki);
      specs.push({
        token: await idp.mintAccessToken(),
        cardId: card.cardId,
        spki9a: spki(0x9a),
        spki9e: spki(0x9e),
      });
    }
    clients.send({ op: 'setup', url: server.sessionUrl, ca: tls.cert, sessions: specs });
    const ready = await clients.next('ready');
    if (ready.failed > 0) throw new Error(`${ready.failed} sessions failed to set up: ${ready.firstError}`);

    const phase = async (alg: Alg) => {
      clients!.send({ op: 'sign', alg, warmupMs: warmup * 1000, measureMs: seconds * 1000 });
      await clients!.next('measuring');
      const meter = serverMeter();
      const profiler = values.profile === undefined ? undefined : await startCpuProfile();
      const { result } = await clients!.next('signed');
      if (profiler) await profiler.stopInto(values.profile!, `server-${alg}`);
      return { ...result, server_process: meter() };
    };
    const storage = node.resources.storage;
    let flushesBefore = storage.diskFlushes();
    const p256Server = await phase('p256');
    const p256Flushes = storage.diskFlushes() - flushesBefore;
    flushesBefore = storage.diskFlushes();
    const rsaServer = await phase('rsa2048');
    const rsaFlushes = storage.diskFlushes() - flushesBefore;
    const pingServer = await phase('ping');

    clients.send({ op: 'close-sessions' });
    await clients.next('closed');

    // Raw node:crypto on the same machine, while the clients are idle.
    const raw = rawBaselines(seconds);

    // Once more, small, after the signing sessions opened (and closed) their cards.
    const elapsed = performance.now() - runStart;
    const idleAfterCards =
      elapsed < LATE_IDLE_LATEST_START_MS
        ? await measureIdle(
            node,
            idp,
            clients,
            gc,
            LATE_IDLE,
            Math.min(15_000, WATCHDOG_MS - 30_000 - elapsed),
            'idle-late',
          )
        : { skipped: 'not enough time left in the run' };
    clients.send({ op: 'exit' });

    const ratio = (server: number, rawRate: number) => round(server / rawRate, 4);
    const p256Ratio = ratio(p256Server.per_second, raw.p256Raw.per_second);
    const rsaRatio = ratio(rsaServer.per_second, raw.rsaRaw.per_second);

    const result = {
      benchmark: 'server-throughput',
      clients:
        'child process (child_process.fork of this file with --clients); server and test IdP in the main process',
      storage: `sqlite in ${os.tmpdir()} (WAL, synchronous=NORMAL + fsync of the WAL off the event loop before a durable commit answers, exclusive locking)`,
      sessions: sessionsN,
      warmup_s: warmup,
      measure_s: seconds,
      card_creation_s: round(cardCreationMs / 1000, 2),
      session_setup_ms: ready.ms,
      p256: {
        apdu: '00 87 11 9E 26 7C 24 82 00 81 20 <32-byte digest> 00 (slot 9E, PIN policy never)',
        server_signs_per_s: p256Server.per_second,
        raw_node_crypto_signs_per_s: raw.p256Raw.per_second,
        raw_noble_curves_signs_per_s: raw.nobleRaw.per_second,
        ratio_server_to_raw: p256Ratio,
        target_ratio: TARGETS.p256RatioOfRaw,
        meets_target: p256Ratio >= TARGETS.p256RatioOfRaw,
        wal_fsyncs_during_phase: p256Flushes,
        ...p256Server,
      },
      rsa2048: {
        apdu: '00 87 07 9A 00 01 0A 7C 82 01 06 82 00 81 82 01 00 <256-byte PKCS#1 v1.5 block> 00 00 (extended length; slot 9A, PIN policy once, VERIFY once per session)',
        server_signs_per_s: rsaServer.per_second,
        raw_node_crypto_signs_per_s: raw.rsaRaw.per_second,
        ratio_server_to_raw: rsaRatio,
        target_ratio: TARGETS.rsa2048RatioOfRaw,
        target_note: 'the issue names a target for P-256 only; the same 50 % is applied here',
        meets_target: rsaRatio >= TARGETS.rsa2048RatioOfRaw,
        wal_fsyncs_during_phase: rsaFlushes,
        ...rsaServer,
      },
      transport_ceiling: {
        note: 'PING/PONG in lock-step on the same 100 sessions: TLS, WebSocket, frame codec and session dispatch, no card work and no database; no signing phase can go faster than this',
        pings_per_s: pingServer.per_second,
        ratio_to_raw_p256: ratio(pingServer.per_second, raw.p256Raw.per_second),
        // A server doing nothing but the transport and the raw signature, one after the other on
        // its event loop, could reach 1 / (1/pings + 1/raw signs): the best any single-threaded
        // server could do on this machine with its clients beside it.
        serial_bound_p256_signs_per_s: round(1 / (1 / pingServer.per_second + 1 / raw.p256Raw.per_second), 1),
        serial_bound_ratio_to_raw_p256: ratio(
          1 / (1 / pingServer.per_second + 1 / raw.p256Raw.per_second),
          raw.p256Raw.per_second,
        ),
        ...pingServer,
      },
      raw_baseline: {
        method:
          'single thread, cached KeyObject, crypto.sign(sha256, 32 bytes, key); noble: p256.sign(digest, scalar, {prehash:false})',
        p256_node_crypto: raw.p256Raw,
        rsa2048_node_crypto: raw.rsaRaw,
        p256_noble_curves: { ...raw.nobleRaw, seconds: NOBLE_SECONDS },
      },
      idle_connections: {
        ...idle,
        target_kib_per_connection: TARGETS.kibPerIdleConnection,
        target_measure: 'rss',
        meets_target: idle.kib_per_connection.rss <= TARGETS.kibPerIdleConnection,
        platform_floor: {
          note: 'the same number of wss connections to a bare https + ws echo server (bench/support/tls-ws-floor.ts), one 100-byte message each: what node:tls and ws alone keep per connection',
          ...floor,
        },
        rss_kib_above_floor: round(idle.kib_per_connection.rss - floor.kib_per_connection.rss, 2),
      },
      idle_connections_after_cards_opened: {
        note: `${LATE_IDLE} idle sessions again, after the ${sessionsN} signing sessions have opened and closed their cards (for comparison, no target: the process already holds the pages the signing phases freed, so its RSS grows less than the connections take; compare heap_used)`,
        ...idleAfterCards,
      },
      total_s: round((performance.now() - runStart) / 1000, 1),
      node: process.version,
      date: new Date().toISOString(),
      command: benchCommand(),
      host: {
        cpus: os.cpus().length,
        cpu_model: os.cpus()[0]?.model ?? 'unknown',
        memory_mib: Math.round(os.totalmem() / 1048576),
        loadavg_1m: round(os.loadavg()[0]!),
        ulimit_n: ulimitN(),
      },
    };
    writeBenchResult('server-throughput', result);
    console.log(JSON.stringify(result, null, 2));
  } finally {
    if (clients && clients.child.exitCode === null) clients.child.kill();
    if (node) {
      await node.server.close();
      await node.resources.close();
    }
    await idp.close();
    await rm(dir, { recursive: true, force: true });
  }
}

function mib(m: MemorySample) {
  const f = (x: number) => round(x / 1048576, 1);
  return {
    rss: f(m.rss),
    heap_used: f(m.heapUsed),
    heap_total: f(m.heapTotal),
    external: f(m.external),
    array_buffers: f(m.arrayBuffers),
  };
}

if (process.argv[2] === '--clients') {
  void clientsMain();
} else {
  serverMain().then(
    () => process.exit(process.exitCode ?? 0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
