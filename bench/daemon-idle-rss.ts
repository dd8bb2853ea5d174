/**
 * The daemon's resident memory when it has nothing to do. `cardlink daemon` runs as the systemd
 * unit runs it (`bin/cardlink daemon`, a config file, log level info, the device key in a file)
 * against real services: a private pcscd with our reader, a card server in this process (SQLite)
 * with a card for alice (and one for bob, for a compared build), and the test IdP in a process of
 * its own. VmRSS (with its anonymous and
 * file-backed parts) is read from /proc/<pid>/status in two states per run:
 *
 * - `logged_out`: started and ready, no token yet;
 * - `after_login`: the user's tokens handed over on the control socket (as `cardlink login` hands them
 *   over), the card inserted in the reader, the session idle;
 *
 * each once the daemon's CPU has gone quiet and again after `--idle-seconds` more (the settled
 * figure, which counts: see DEFAULT_IDLE_SECONDS).
 *
 *   npm run build && node dist/bench/daemon-idle-rss.js [--runs 2] [--idle-seconds 30] [--compare LABEL=CHECKOUT]
 *
 * `--compare` measures another built checkout's daemon (`CHECKOUT/bin/cardlink`, e.g. an older
 * commit extracted with `git archive` and built in /var/tmp) in the same run, against the same
 * services: the builds run side by side, each with a cardlink reader of the pcscd and a test user
 * of its own (one card each), and swap reader and user from one run to the next. Side by side, a comparison takes no
 * longer than one build alone, and both builds idle under the same load. Medians of the runs are
 * reported, the target (≤ 60 MiB after login, issue 15) against this checkout's.
 *
 * Writes bench/results/daemon-idle-rss.json and prints a summary. Needs root (private pcscd).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ControlClient } from '../daemon/control/control-client.js';
import { createTestCard, startTestCardServer, type TestCardServer } from '../test/support/card-server.js';
import { freePort } from '../test/support/free-port.js';
import { startTestIdpProcess } from '../test/support/idp-process.js';
import { TEST_ACCOUNTS, type TestIdpClient } from '../test/support/oidc-provider.js';
import { startPcscd, type PcscdInstance } from '../test/support/pcscd.js';
import { cpuMs, rssBreakdownMiB } from './support/proc-stats.js';
import { benchCommand, REPO_ROOT, writeBenchResult } from './support/results.js';
import { median, round } from './support/stats.js';

/** Slots of each cardlink reader. */
const READER_SLOTS = 4;
/** Runs unless --runs says otherwise (each run measures every build once, side by side). */
const DEFAULT_RUNS = 2;
/** The target of issue 15: the idle daemon after login, this checkout's build. */
const TARGET_AFTER_LOGIN_MIB = 60;
/** Quiet: the daemon used at most this much CPU in each of QUIET_WINDOWS windows of QUIET_WINDOW_MS. */
const QUIET_CPU_MS = 10;
const QUIET_WINDOW_MS = 1000;
const QUIET_WINDOWS = 2;
/** Longest wait for quiet; the readings are taken then anyway and marked `quiet: false`. */
const QUIET_MAX_MS = 20_000;
/**
 * Seconds of idling after quiet before the settled reading, in each state, unless --idle-seconds
 * says otherwise. V8 gives memory back only after the process has idled a while (its memory
 * reducer runs a few garbage collections some seconds apart); a daemon idles for hours, so the
 * settled figure is the one that counts. In the 60 s curves of earlier runs the drop came 10 to 30 s
 * after quiet, in the logged-out state; after login (another 30 s and more later) the daemon was
 * settled from its first reading on. So 30 s each: the after-login figure is read at least 60 s
 * after the start, and `rss_curve_mib` shows whether the logged-out drop came within the window.
 */
const DEFAULT_IDLE_SECONDS = 30;
/** The RSS curve of the idle period keeps one sample per this many seconds. */
const CURVE_STEP_SECONDS = 5;
/** How long the daemon may take to say "ready" and to insert the card. */
const START_TIMEOUT_MS = 30_000;
/** The run is abandoned after the time it should take (two idle periods per run) plus this. */
const WATCHDOG_SLACK_MS = 5 * 60_000;
/** Start, quiet and login of one daemon take about this much besides its idle periods. */
const PER_DAEMON_OVERHEAD_MS = 30_000;

/** The daemons being measured, for the watchdog to stop (pcscd dies with this process by itself). */
const runningDaemons = new Set<ChildProcess>();
/** A session bus address where nothing listens: no desktop keyring, the device key goes to a file. */
const NO_SESSION_BUS = 'unix:path=/nonexistent/cardlink-bench-bus';

