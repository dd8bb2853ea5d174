/**
 * APDU round trip through pcscd for each reader transport: a PC/SC application (npm pcsclite) sends
 * an APDU, pcscd hands it to the reader driver, the driver to our Node process, an echo card answers.
 *
 *   node dist/bench/pcsc-roundtrip.js [--n 2000] [--warmup 200] [--vpcd-n 200]
 *
 * Each transport gets its own private pcscd (test/support/pcscd.ts; root), one after the other in the
 * same run, as a user's machine has one of them: ours (daemon/ifd-handler, Unix socket bridge), then
 * vsmartcard's vpcd in reversed mode (TCP loopback) twice: `vpcd-quickack` is the daemon's vpcd side
 * as it runs (TCP_QUICKACK re-armed through daemon/reader/native, docs/reader-vpcd.md), `vpcd` the
 * same card server without it (stock vpcd's cost). Sharing one pcscd would let vpcd's reader polling
 * add jitter to our tail. Writes bench/results/pcsc-roundtrip.json and prints it.
 */
import os from 'node:os';
import { parseArgs } from 'node:util';
import { BridgeSocketClient } from '../daemon/reader/bridge-socket-client.js';
import { waitForCardPresent } from '../daemon/reader/pcsc-presence.js';
import { loadTcpQuickAck, type RearmQuickAck } from '../daemon/reader/tcp-quickack.js';
import { VpcdCardServer } from '../daemon/reader/vpcd-card-server.js';
import { EchoCard, echoAtr } from '../test/support/echo-card.js';
import { PcscClient, type PcscCard } from '../test/support/pcsc-client.js';
import { startPcscd } from '../test/support/pcscd.js';
import { benchCommand, writeBenchResult } from './support/results.js';
import { percentile, round } from './support/stats.js';

/** Measured round trips per transport unless --n says otherwise. */
const DEFAULT_N = 2000;
/** Unmeasured round trips first, unless --warmup says otherwise. */
const DEFAULT_WARMUP = 200;
/** Target for the daemon's vpcd hop (issue 18): median at most this, against stock vpcd's ~44 ms. */
const VPCD_HOP_TARGET_MEDIAN_MS = 1;
/**
 * Measured round trips through vpcd unless --vpcd-n says otherwise (its warm-up is a tenth of it).
 * Each one waits out Linux's delayed ACK (about 44 ms: Debian 12's vpcd writes length and payload
 * in two sends), so 2 000 of them took two minutes of `npm run bench`; the anchor needs its median
 * and p99, which 200 give (p99: the second slowest), in about 10 s.
 */
const DEFAULT_VPCD_N = 200;
/** Port pairs tried for vpcd before giving up. */
const PORT_ATTEMPTS = 20;
/** The APDU: SELECT of the PIV AID (SP 800-73-4 Part 2, 3.1.1), a typical short command. */
const APDU = Uint8Array.of(
  0x00,
  0xa4,
  0x04,
  0x00,
  0x09,
  0xa0,
  0x00,
  0x00,
  0x03,
  0x08,
  0x00,
  0x00,
  0x10,
  0x00,
  0x00,
);

interface Stats {
  median_ms: number;
  p99_ms: number;
  p90_ms: number;
  min_ms: number;
  max_ms: number;
  n: number;
}

async function measure(card: PcscCard, n: number, warmup: number): Promise<Stats> {
  // timed in the application process, around each SCardTransmit
  const times = await card.bench(APDU, n, warmup);
  times.sort((a, b) => a - b);
  return {
    median_ms: round(percentile(times, 50)),
    p99_ms: round(percentile(times, 99)),
    p90_ms: round(percentile(times, 90)),
    min_ms: round(times[0]!),
    max_ms: round(times[times.length - 1]!),
    n,
  };
}

