/**
 * The benchmark report: reads every result in bench/results/*.json and writes
 * bench/results/latest.json and latest.md (one row per figure: value, anchor, target, met) and
 * c_sign-latency.svg (the C_Sign latency distributions). Run at the end of `npm run bench`, or alone
 * on the results there are: `node dist/bench/report.js [results directory]`.
 *
 * It measures nothing: every figure comes from a benchmark's JSON. A figure a JSON lacks is
 * "not measured", never estimated; a figure without a recorded target has met = null.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { cdfChart, cdfFromSamples, type CdfSeries } from './support/svg.js';

export interface ReportRow {
  figure: string;
  value: string;
  anchor: string;
  target: string;
  /** true/false against the target; null when no target is recorded or the figure is missing. */
  met: boolean | null;
  source: string;
}

export interface Report {
  rows: ReportRow[];
  chart: CdfSeries[];
  sources: Record<string, { date?: string; command?: string }>;
}

/** The result files the report reads, by name (bench/results/<name>.json). */
export const SOURCES = [
  'pcsc-roundtrip',
  'daemon-chain',
  'pkcs11-test-login',
  'server-throughput',
  'daemon-idle-rss',
  'demo-startup',
  'personalization',
  'run-all',
] as const;

const NOT_MEASURED = 'not measured';
const NO_TARGET = 'none recorded';