interface Build {
  readonly label: string;
  /** The checkout's root; its daemon is `bin/cardlink daemon` there (built: dist/). */
  readonly checkout: string;
  readonly commit: string | undefined;
}

type Breakdown = ReturnType<typeof rssBreakdownMiB>;

interface Reading {
  /** At the first quiet moment. */
  readonly at_quiet: Breakdown;
  /** After idling `idleSeconds` more: the figure that counts. */
  readonly settled: Breakdown;
  /** Whether the CPU went quiet within QUIET_MAX_MS, and how long that took. */
  readonly quiet: boolean;
  readonly quiet_after_ms: number;
  /** VmRSS every CURVE_STEP_SECONDS of the idle period, MiB. */
  readonly rss_curve_mib: readonly number[];
}

interface RunResult {
  logged_out: Reading;
  after_login: Reading;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function gitCommit(dir: string): string | undefined {
  const r = spawnSync('git', ['-C', dir, 'describe', '--always', '--dirty', '--abbrev=7'], {
    encoding: 'utf8',
  });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/** Waits until the process's CPU goes quiet, reads VmRSS, idles `idleSeconds`, reads it again. */
async function idleReading(pid: number, idleSeconds: number): Promise<Reading> {
  const t0 = Date.now();
  let quietWindows = 0;
  let last = cpuMs(pid);
  while (quietWindows < QUIET_WINDOWS && Date.now() - t0 < QUIET_MAX_MS) {
    await sleep(QUIET_WINDOW_MS);
    const now = cpuMs(pid);
    quietWindows = now - last <= QUIET_CPU_MS ? quietWindows + 1 : 0;
    last = now;
  }
  const quietAfter = Date.now() - t0;
  const atQuiet = rssBreakdownMiB(pid);
  const curve = [atQuiet.rss];
  for (let s = CURVE_STEP_SECONDS; s <= idleSeconds; s += CURVE_STEP_SECONDS) {
    await sleep(CURVE_STEP_SECONDS * 1000);
    curve.push(rssBreakdownMiB(pid).rss);
  }
  await sleep((idleSeconds % CURVE_STEP_SECONDS) * 1000);
  return {
    at_quiet: atQuiet,
    settled: rssBreakdownMiB(pid),
    quiet: quietWindows >= QUIET_WINDOWS,
    quiet_after_ms: quietAfter,
    rss_curve_mib: curve,
  };
}

/** What one daemon of a run has to itself: a cardlink reader of the pcscd and a test user with a card. */
interface Slot {
  /** The reader's driver socket and name. */
  bridgeSocket: string;
  readerName: string;
  account: string;
}

interface Services {
  dir: string;
  serverUrl: string;
  idp: TestIdpClient;
  cardServer: TestCardServer;
  pcscd: PcscdInstance;
  slots: Slot[];
}

/** One daemon of `build` on `slot`: started, read idle, logged in, read idle, stopped. */
async function measureOnce(
  build: Build,
  services: Services,
  slot: Slot,
  runIndex: number,
  idleSeconds: number,
): Promise<RunResult> {
  const { idp, cardServer } = services;
  const dir = path.join(services.dir, `daemon-${build.label}-${runIndex}`);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const runtimeDir = path.join(dir, 'run');
  const configFile = path.join(dir, 'daemon.json');
  fs.writeFileSync(
    configFile,
    JSON.stringify({
      server: { url: services.serverUrl, caFile: cardServer.config.tls.certFile },
      login: { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource },
      reader: { bridgeSocket: slot.bridgeSocket, name: slot.readerName, slots: READER_SLOTS },
      deviceName: `bench-${build.label}`,
      stateDir: path.join(dir, 'state'),
      // In a file, as on a machine without a desktop keyring. With the default ("auto") a first
      // start loads the keyring library (native, with libdbus) only to find no keyring, and the
      // library stays mapped; every later start finds the file and never loads it. The idle
      // daemon is the later starts' (docs/performance.md gives the keyring's own cost).
      deviceKeyStore: 'file',
      runtimeDir,
      log: { level: 'info', file: path.join(dir, 'daemon.log') },
    }),
  );
  // bin/cardlink execs node: the child's pid is the daemon's.
  const child: ChildProcess = spawn(
    path.join(build.checkout, 'bin', 'cardlink'),
    ['daemon', '--config', configFile],
    {
      env: {
        ...process.env,
        // the launcher runs `node` from PATH: this benchmark's node
        PATH: `${path.dirname(process.execPath)}:${process.env['PATH'] ?? ''}`,
        DBUS_SESSION_BUS_ADDRESS: NO_SESSION_BUS,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  runningDaemons.add(child);
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`daemon not ready:\n${output}`)), START_TIMEOUT_MS);
      child.stdout!.on('data', () => {
        if (output.includes('cardlink daemon: ready')) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`daemon exited at start:\n${output}`));
      });
    });
    const pid = child.pid!;
    const loggedOut = await idleReading(pid, idleSeconds);

    const tokens = await idp.login({ account: slot.account });
    const control = await ControlClient.connect({
      socketPath: path.join(runtimeDir, 'control.sock'),
      secretFile: path.join(runtimeDir, 'control.secret'),
      clientName: 'cardlink-bench',
    });
    try {
      await control.request('hand-over-token', {
        accessToken: tokens.accessToken,
        ...(tokens.refreshToken ? { refreshToken: tokens.refreshToken } : {}),
        expiresAt: Math.floor(Date.now() / 1000) + tokens.expiresIn,
        issuer: idp.issuer,
        clientId: idp.clientId,
      });
      const deadline = Date.now() + START_TIMEOUT_MS;
      while (!(await control.request('cards')).some((c) => c.state === 'inserted')) {
        if (Date.now() > deadline) throw new Error(`the card was never inserted:\n${output}`);
        await sleep(100);
      }
    } finally {
      await control.close();
    }
    const afterLogin = await idleReading(pid, idleSeconds);
    return { logged_out: loggedOut, after_login: afterLogin };
  } finally {
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    runningDaemons.delete(child);
  }
}

