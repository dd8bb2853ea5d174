import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  buildReport,
  DOC_TABLE_BEGIN,
  DOC_TABLE_END,
  renderChart,
  renderMarkdown,
  spliceDocTable,
  writeReport,
  type ReportRow,
} from '../../bench/report.js';

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
}

/**
 * A strict parser for the XML the SVG writer emits (elements, attributes in double quotes, text,
 * entity references): throws on an unclosed or mismatched tag, a bad attribute, a stray `<` or `&`,
 * or anything after the root element.
 */
function parseXml(xml: string): XmlElement {
  const token = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>|([^<]+)/gy;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  let m: RegExpExecArray | null;
  let at = 0;
  while (at < xml.length) {
    token.lastIndex = at;
    m = token.exec(xml);
    if (!m) throw new Error(`not well-formed at ${at}: ${xml.slice(at, at + 40)}`);
    at = token.lastIndex;
    const [, closing, name, attrText, selfClosing, text] = m;
    if (text !== undefined) {
      if (/&(?!#\d+;|amp;|lt;|gt;|quot;|apos;)/.test(text)) throw new Error(`bare & in ${text}`);
      if (stack.length === 0 && text.trim() !== '') throw new Error(`text outside the root: ${text}`);
      continue;
    }
    if (closing) {
      const open = stack.pop();
      if (open?.name !== name) throw new Error(`</${name}> closes <${open?.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const a of attrText!.matchAll(/([\w:-]+)="([^"]*)"/g)) {
      if (a[1]! in attrs) throw new Error(`attribute ${a[1]} twice`);
      attrs[a[1]!] = a[2]!;
    }
    const element: XmlElement = { name: name!, attrs, children: [] };
    if (stack.length > 0) stack[stack.length - 1]!.children.push(element);
    else if (root) throw new Error('a second root element');
    else root = element;
    if (!selfClosing) stack.push(element);
  }
  if (!root || stack.length > 0) throw new Error('unclosed element');
  return root;
}

function all(e: XmlElement, name: string): XmlElement[] {
  return [...(e.name === name ? [e] : []), ...e.children.flatMap((c) => all(c, name))];
}

// Small results in the shape the benchmarks write; figures chosen so some targets are met, some not.
const fixtures = {
  'pcsc-roundtrip': {
    'ifd-cardlink': { median_ms: 0.2, p99_ms: 1.5 },
    'vpcd-quickack': { median_ms: 0.3, p99_ms: 2.5, target_median_ms: 1, pass: true },
    vpcd: { median_ms: 44, p99_ms: 88 },
  },
  'pkcs11-test-login': {
    cardlink_driver_ms: { median: 174.2 },
    vpcd_quickack_ms: { median: 190.6 },
    debian_vpcd_ms: { median: 17081.9 },
  },
  'daemon-chain': {
    date: '2026-12-05T00:00:00.000Z',
    command: 'node dist/bench/daemon-chain.js',
    results: {
      remote_round_trips: {
        list_objects: { measured: 0, target: 0, pass: true, local_apdus: 28 },
        login: { measured: 2, target: 1, pass: false, local_apdus: 1 },
        open_session: { remote: 0, local_apdus: 30 },
      },
      sign_latency: {
        p256_9e: {
          p50_ms: 1.2,
          p99_ms: 4,
          min_ms: 0.9,
          p90_ms: 1.8,
          max_ms: 20,
          n: 5,
          target_p50_ms: 2,
          pass: true,
          cpu_ms_per_sign: { application: 0.1, pcscd: 0.2, daemon: 0.5, bench_process: 0.8 },
          samples_ms: [1.2, 0.9, 20, 1.1, 1.5],
        },
        rsa2048_9a: {
          p50_ms: 3.5,
          p99_ms: 7,
          min_ms: 1.2,
          p90_ms: 2.8,
          max_ms: 12,
          n: 300,
          target_p50_ms: 3,
          pass: false,
          cpu_ms_per_sign: { application: 0.2, pcscd: 0.3, daemon: 0.6, bench_process: 1.1 },
        },
      },
      platform_round_trip: { peer_busy: { p50_ms: 0.085 } },
      pkcs11_test_login: { rtt_0ms: { median_ms: 110, remote_round_trips_per_run: 39 } },
      hand_over: { to_card_present_ms: { median: 13.1 }, hand_over_request_ms: { median: 3.5 } },
    },
  },
  'demo-startup': {
    cold: {
      card_present_ms: { median: 4575, max: 4970 },
      ready_line_ms: { median: 4698 },
      target_ms: 15000,
      pass: true,
    },
    warm: {
      card_present_ms: { median: 3810, max: 4640 },
      ready_line_ms: { median: 3934 },
      target_ms: 3000,
      pass: false,
    },
  },
};

const runAll = {
  benchmark: 'run-all',
  command: 'npm run bench',
  date: '2026-12-05T16:40:00Z',
  machine: { cpus: 2, loadavg_1m_start: 1.2, loadavg_1m_end: 2.5 },
  seconds: 512.3,
  target_seconds: 600,
  pass: true,
  steps: [
    { step: 'build', seconds: 20.1 },
    { step: 'daemon-idle-rss', seconds: 150.4 },
    { step: 'server-throughput', seconds: 90 },
  ],
};

function row(rows: ReportRow[], figure: string): ReportRow {
  const r = rows.find((x) => x.figure === figure);
  assert.ok(r, `row "${figure}" in ${rows.map((x) => x.figure).join('; ')}`);
  return r;
}

describe('benchmark report', () => {
  const report = buildReport(fixtures);

  it('has a row per figure with its value, anchor, target and met from the results', () => {
    const hop = row(report.rows, 'APDU hop through pcscd (p50 / p99)');
    assert.equal(hop.value, '0.2 / 1.5 ms');
    assert.equal(hop.anchor, 'Debian vpcd 44 / 88 ms');
    assert.equal(hop.met, null);
    const p11Vpcd = row(
      report.rows,
      'pkcs11-tool --test --login, card behind vpcd with TCP_QUICKACK (median)',
    );
    assert.deepEqual([p11Vpcd.value, p11Vpcd.anchor], ['191 ms', 'without TCP_QUICKACK 17082 ms']);
    const vpcdHop = row(report.rows, 'vpcd hop (p50 / p99)');
    assert.deepEqual(
      [vpcdHop.value, vpcdHop.anchor, vpcdHop.target, vpcdHop.met],
      ['0.3 / 2.5 ms', 'bridge 0.2 / 1.5 ms; stock Debian vpcd 44 / 88 ms', 'median ≤ 1 ms', true],
    );
    const p256 = row(report.rows, 'C_Sign latency p256_9e (p50 / p99)');
    assert.deepEqual([p256.value, p256.target, p256.met], ['1.2 / 4 ms (n 5)', 'p50 ≤ 2 ms', true]);
    assert.equal(row(report.rows, 'C_Sign latency rsa2048_9a (p50 / p99)').met, false);
    assert.equal(row(report.rows, 'remote round trips: list_objects').met, true);
    const login = row(report.rows, 'remote round trips: login');
    assert.deepEqual([login.value, login.target, login.met], ['2', '≤ 1', false]);
    // open_session has no target: not a row of its own.
    assert.equal(report.rows.filter((r) => r.figure.includes('open_session')).length, 0);
    assert.equal(row(report.rows, 'daemon CPU per signature p256_9e').value, '0.5 ms');
    assert.equal(row(report.rows, 'token hand-over to card present (median)').value, '13.1 ms');
    const cold = row(report.rows, 'cardlink demo start to card present, cold (median)');
    const warm = row(report.rows, 'cardlink demo start to card present, warm (median)');
    assert.deepEqual(
      [cold.target, cold.met, warm.target, warm.met],
      ['≤ 15000 ms', true, '≤ 3000 ms', false],
    );
  });

  it("has the whole run's duration next to its slowest step, against the 10 minutes", () => {
    const withRun = buildReport({ ...fixtures, 'run-all': runAll });
    const run = row(withRun.rows, 'npm run bench, whole run');
    assert.deepEqual(
      [run.value, run.anchor, run.target, run.met, run.source],
      [
        '512.3 s',
        'slowest step daemon-idle-rss 150.4 s; load average 1.2 → 2.5',
        '≤ 600 s',
        true,
        'run-all.json',
      ],
    );
    const over = buildReport({ ...fixtures, 'run-all': { ...runAll, seconds: 744, pass: false } });
    assert.deepEqual(
      [row(over.rows, 'npm run bench, whole run').value, row(over.rows, 'npm run bench, whole run').met],
      ['744 s', false],
    );
    assert.deepEqual(withRun.sources['run-all'], { date: runAll.date, command: 'npm run bench' });
    assert.match(
      renderMarkdown(withRun, 'c.svg'),
      /\| npm run bench, whole run \| 512\.3 s \| .* \| ≤ 600 s \| met \| run-all\.json \|/,
    );
    assert.match(
      renderMarkdown(withRun, 'c.svg'),
      /\| run-all\.json \| 2026-12-05T16:40:00Z \| `npm run bench` \|/,
    );
    // Without the file (a benchmark run alone): not measured, nothing claimed.
    const missing = row(report.rows, 'npm run bench, whole run');
    assert.deepEqual([missing.value, missing.met], ['not measured', null]);
  });

  it('says "not measured" where a result or a field is missing, and claims no target met', () => {
    const wan = row(report.rows, 'pkcs11-tool --test --login through the chain, 20 ms added RTT (median)');
    assert.equal(wan.value, 'not measured');
    const p256Server = row(report.rows, 'server throughput p256 (100 sessions)');
    assert.deepEqual([p256Server.value, p256Server.met], ['not measured', null]);
    const rss = row(report.rows, 'daemon RSS, idle after login');
    assert.deepEqual([rss.value, rss.met], ['not measured', null]);
    const md = renderMarkdown(report, 'c_sign-latency.svg');
    assert.match(md, /\| remote round trips: login \| 2 \| .* \| ≤ 1 \| \*\*not met\*\* \|/);
    assert.match(md, /\| server-throughput\.json \| not measured \|/);
  });

  it('draws a well-formed SVG with one distribution path per algorithm', () => {
    const svg = parseXml(renderChart(report));
    assert.equal(svg.name, 'svg');
    assert.equal(svg.attrs.xmlns, 'http://www.w3.org/2000/svg');
    const paths = all(svg, 'path');
    assert.equal(paths.length, 2);
    // p256 from its samples (5 steps, solid), rsa2048 from its percentiles (dashed).
    assert.equal(paths[0]!.attrs['stroke-dasharray'], undefined);
    assert.equal(paths[0]!.attrs.d!.match(/V/g)!.length, 5);
    assert.equal(paths[1]!.attrs['stroke-dasharray'], '6 4');
    for (const p of paths) assert.match(p.attrs.d!, /^M[\d.]+,[\d.]+( [HVL][\d.,]+)+$/);
    assert.ok(all(svg, 'text').length > 10);
  });

  it('writes latest.json, latest.md and the chart next to the results it read', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-report-'));
    try {
      for (const [name, value] of Object.entries(fixtures)) {
        fs.writeFileSync(path.join(dir, `${name}.json`), JSON.stringify(value));
      }
      writeReport(dir);
      const latest = JSON.parse(fs.readFileSync(path.join(dir, 'latest.json'), 'utf8')) as {
        rows: ReportRow[];
      };
      assert.deepEqual(latest.rows, report.rows);
      assert.match(
        fs.readFileSync(path.join(dir, 'latest.md'), 'utf8'),
        /!\[C_Sign latency distributions\]\(c_sign-latency\.svg\)/,
      );
      assert.equal(parseXml(fs.readFileSync(path.join(dir, 'c_sign-latency.svg'), 'utf8')).name, 'svg');
      assert.deepEqual(
        fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
        [],
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('replaces the table between the markers of a document and keeps the rest', () => {
    const doc = `# Performance\n\nintro\n\n${DOC_TABLE_BEGIN}\n| old | table |\n${DOC_TABLE_END}\n\nafter\n`;
    const out = spliceDocTable(doc, report);
    assert.ok(out.startsWith(`# Performance\n\nintro\n\n${DOC_TABLE_BEGIN}\n\n| figure | value |`));
    assert.ok(out.endsWith(`${DOC_TABLE_END}\n\nafter\n`));
    assert.doesNotMatch(out, /\| old \| table \|/);
    assert.match(out, /\| cardlink demo start to card present, warm \(median\) \| 3810 ms \(max 4640\) \|/);
    // Splicing again gives the same document: the markers stay, nothing accumulates.
    assert.equal(spliceDocTable(out, report), out);
    assert.throws(() => spliceDocTable('# no markers\n', report), /lacks/);
  });
});
