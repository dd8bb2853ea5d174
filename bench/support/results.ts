/**
 * Where every benchmark leaves its result: `bench/results/<name>.json`, written whole or not at all
 * (a temporary file renamed over the old one), so an interrupted run never leaves half a JSON; and
 * the command line that produced it, as it is recorded in the result.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The checkout this benchmark runs from: this file is dist/bench/support/results.js in it. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, '');

/** This process's command line, relative to the repository (`node dist/bench/x.js --n 50`). */
export function benchCommand(): string {
  return ['node', path.relative(REPO_ROOT, process.argv[1]!), ...process.argv.slice(2)].join(' ');
}

/** bench/results/`name`.json as it was last written, or undefined when there is none. */
export function readBenchResult(name: string): unknown {
  const file = path.join(REPO_ROOT, 'bench', 'results', `${name}.json`);
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as unknown) : undefined;
}

/** Writes `result` as bench/results/`name`.json; returns the path relative to the repository. */
export function writeBenchResult(name: string, result: unknown): string {
  const outDir = path.join(REPO_ROOT, 'bench', 'results');
  fs.mkdirSync(outDir, { recursive: true });
  const out = path.join(outDir, `${name}.json`);
  fs.writeFileSync(`${out}.tmp`, `${JSON.stringify(result, null, 2)}\n`);
  fs.renameSync(`${out}.tmp`, out);
  return path.relative(REPO_ROOT, out);
}
