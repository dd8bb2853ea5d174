/**
 * Wall time of OpenSC's `pkcs11-tool --test --login` (about 150 APDUs: enumeration, login, signatures,
 * decryptions with every key) against the same PIV card served through each transport:
 * the cardlink pcsc-lite driver (Unix socket), and Debian 12's vpcd (TCP loopback, reversed mode) to
 * the card side as the daemon runs it (TCP_QUICKACK re-armed, docs/reader-vpcd.md) and without it.
 *
 *   npm run build && node dist/bench/pkcs11-test-login.js [runs]
 *
 * Writes bench/results/pkcs11-test-login.json.
 */
import { spawn } from 'node:child_process';
import { createMemoryCardState, provisionStandardKeys, PivCard } from '../apdu/piv/index.js';
import { installDefaultObjects } from '../apdu/piv/objects/index.js';
import { BridgeSocketClient } from '../daemon/reader/bridge-socket-client.js';
import { waitForCardPresent } from '../daemon/reader/pcsc-presence.js';
import { loadTcpQuickAck, type RearmQuickAck } from '../daemon/reader/tcp-quickack.js';
import { VpcdCardServer } from '../daemon/reader/vpcd-card-server.js';
import { VpcdPlaceholderCard } from '../daemon/reader/vpcd-placeholder-card.js';
import { startPcscd } from '../test/support/pcscd.js';
import { OPENSC_PKCS11 } from '../test/support/local-card.js';
import { writeBenchResult } from './support/results.js';
import { median } from './support/stats.js';

const PIN = '24681357';
const runs = Number(process.argv[2] ?? 3);

async function newCard(): Promise<PivCard> {
  const state = createMemoryCardState({
    pin: new TextEncoder().encode(PIN),
    puk: new TextEncoder().encode('13572468'),
    managementKey: { algorithm: 'AES192', key: new Uint8Array(24).map((_, i) => (i * 37 + 11) & 0xff) },
  });
  await installDefaultObjects(state);
  await provisionStandardKeys(state);
  return new PivCard(state);
}

/** Asynchronous on purpose: the card is served by this process, whose event loop must keep running. */
async function timeTestLogin(env: NodeJS.ProcessEnv): Promise<number> {
  const t0 = process.hrtime.bigint();
  const child = spawn('pkcs11-tool', ['--module', OPENSC_PKCS11, '--test', '--login', '--pin', PIN], { env });
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const status = await new Promise<number | null>((r) => child.once('exit', r));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  if (status !== 0 || !/No errors/.test(out)) throw new Error(`pkcs11-tool --test failed:\n${out}`);
  return ms;
}

async function repeat(env: NodeJS.ProcessEnv): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) times.push(await timeTestLogin(env));
  return times;
}

async function measureBridge(): Promise<number[]> {
  const pcscd = await startPcscd({ cardlink: { slots: 1, friendlyName: 'cardlink Bench Reader' } });
  try {
    const client = await BridgeSocketClient.connect({ socketPath: pcscd.socketPath });
    client.insert(0, await newCard());
    await waitForCardPresent(pcscd.readerName(0), 10000);
    const times = await repeat(pcscd.env);
    await client.close();
    return times;
  } finally {
    await pcscd.stop();
  }
}

async function measureVpcd(quickAck: RearmQuickAck | undefined): Promise<number[]> {
  const port = 36000 + Math.floor(Math.random() * 2000);
  const server = new VpcdCardServer({ port, quickAck });
  await server.listen();
  server.insert(0, await newCard());
  server.insert(1, new VpcdPlaceholderCard());
  const pcscd = await startPcscd({ cardlink: false, vpcd: { port } });
  try {
    await waitForCardPresent(pcscd.vpcdReaderName(0), 10000);
    return await repeat(pcscd.env);
  } finally {
    await pcscd.stop();
    await server.close();
  }
}

console.error('measuring the cardlink driver');
const bridge = await measureBridge();
const quickAck = loadTcpQuickAck();
if (!quickAck.rearm) throw new Error(`TCP_QUICKACK addon unavailable: ${quickAck.why}`);
console.error('measuring vpcd with TCP_QUICKACK');
const vpcdQuickAck = await measureVpcd(quickAck.rearm);
console.error('measuring vpcd');
const vpcd = await measureVpcd(undefined);
const result = {
  benchmark: 'pkcs11-tool --test --login wall time',
  command: `node dist/bench/pkcs11-test-login.js ${runs}`,
  date: new Date().toISOString(),
  node: process.version,
  runs,
  cardlink_driver_ms: { median: median(bridge), all: bridge },
  vpcd_quickack_ms: { median: median(vpcdQuickAck), all: vpcdQuickAck },
  debian_vpcd_ms: { median: median(vpcd), all: vpcd },
  speedup: Number((median(vpcd) / median(bridge)).toFixed(1)),
};
writeBenchResult('pkcs11-test-login', result);
console.log(JSON.stringify(result, null, 2));
process.exit(0);
