/**
 * The fuzz properties at depth, outside CI: the same properties the CI tests run (fuzz/), with
 * 1 000 000 cases each instead of CI's 100 000 (PIV APDUs) and 20 000 (frame codec), and every bad
 * case counted rather than the run stopping at the first.
 *
 *   npm run fuzz          (builds the TypeScript, then the line below)
 *   node dist/bench/fuzz-depth.js --cases 1000000 [--target piv_apdu|frame_codec] [--seed N]
 *
 * Targets: `piv_apdu` (fuzz/piv-apdu.ts: `--cases` commands one after another on stateful cards;
 * each answer a well-formed status word of the allowed ISO set, no state change after an error)
 * and `frame_codec` (fuzz/frame-codec.ts: `--cases` for each of its four properties; decoding
 * never throws anything but FrameMalformedError, decoded frames re-encode to their bytes, valid
 * frames round-trip). Without `--target`, both.
 *
 * Writes bench/results/fuzz-depth.json: per target the command, date, Node version, seed, cases,
 * throws (the code under test threw), failures (a property broken), seconds, up to five examples
 * of bad cases, and `pass`. A run of one target keeps the other target's last result. Exits 1 when
 * a target has a throw, a failure, or (piv_apdu) never reached the command handlers. Replay a bad
 * run with its `--seed` and `--cases`.
 */
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { FRAME_CODEC_PROPERTIES } from '../fuzz/frame-codec.js';
import { PivApduFuzzer } from '../fuzz/piv-apdu.js';
import type { Verdict } from '../fuzz/property.js';
import { benchCommand, readBenchResult, writeBenchResult } from './support/results.js';

const TARGETS = ['piv_apdu', 'frame_codec'] as const;
type Target = (typeof TARGETS)[number];
/** The depth a result must reach to pass. */
const MIN_CASES = 1_000_000;
const MAX_EXAMPLES = 5;
const PROGRESS_EVERY = 100_000;

/** Counts the verdicts of one property's run. */
class Tally {
  cases = 0;
  throws = 0;
  failures = 0;
  readonly examples: string[] = [];
  private readonly started = performance.now();

  constructor(private readonly label: string) {}

  add(verdict: Verdict): true {
    this.cases++;
    if (!verdict.ok) {
      if (verdict.kind === 'throw') this.throws++;
      else this.failures++;
      if (this.examples.length < MAX_EXAMPLES) this.examples.push(`${verdict.kind}: ${verdict.detail}`);
    }
    if (this.cases % PROGRESS_EVERY === 0) {
      process.stderr.write(
        `${this.label}: ${this.cases} cases, ${this.throws} throws, ${this.failures} failures, ` +
          `${this.seconds()} s\n`,
      );
    }
    return true; // counted, not failed: the run goes on to the last case
  }

  seconds(): number {
    return Math.round((performance.now() - this.started) / 100) / 10;
  }

  summary() {
    return {
      cases: this.cases,
      throws: this.throws,
      failures: this.failures,
      seconds: this.seconds(),
      examples: this.examples,
    };
  }
}

async function fuzzPivApdu(cases: number, seed: number) {
  const fuzzer = await PivApduFuzzer.create();
  const tally = new Tally(fuzzer.name);
  await fc.assert(
    fc.asyncProperty(fuzzer.commands, async (command) => tally.add(await fuzzer.check(command))),
    { numRuns: cases, seed, endOnFailure: true },
  );
  const coverage = fuzzer.coverageProblem();
  const summary = tally.summary();
  return {
    description: fuzzer.description,
    ...summary,
    coverage: coverage ?? 'ok',
    status_words_by_sw1: Object.fromEntries([...fuzzer.counts].sort(([a], [b]) => a.localeCompare(b))),
    pass: summary.cases >= MIN_CASES && summary.throws === 0 && summary.failures === 0 && !coverage,
  };
}

async function fuzzFrameCodec(cases: number, seed: number) {
  const started = performance.now();
  const properties: Record<string, ReturnType<Tally['summary']> & { description: string }> = {};
  for (const property of FRAME_CODEC_PROPERTIES) {
    const tally = new Tally(`frame_codec.${property.name}`);
    fc.assert(
      fc.property(property.arbitrary, (input) => tally.add(property.check(input))),
      { numRuns: cases, seed },
    );
    properties[property.name] = { description: property.description, ...tally.summary() };
  }
  const all = Object.values(properties);
  const sum = (f: (p: (typeof all)[number]) => number) => all.reduce((n, p) => n + f(p), 0);
  return {
    description: 'every frame codec property, `--cases` cases each',
    cases: sum((p) => p.cases),
    throws: sum((p) => p.throws),
    failures: sum((p) => p.failures),
    seconds: Math.round((performance.now() - started) / 100) / 10,
    properties,
    pass: all.every((p) => p.cases >= MIN_CASES && p.throws === 0 && p.failures === 0),
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { cases: { type: 'string' }, target: { type: 'string' }, seed: { type: 'string' } },
  });
  const cases = Number(values.cases ?? MIN_CASES);
  if (!Number.isSafeInteger(cases) || cases < 1) throw new Error(`--cases must be a positive integer`);
  if (values.target !== undefined && !(TARGETS as readonly string[]).includes(values.target))
    throw new Error(`--target must be one of ${TARGETS.join(', ')}`);
  const targets: readonly Target[] = values.target ? [values.target as Target] : TARGETS;
  // fast-check seeds are 32-bit integers; a fresh one per run unless replaying.
  const seed = values.seed !== undefined ? Number(values.seed) : (Date.now() ^ (Math.random() * 2 ** 32)) | 0;

  const ran: Record<string, unknown> = {};
  // Exit status: 1 for a bad case (or no coverage), whatever the depth; `pass` also wants the depth.
  let clean = true;
  for (const target of targets) {
    const run = {
      command: benchCommand(),
      date: new Date().toISOString(),
      node: process.version,
      machine: { cpus: os.cpus().length, kernel: os.release(), loadavg_1m: os.loadavg()[0] },
      seed,
    };
    const outcome =
      target === 'piv_apdu' ? await fuzzPivApdu(cases, seed) : await fuzzFrameCodec(cases, seed);
    ran[target] = { ...run, ...outcome };
    const covered = !('coverage' in outcome) || outcome.coverage === 'ok';
    clean &&= outcome.throws === 0 && outcome.failures === 0 && covered;
    console.log(JSON.stringify({ target, ...run, ...outcome }, null, 2));
  }
  // Read only now: a run of the other target may have finished meanwhile.
  const previous = readBenchResult('fuzz-depth') as { results?: Record<string, unknown> } | undefined;
  const results: Record<string, unknown> = { ...(previous?.results ?? {}), ...ran };
  const file = writeBenchResult('fuzz-depth', {
    benchmark: 'fuzz-depth',
    minimum_cases: MIN_CASES,
    results,
    pass: TARGETS.every((t) => (results[t] as { pass?: boolean } | undefined)?.pass === true),
  });
  console.log(`written to ${file}`);
  if (!clean) process.exitCode = 1;
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});