/** A field by its path, or undefined when any step is missing. */
function get(obj: unknown, ...keys: string[]): unknown {
  let v = obj;
  for (const k of keys) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

function num(obj: unknown, ...keys: string[]): number | undefined {
  const v = get(obj, ...keys);
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function bool(obj: unknown, ...keys: string[]): boolean | null {
  const v = get(obj, ...keys);
  return typeof v === 'boolean' ? v : null;
}

/** `template` with its numbers, or "not measured" when one of them is missing. */
function fmt(parts: readonly (number | undefined)[], template: (...n: number[]) => string): string {
  return parts.every((p) => p !== undefined) ? template(...(parts as number[])) : NOT_MEASURED;
}

export function buildReport(results: Readonly<Record<string, unknown>>): Report {
  const rows: ReportRow[] = [];
  const pcsc = results['pcsc-roundtrip'];
  const chain = results['daemon-chain'];
  const p11 = results['pkcs11-test-login'];
  const server = results['server-throughput'];
  const rss = results['daemon-idle-rss'];
  const demo = results['demo-startup'];
  const runAll = results['run-all'];
  const chainR = get(chain, 'results');

  // APDU hop through pcscd, next to Debian's vpcd in the same run.
  rows.push({
    figure: 'APDU hop through pcscd (p50 / p99)',
    value: fmt(
      [num(pcsc, 'ifd-cardlink', 'median_ms'), num(pcsc, 'ifd-cardlink', 'p99_ms')],
      (a, b) => `${a} / ${b} ms`,
    ),
    anchor: fmt(
      [num(pcsc, 'vpcd', 'median_ms'), num(pcsc, 'vpcd', 'p99_ms')],
      (a, b) => `Debian vpcd ${a} / ${b} ms`,
    ),
    target: NO_TARGET,
    met: null,
    source: 'pcsc-roundtrip.json',
  });

  // The daemon's vpcd side (TCP_QUICKACK) next to the bridge and stock vpcd, all in the same run.
  const vpcdTarget = num(pcsc, 'vpcd-quickack', 'target_median_ms');
  rows.push({
    figure: 'vpcd hop (p50 / p99)',
    value: fmt(
      [num(pcsc, 'vpcd-quickack', 'median_ms'), num(pcsc, 'vpcd-quickack', 'p99_ms')],
      (a, b) => `${a} / ${b} ms`,
    ),
    anchor: fmt(
      [
        num(pcsc, 'ifd-cardlink', 'median_ms'),
        num(pcsc, 'ifd-cardlink', 'p99_ms'),
        num(pcsc, 'vpcd', 'median_ms'),
        num(pcsc, 'vpcd', 'p99_ms'),
      ],
      (a, b, c, d) => `bridge ${a} / ${b} ms; stock Debian vpcd ${c} / ${d} ms`,
    ),
    target: vpcdTarget === undefined ? NO_TARGET : `median ≤ ${vpcdTarget} ms`,
    met: vpcdTarget === undefined ? null : bool(pcsc, 'vpcd-quickack', 'pass'),
    source: 'pcsc-roundtrip.json',
  });

  // C_Sign latency per algorithm through the whole chain.
  const signLatency = get(chainR, 'sign_latency');
  const algorithms = signLatency && typeof signLatency === 'object' ? Object.keys(signLatency) : [];
  const chart: CdfSeries[] = [];
  for (const alg of algorithms.length > 0 ? algorithms : ['(none)']) {
    const s = get(signLatency, alg);
    const target = num(s, 'target_p50_ms');
    rows.push({
      figure: `C_Sign latency ${alg} (p50 / p99)`,
      value: fmt([num(s, 'p50_ms'), num(s, 'p99_ms'), num(s, 'n')], (a, b, n) => `${a} / ${b} ms (n ${n})`),
      anchor: fmt(
        [num(chainR, 'platform_round_trip', 'peer_busy', 'p50_ms')],
        (a) => `bare TLS + ws round trip p50 ${a} ms`,
      ),
      target: target === undefined ? NO_TARGET : `p50 ≤ ${target} ms`,
      met: target === undefined ? null : bool(s, 'pass'),
      source: 'daemon-chain.json',
    });
    const samples = get(s, 'samples_ms');
    if (Array.isArray(samples) && samples.length > 0 && samples.every((v) => typeof v === 'number')) {
      chart.push({ label: alg, points: cdfFromSamples(samples as number[]), fromPercentiles: false });
    } else {
      const points = (
        [
          ['min_ms', 0],
          ['p50_ms', 0.5],
          ['p90_ms', 0.9],
          ['p99_ms', 0.99],
          ['max_ms', 1],
        ] as const
      ).flatMap(([key, fraction]) => {
        const ms = num(s, key);
        return ms === undefined ? [] : [{ ms, fraction }];
      });
      if (points.length > 1) chart.push({ label: alg, points, fromPercentiles: true });
    }
  }

  // Remote round trips per PKCS#11 operation.
  const trips = get(chainR, 'remote_round_trips');
  const ops =
    trips && typeof trips === 'object'
      ? Object.keys(trips).filter((k) => num(trips, k, 'target') !== undefined)
      : [];
  if (ops.length === 0) {
    rows.push({
      figure: 'remote round trips per PKCS#11 operation',
      value: NOT_MEASURED,
      anchor: '—',
      target: NO_TARGET,
      met: null,
      source: 'daemon-chain.json',
    });
  }
  for (const op of ops) {
    rows.push({
      figure: `remote round trips: ${op}`,
      value: fmt([num(trips, op, 'measured')], (a) => `${a}`),
      anchor: fmt([num(trips, op, 'local_apdus')], (a) => `daemon answered ${a} locally`),
      target: `≤ ${num(trips, op, 'target')}`,
      met: bool(trips, op, 'pass'),
      source: 'daemon-chain.json',
    });
  }

  // pkcs11-tool --test --login: locally next to vpcd, and through the chain at 0 and 20 ms RTT.
  rows.push({
    figure: 'pkcs11-tool --test --login, card in pcscd (median)',
    value: fmt([num(p11, 'cardlink_driver_ms', 'median')], (a) => `${a.toFixed(0)} ms`),
    anchor: fmt([num(p11, 'debian_vpcd_ms', 'median')], (a) => `Debian vpcd ${a.toFixed(0)} ms`),
    target: NO_TARGET,
    met: null,
    source: 'pkcs11-test-login.json',
  });
  rows.push({
    figure: 'pkcs11-tool --test --login, card behind vpcd with TCP_QUICKACK (median)',
    value: fmt([num(p11, 'vpcd_quickack_ms', 'median')], (a) => `${a.toFixed(0)} ms`),
    anchor: fmt([num(p11, 'debian_vpcd_ms', 'median')], (a) => `without TCP_QUICKACK ${a.toFixed(0)} ms`),
    target: NO_TARGET,
    met: null,
    source: 'pkcs11-test-login.json',
  });
  for (const [key, label] of [
    ['rtt_0ms', '0 ms'],
    ['rtt_20ms', '20 ms'],
  ] as const) {
    const t = get(chainR, 'pkcs11_test_login', key);
    const perRun = num(t, 'remote_round_trips_per_run');
    rows.push({
      figure: `pkcs11-tool --test --login through the chain, ${label} added RTT (median)`,
      value: fmt([num(t, 'median_ms')], (a) => `${a} ms`),
      anchor:
        perRun === undefined
          ? NOT_MEASURED
          : key === 'rtt_0ms'
            ? `${perRun} remote round trips per run`
            : `${perRun} round trips × 20 ms = ${Math.round(perRun * 20)} ms of network alone`,
      target: NO_TARGET,
      met: null,
      source: 'daemon-chain.json',
    });
  }

  // Server throughput next to raw node:crypto in the same run.
  for (const alg of ['p256', 'rsa2048']) {
    const s = get(server, alg);
    const ratio = num(s, 'target_ratio');
    rows.push({
      figure: `server throughput ${alg} (100 sessions)`,
      value: fmt(
        [num(s, 'server_signs_per_s'), num(s, 'ratio_server_to_raw')],
        (a, r) => `${a} signs/s (${Math.round(r * 100)} % of raw)`,
      ),
      anchor: fmt([num(s, 'raw_node_crypto_signs_per_s')], (a) => `raw node:crypto ${a} signs/s`),
      target: ratio === undefined ? NO_TARGET : `≥ ${Math.round(ratio * 100)} % of raw`,
      met: ratio === undefined ? null : bool(s, 'meets_target'),
      source: 'server-throughput.json',
    });
  }

  // Server memory per idle session next to the bare node:tls + ws floor.
  const idle = get(server, 'idle_connections');
  const memTarget = num(idle, 'target_kib_per_connection');
  rows.push({
    figure: 'server memory per idle session (RSS)',
    value: fmt(
      [num(idle, 'kib_per_connection', 'rss'), num(idle, 'opened')],
      (a, n) => `${a} KiB (${n} sessions)`,
    ),
    anchor: fmt(
      [num(idle, 'platform_floor', 'kib_per_connection', 'rss')],
      (a) => `node:tls + ws floor ${a} KiB`,
    ),
    target: memTarget === undefined ? NO_TARGET : `≤ ${memTarget} KiB`,
    met: memTarget === undefined ? null : bool(idle, 'meets_target'),
    source: 'server-throughput.json',
  });

  // The daemon's RSS and its own CPU per signature.
  const rssTarget = num(rss, 'target', 'after_login_rss_mib');
  const builds = get(rss, 'builds');
  const others = builds && typeof builds === 'object' ? Object.keys(builds).filter((b) => b !== 'this') : [];
  rows.push({
    figure: 'daemon RSS, idle after login',
    value: fmt([num(rss, 'builds', 'this', 'median', 'after_login', 'rss_mib')], (a) => `${a} MiB`),
    anchor:
      others
        .map((b) => fmt([num(builds, b, 'median', 'after_login', 'rss_mib')], (a) => `build ${b} ${a} MiB`))
        .join(', ') ||
      fmt([num(rss, 'builds', 'this', 'median', 'logged_out', 'rss_mib')], (a) => `logged out ${a} MiB`),
    target: rssTarget === undefined ? NO_TARGET : `≤ ${rssTarget} MiB`,
    met: rssTarget === undefined ? null : bool(rss, 'pass'),
    source: 'daemon-idle-rss.json',
  });
  for (const alg of algorithms) {
    const cpu = get(signLatency, alg, 'cpu_ms_per_sign');
    rows.push({
      figure: `daemon CPU per signature ${alg}`,
      value: fmt([num(cpu, 'daemon')], (a) => `${a} ms`),
      anchor: fmt(
        [num(cpu, 'application'), num(cpu, 'pcscd'), num(cpu, 'bench_process')],
        (a, p, s) => `application ${a}, pcscd ${p}, card server ${s} ms`,
      ),
      target: NO_TARGET,
      met: null,
      source: 'daemon-chain.json',
    });
  }

  // Token hand-over to card present.
  rows.push({
    figure: 'token hand-over to card present (median)',
    value: fmt([num(chainR, 'hand_over', 'to_card_present_ms', 'median')], (a) => `${a} ms`),
    anchor: fmt(
      [num(chainR, 'hand_over', 'hand_over_request_ms', 'median')],
      (a) => `control request returned after ${a} ms`,
    ),
    target: NO_TARGET,
    met: null,
    source: 'daemon-chain.json',
  });

  // cardlink demo start to card present, cold and warm.
  for (const phase of ['cold', 'warm']) {
    const d = get(demo, phase);
    const target = num(d, 'target_ms');
    rows.push({
      figure: `cardlink demo start to card present, ${phase} (median)`,
      value: fmt(
        [num(d, 'card_present_ms', 'median'), num(d, 'card_present_ms', 'max')],
        (a, m) => `${a} ms (max ${m})`,
      ),
      anchor: fmt([num(d, 'ready_line_ms', 'median')], (a) => `ready line after ${a} ms`),
      target: target === undefined ? NO_TARGET : `≤ ${target} ms`,
      met: target === undefined ? null : bool(d, 'pass'),
      source: 'demo-startup.json',
    });
  }

  // Personalization: a new user's card with four certificates from the embedded CA.
  const perso = get(results['personalization'], 'results');
  const persoTarget = num(perso, 'new_user_card_total', 'target_p50_ms');
  rows.push({
    figure: 'personalization, new card with four CA certificates (p50 / p90)',
    value: fmt(
      [
        num(perso, 'new_user_card_total', 'p50_ms'),
        num(perso, 'new_user_card_total', 'p90_ms'),
        num(perso, 'new_user_card_total', 'n'),
      ],
      (a, b, n) => `${a} / ${b} ms (n ${n})`,
    ),
    anchor: fmt(
      [
        num(perso, 'anchor_openssl_cli_four_certificates', 'p50_ms'),
        num(perso, 'anchor_openxpki_two_certificates_cited_ms'),
      ],
      (a, x) => `openssl CLI, same four: ${a} ms; OpenXPKI (cited): ${x / 60_000} min for two`,
    ),
    target: persoTarget === undefined ? NO_TARGET : `p50 ≤ ${persoTarget} ms`,
    met: persoTarget === undefined ? null : bool(perso, 'new_user_card_total', 'pass'),
    source: 'personalization.json',
  });

  // The whole `npm run bench` (bench/run-all.sh): its duration, the slowest step beside it.
  const steps = (get(runAll, 'steps') as { step?: unknown; seconds?: unknown }[] | undefined) ?? [];
  const slowest = steps
    .filter(
      (x): x is { step: string; seconds: number } =>
        typeof x.step === 'string' && typeof x.seconds === 'number',
    )
    .sort((a, b) => b.seconds - a.seconds)[0];
  const runTarget = num(runAll, 'target_seconds');
  rows.push({
    figure: 'npm run bench, whole run',
    value: fmt([num(runAll, 'seconds')], (a) => `${a} s`),
    anchor: fmt(
      [
        slowest?.seconds,
        num(runAll, 'machine', 'loadavg_1m_start'),
        num(runAll, 'machine', 'loadavg_1m_end'),
      ],
      (s, l0, l1) => `slowest step ${slowest!.step} ${s} s; load average ${l0} → ${l1}`,
    ),
    target: runTarget === undefined ? NO_TARGET : `≤ ${runTarget} s`,
    met: runTarget === undefined ? null : bool(runAll, 'pass'),
    source: 'run-all.json',
  });

  const sources: Report['sources'] = {};
  for (const name of SOURCES) {
    const r = results[name];
    if (r === undefined) continue;
    const date = get(r, 'date');
    const command = get(r, 'command');
    sources[name] = {
      ...(typeof date === 'string' ? { date } : {}),
      ...(typeof command === 'string' ? { command } : {}),
    };
  }
  return { rows, chart, sources };
}

function metCell(met: boolean | null): string {
  return met === null ? '—' : met ? 'met' : '**not met**';
}

function cell(text: string): string {
  return text.replace(/\|/g, '\\|');
}

/** The rows as a Markdown table. */
export function renderTable(report: Report): string {
  return [
    '| figure | value | anchor (same run) | target | met | source |',
    '| --- | --- | --- | --- | --- | --- |',
    ...report.rows.map(
      (r) => `| ${[r.figure, r.value, r.anchor, r.target, metCell(r.met), r.source].map(cell).join(' | ')} |`,
    ),
  ].join('\n');
}

/** Which run each result comes from, as a Markdown table. */
export function renderSources(report: Report): string {
  return [
    '| result | date | command |',
    '| --- | --- | --- |',
    ...SOURCES.map((n) => {
      const s = report.sources[n];
      return s === undefined
        ? `| ${n}.json | ${NOT_MEASURED} | |`
        : `| ${n}.json | ${s.date ?? ''} | \`${s.command ?? ''}\` |`;
    }),
  ].join('\n');
}

export function renderMarkdown(report: Report, chartFile: string): string {
  return [
    '# Benchmark report',
    '',
    'Written by `node dist/bench/report.js` from `bench/results/*.json` (run by `npm run bench`).',
    '',
    renderTable(report),
    '',
    `![C_Sign latency distributions](${chartFile})`,
    '',
    renderSources(report),
    '',
  ].join('\n');
}

export function renderChart(report: Report): string {
  return cdfChart('C_Sign latency through the whole chain (cumulative)', report.chart);
}

export const DOC_TABLE_BEGIN = '<!-- bench/report.ts: table begin -->';
export const DOC_TABLE_END = '<!-- bench/report.ts: table end -->';

/**
 * `doc` with the report's table between its two markers (docs/performance.md), so the document
 * shows the figures of the last run without anyone copying them; throws when a marker is missing.
 */
export function spliceDocTable(doc: string, report: Report): string {
  const begin = doc.indexOf(DOC_TABLE_BEGIN);
  const end = doc.indexOf(DOC_TABLE_END);
  if (begin < 0 || end < begin) throw new Error(`the document lacks ${DOC_TABLE_BEGIN} … ${DOC_TABLE_END}`);
  const tables = `${renderTable(report)}\n\n${renderSources(report)}`;
  return `${doc.slice(0, begin + DOC_TABLE_BEGIN.length)}\n\n${tables}\n\n${doc.slice(end)}`;
}

/** Reads the results in `dir`, writes latest.json, latest.md and c_sign-latency.svg there. */
export function writeReport(dir: string): Report {
  const results: Record<string, unknown> = {};
  for (const name of SOURCES) {
    const file = path.join(dir, `${name}.json`);
    if (fs.existsSync(file)) results[name] = JSON.parse(fs.readFileSync(file, 'utf8')) as unknown;
  }
  const report = buildReport(results);
  const write = (name: string, text: string) => {
    fs.writeFileSync(path.join(dir, `${name}.tmp`), text);
    fs.renameSync(path.join(dir, `${name}.tmp`), path.join(dir, name));
  };
  write('c_sign-latency.svg', renderChart(report));
  write('latest.json', `${JSON.stringify({ generated: new Date().toISOString(), ...report }, null, 2)}\n`);
  write('latest.md', renderMarkdown(report, 'c_sign-latency.svg'));
  return report;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const dir = process.argv[2] ?? fileURLToPath(new URL('../../bench/results/', import.meta.url));
  const report = writeReport(dir);
  // Only the repository's own results go into its document; a directory given on the command line
  // is someone's experiment.
  if (process.argv[2] === undefined) {
    const doc = fileURLToPath(new URL('../../docs/performance.md', import.meta.url));
    fs.writeFileSync(doc, spliceDocTable(fs.readFileSync(doc, 'utf8'), report));
  }
  for (const r of report.rows)
    console.log(`${metCell(r.met).padEnd(11)} ${r.figure}: ${r.value} (${r.anchor}; target ${r.target})`);
  console.log(`wrote ${path.join(dir, 'latest.json')}, latest.md, c_sign-latency.svg`);
}
