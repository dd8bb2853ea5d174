/**
 * How long `cardlink demo --yes` takes from its start to the demo card in the reader, as pcscd
 * reports it: cold (a fresh state directory: IdP keys, server data, TLS pair and the card with four
 * key pairs are made) and warm (the second run on that state). Targets: cold <= 15 s, warm <= 3 s.
 *
 *   npm run build && node dist/bench/demo-startup.js [--runs 3]
 *
 * Each run spawns `bin/cardlink demo --yes` exactly as a user runs it (against a private pcscd with
 * the cardlink reader, test/support/pcscd.ts), and this process watches the reader through PC/SC from
 * the moment of the spawn: `card_present_ms` is when pcscd first reports the card, `ready_line_ms`
 * when the demo printed its ready line. Then SIGINT, and `stop_ms` until the demo has exited. Cold and
 * warm runs alternate (cold, warm, cold, warm, ...), each cold run in a new directory.
 * Writes bench/results/demo-startup.json.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { waitForCardPresent } from '../daemon/reader/pcsc-presence.js';
import { DEMO_READY_PREFIX } from '../demo/run-demo.js';
import { REPO_ROOT, startPcscd, type PcscdInstance } from '../test/support/pcscd.js';
import { benchCommand, writeBenchResult } from './support/results.js';

const TARGET_COLD_MS = 15_000;
const TARGET_WARM_MS = 3_000;
/** A run that takes longer than this has failed. */
const RUN_TIMEOUT_MS = 120_000;
const CARDLINK = path.join(REPO_ROOT, 'bin', 'cardlink');

function argValue(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : fallback;
}
const runs = argValue('--runs', 3);

interface RunResult {
  card_present_ms: number;
  ready_line_ms: number;
  stop_ms: number;
  /** The demo's own step times, "[i/6] title ... ok (x s)", in seconds. */
  steps: Record<string, number>;
}

/**
 * When pcscd first reports a card in `readerName`. pcscd answers a waiting client with
 * SCARD_E_NO_SERVICE-like transport errors while its reader list changes (the demo's reader check
 * connects to the driver): the wait starts again, the clock keeps running from `started`.
 */
async function watchForCard(readerName: string, started: number): Promise<number> {
  for (;;) {
    const left = RUN_TIMEOUT_MS - (performance.now() - started);
    try {
      await waitForCardPresent(readerName, Math.max(1, left));
      return performance.now();
    } catch (error) {
      if (left <= 0 || (error as { code?: string }).code === 'ERR_PCSCD_UNAVAILABLE') throw error;
      process.stderr.write(`(watcher: ${(error as Error).message}; watching again)\n`);
    }
  }
}

async function oneRun(pcscd: PcscdInstance, stateDir: string): Promise<RunResult> {
  const started = performance.now();
  const child = spawn(
    CARDLINK,
    [
      'demo',
      '--yes',
      '--state-dir',
      stateDir,
      '--reader-socket',
      pcscd.socketPath,
      '--reader-name',
      pcscd.friendlyName,
      '--idp-port',
      '0',
      '--server-port',
      '0',
    ],
    { env: pcscd.env, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  // Watching from the spawn on: pcscd reports the card as soon as the daemon inserts it.
  const present = watchForCard(pcscd.readerName(0), started);
  present.catch(() => undefined); // awaited below, after the ready line
  let text = '';
  child.stdout.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const ready = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`not ready in time:\n${text}`)), RUN_TIMEOUT_MS);
    child.stdout.on('data', () => {
      if (text.includes(DEMO_READY_PREFIX)) {
        clearTimeout(timer);
        resolve(performance.now());
      }
    });
    void exited.then((code) => reject(new Error(`the demo exited (${code}):\n${text}`)));
  });
  const cardPresent = await present;
  // Let the ready block finish printing, then stop.
  await new Promise((r) => setTimeout(r, 200));
  const stopAt = performance.now();
  child.kill('SIGINT');
  const code = await exited;
  const stopped = performance.now();
  if (code !== 0) throw new Error(`the demo exited ${code} on SIGINT:\n${text}`);
  const steps: Record<string, number> = {};
  for (const m of text.matchAll(/^\[(\d)\/\d\] (.+?) \.\.\. .*\((\d+\.\d) s\)$/gm))
    steps[`${m[1]} ${m[2]!.replace(/ on .*| \(.*| for .*/, '')}`] = Number(m[3]);
  return {
    card_present_ms: Math.round(cardPresent - started),
    ready_line_ms: Math.round(ready - started),
    stop_ms: Math.round(stopped - stopAt),
    steps,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function summary(results: RunResult[], target: number) {
  const present = results.map((r) => r.card_present_ms);
  return {
    card_present_ms: { median: median(present), max: Math.max(...present), all: present },
    ready_line_ms: { median: median(results.map((r) => r.ready_line_ms)) },
    stop_ms: { median: median(results.map((r) => r.stop_ms)) },
    target_ms: target,
    pass: median(present) <= target,
    steps_s: results.map((r) => r.steps),
  };
}

const loadAtStart = os.loadavg()[0]!;
const pcscd = await startPcscd({ cardlink: { slots: 4, friendlyName: 'cardlink Bench Reader' } });
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-bench-demo-'));
const cold: RunResult[] = [];
const warm: RunResult[] = [];
try {
  for (let i = 0; i < runs; i++) {
    const stateDir = path.join(root, `state-${i}`);
    cold.push(await oneRun(pcscd, stateDir));
    warm.push(await oneRun(pcscd, stateDir));
    process.stdout.write(
      `run ${i + 1}/${runs}: cold ${cold.at(-1)!.card_present_ms} ms, warm ${warm.at(-1)!.card_present_ms} ms\n`,
    );
  }
} finally {
  await pcscd.stop();
  fs.rmSync(root, { recursive: true, force: true });
}

const result = {
  benchmark: 'demo-startup',
  command: benchCommand(),
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    cpu_model: os.cpus()[0]?.model,
    node: process.version,
    loadavg_1m_at_start: loadAtStart,
    loadavg_1m_at_end: os.loadavg()[0],
  },
  what: 'bin/cardlink demo --yes from spawn to the demo card present in pcscd (private pcscd, cardlink reader)',
  runs,
  cold: summary(cold, TARGET_COLD_MS),
  warm: summary(warm, TARGET_WARM_MS),
};
const file = writeBenchResult('demo-startup', result);
process.stdout.write(
  `cold: median ${result.cold.card_present_ms.median} ms (target ${TARGET_COLD_MS}, ${result.cold.pass ? 'pass' : 'FAIL'}); ` +
    `warm: median ${result.warm.card_present_ms.median} ms (target ${TARGET_WARM_MS}, ${result.warm.pass ? 'pass' : 'FAIL'}); ${file}\n`,
);
process.exit(0);