function parseBuilds(compare: readonly string[]): Build[] {
  const builds: Build[] = [{ label: 'this', checkout: REPO_ROOT, commit: gitCommit(REPO_ROOT) }];
  for (const spec of compare) {
    const m = /^([A-Za-z0-9._-]+)=(.+)$/.exec(spec);
    if (!m) throw new Error(`--compare takes LABEL=CHECKOUT_DIR (got "${spec}")`);
    const checkout = path.resolve(m[2]!);
    if (!fs.existsSync(path.join(checkout, 'dist', 'bin', 'main.js')))
      throw new Error(`--compare ${m[1]}: ${checkout}/dist/bin/main.js does not exist (build it first)`);
    if (builds.some((b) => b.label === m[1])) throw new Error(`--compare: label "${m[1]}" used twice`);
    builds.push({ label: m[1]!, checkout, commit: gitCommit(checkout) });
  }
  // Two cardlink readers in one pcscd, two test users: this build and one other.
  if (builds.length > 2) throw new Error('--compare: one other build at a time');
  return builds;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      runs: { type: 'string' },
      'idle-seconds': { type: 'string' },
      compare: { type: 'string', multiple: true },
    },
  });
  const runs = Number(values.runs ?? DEFAULT_RUNS);
  if (!Number.isInteger(runs) || runs < 1) throw new Error('--runs takes a whole number >= 1');
  const idleSeconds = Number(values['idle-seconds'] ?? DEFAULT_IDLE_SECONDS);
  if (!Number.isInteger(idleSeconds) || idleSeconds < 0)
    throw new Error('--idle-seconds takes a whole number >= 0');
  const builds = parseBuilds(values.compare ?? []);
  const loadAtStart = os.loadavg()[0]!;
  const watchdogMs = runs * (2 * idleSeconds * 1000 + PER_DAEMON_OVERHEAD_MS) + WATCHDOG_SLACK_MS;
  const watchdog = setTimeout(() => {
    console.error(`daemon-idle-rss: abandoned after ${watchdogMs / 1000} s`);
    for (const daemon of runningDaemons) daemon.kill('SIGKILL');
    process.exit(2);
  }, watchdogMs);
  watchdog.unref();

  const parts: Partial<Services> = {};
  const perBuild = new Map<string, RunResult[]>(builds.map((b) => [b.label, []]));
  try {
    parts.idp = await startTestIdpProcess();
    parts.dir = await mkdtemp(path.join(os.tmpdir(), 'cardlink-bench-idle-'));
    const serverDir = path.join(parts.dir, 'server');
    fs.mkdirSync(serverDir);
    const port = await freePort();
    parts.serverUrl = `https://127.0.0.1:${port}/`;
    parts.cardServer = await startTestCardServer(serverDir, parts.idp, {
      listen: { host: '127.0.0.1', port },
      publicUrl: parts.serverUrl,
      deviceRegistration: 'automatic',
    });
    // One pcscd (one per process, test/support/pcscd.ts) with a cardlink reader per build.
    const names = ['cardlink Idle Reader', 'cardlink Idle Reader Two'];
    parts.pcscd = await startPcscd({
      cardlink: { slots: READER_SLOTS, friendlyName: names[0]! },
      ...(builds.length > 1 ? { secondCardlink: { slots: READER_SLOTS, friendlyName: names[1]! } } : {}),
    });
    const sockets = [parts.pcscd.socketPath, parts.pcscd.secondSocketPath];
    parts.slots = [];
    for (const [i, { id: account }] of TEST_ACCOUNTS.slice(0, builds.length).entries()) {
      await createTestCard(parts.cardServer, parts.idp, {
        label: `${account} card`,
        subject: account,
        pin: '424242',
        puk: '97531864',
      });
      parts.slots.push({ bridgeSocket: sockets[i]!, readerName: names[i]!, account });
    }
    const services = parts as Services;
    for (let run = 0; run < runs; run++) {
      // Side by side; build i takes slot i + run, so no build keeps one pcscd and user.
      const results = await Promise.allSettled(
        builds.map((build, i) =>
          measureOnce(build, services, services.slots[(i + run) % builds.length]!, run, idleSeconds),
        ),
      );
      for (const [i, settled] of results.entries()) {
        if (settled.status === 'rejected') throw settled.reason;
        const build = builds[i]!;
        const result = settled.value;
        perBuild.get(build.label)!.push(result);
        console.error(
          `run ${run + 1}/${runs} ${build.label}: ${result.logged_out.settled.rss} MiB logged out, ${result.after_login.settled.rss} MiB after login (at quiet: ${result.logged_out.at_quiet.rss}, ${result.after_login.at_quiet.rss})`,
        );
      }
    }
  } finally {
    await parts.pcscd?.stop();
    await parts.cardServer?.stop();
    await parts.idp?.close();
    if (parts.dir) await rm(parts.dir, { recursive: true, force: true });
  }

  // The median of an even count is a mean: rounded to the readings' 0.1 MiB.
  const mib = (values: number[]) => round(median(values), 1);
  const summary = (results: RunResult[], state: keyof RunResult) => ({
    rss_mib: mib(results.map((r) => r[state].settled.rss)),
    anon_mib: mib(results.map((r) => r[state].settled.anon)),
    file_mib: mib(results.map((r) => r[state].settled.file)),
    rss_at_quiet_mib: mib(results.map((r) => r[state].at_quiet.rss)),
    all_quiet: results.every((r) => r[state].quiet),
  });
  const buildResults = Object.fromEntries(
    builds.map((b) => {
      const results = perBuild.get(b.label)!;
      return [
        b.label,
        {
          checkout: b.checkout === REPO_ROOT ? '.' : b.checkout,
          commit: b.commit ?? null,
          median: {
            logged_out: summary(results, 'logged_out'),
            after_login: summary(results, 'after_login'),
          },
          runs: results,
        },
      ];
    }),
  );
  const ours = buildResults['this']!.median.after_login.rss_mib;
  const result = {
    benchmark: 'daemon-idle-rss',
    command: benchCommand(),
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      node: process.version,
      kernel: os.release(),
      loadavg_1m_start: loadAtStart,
      loadavg_1m_end: os.loadavg()[0]!,
    },
    method:
      `cardlink daemon (log level info, device key in a file, no keyring) against a private pcscd, a card server (SQLite) and the test IdP; ` +
      `VmRSS from /proc/<pid>/status once the daemon used <= ${QUIET_CPU_MS} ms CPU in ${QUIET_WINDOWS} consecutive ${QUIET_WINDOW_MS} ms windows ` +
      `(at most ${QUIET_MAX_MS / 1000} s; rss_at_quiet) and again after ${idleSeconds} s more of idling (rss_mib, the figure that counts): ` +
      `logged_out after "ready", after_login after a token hand-over and the card inserted; median of ${runs} runs, builds side by side (a pcscd and a test user each, swapped between runs)`,
    target: { after_login_rss_mib: TARGET_AFTER_LOGIN_MIB, build: 'this' },
    pass: ours <= TARGET_AFTER_LOGIN_MIB,
    builds: buildResults,
  };
  const file = writeBenchResult('daemon-idle-rss', result);
  for (const [label, r] of Object.entries(buildResults)) {
    console.log(
      `${label} (${r.commit ?? r.checkout}): ${r.median.logged_out.rss_mib} MiB logged out, ${r.median.after_login.rss_mib} MiB after login (anon ${r.median.after_login.anon_mib}, file ${r.median.after_login.file_mib})`,
    );
  }
  console.log(
    `target after login <= ${TARGET_AFTER_LOGIN_MIB} MiB: ${result.pass ? 'met' : 'not met'}; ${file}`,
  );
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