async function vpcdServer(quickAck: RearmQuickAck | undefined): Promise<VpcdCardServer> {
  for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
    const server = new VpcdCardServer({ port: 20000 + Math.floor(Math.random() * 40000), quickAck });
    try {
      await server.listen();
      return server;
    } catch {
      await server.close();
    }
  }
  throw new Error('no free port pair for vpcd');
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { n: { type: 'string' }, warmup: { type: 'string' }, 'vpcd-n': { type: 'string' } },
  });
  const n = Number(values.n ?? DEFAULT_N);
  const warmup = Number(values.warmup ?? DEFAULT_WARMUP);
  const vpcdN = Number(values['vpcd-n'] ?? DEFAULT_VPCD_N);
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(warmup) || warmup < 0)
    throw new Error('--n and --warmup take whole numbers');
  if (!Number.isInteger(vpcdN) || vpcdN < 1) throw new Error('--vpcd-n takes a whole number >= 1');

  const quickAck = loadTcpQuickAck();
  // Without the addon the "vpcd hop" figure would silently be stock vpcd's: refuse instead.
  if (!quickAck.rearm) throw new Error(`TCP_QUICKACK addon unavailable: ${quickAck.why}`);
  const ours = await measureCardlinkDriver(n, warmup);
  // With TCP_QUICKACK each round trip is fast: the full count. Stock vpcd waits out delayed ACK on
  // each one, so it gets --vpcd-n (its warm-up a tenth of it).
  const withQuickAck = await measureVpcd(n, warmup, quickAck.rearm);
  const vpcdWarmup = Math.floor(vpcdN / 10);
  const vpcd = await measureVpcd(vpcdN, vpcdWarmup, undefined);
  const result = {
    'ifd-cardlink': ours,
    'vpcd-quickack': {
      ...withQuickAck,
      target_median_ms: VPCD_HOP_TARGET_MEDIAN_MS,
      pass: withQuickAck.median_ms <= VPCD_HOP_TARGET_MEDIAN_MS,
    },
    vpcd,
    apdu_bytes: APDU.length,
    warmup,
    vpcd_warmup: vpcdWarmup,
    node: process.version,
    date: new Date().toISOString(),
    command: benchCommand(),
    host: { cpus: os.cpus().length, loadavg_1m: round(os.loadavg()[0]!) },
  };
  writeBenchResult('pcsc-roundtrip', result);
  console.log(JSON.stringify(result, null, 2));
}

/** Our reader driver alone in a private pcscd. */
async function measureCardlinkDriver(n: number, warmup: number): Promise<Stats> {
  const pcscd = await startPcscd({ cardlink: { slots: 1 } });
  let bridge: BridgeSocketClient | undefined;
  let app: PcscClient | undefined;
  try {
    bridge = await BridgeSocketClient.connect({ socketPath: pcscd.socketPath });
    bridge.insert(0, new EchoCard({ atr: echoAtr('bench-c0') }));
    await waitForCardPresent(pcscd.readerName(0));
    app = await PcscClient.open();
    const card = await app.connect(pcscd.readerName(0));
    const stats = await measure(card, n, warmup);
    await card.disconnect();
    return stats;
  } finally {
    await app?.close();
    await bridge?.close();
    await pcscd.stop();
  }
}

/**
 * Debian 12's vpcd alone in a private pcscd, our card on its loopback card port; with `quickAck` as
 * the daemon serves it, without as stock vpcd costs.
 */
async function measureVpcd(n: number, warmup: number, quickAck: RearmQuickAck | undefined): Promise<Stats> {
  // vpcd needs both of its card ports answering before pcscd starts (vpcd-card-server.ts).
  const server = await vpcdServer(quickAck);
  server.insert(0, new EchoCard({ atr: echoAtr('bench-v0') }));
  server.insert(1, new EchoCard({ atr: echoAtr('bench-v1') }));
  const pcscd = await startPcscd({ cardlink: false, vpcd: { port: server.port } });
  let app: PcscClient | undefined;
  try {
    await waitForCardPresent(pcscd.vpcdReaderName(0));
    app = await PcscClient.open();
    const card = await app.connect(pcscd.vpcdReaderName(0));
    const stats = await measure(card, n, warmup);
    await card.disconnect();
    return stats;
  } finally {
    await app?.close();
    // pcscd before the vpcd card server: Debian 12's vpcd aborts pcscd when the card side goes away.
    await pcscd.stop();
    await server.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
