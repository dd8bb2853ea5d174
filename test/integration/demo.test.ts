/**
 * `cardlink demo --yes` end to end, every part real: a private pcscd with the cardlink reader
 * (test/support/pcscd.ts), and the demo's own IdP, card server, card and daemon. The test waits for
 * the demo's ready line, runs each command it printed (pkcs11-tool list, sign, read the public key;
 * openssl verify; ssh-keygen -D; cardlink status), stops it with SIGINT and checks that every process
 * it started has exited and the reader is empty. A second run on the same state is ready again with
 * the same card and IdP keys (no second card); `--reset` starts over with a new card. Without --yes
 * and without a display, the demo prints a device code, which the test enters at the demo IdP's
 * pages as a person would. A taken port, no pcscd and no reader are refused with the fix.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DAEMON_NODE_OPTIONS, DAEMON_UV_THREADPOOL_SIZE } from '../../daemon/cli/daemon-process.js';
import { waitForCardAbsent } from '../../daemon/reader/pcsc-presence.js';
import { DEMO_READY_PREFIX } from '../../demo/run-demo.js';
import { demoPaths } from '../../demo/demo-state.js';
import { enterDeviceCode } from '../../demo/idp/idp-browser.js';
import { listCards } from '../../server/admin/index.js';
import { loadServerConfig } from '../../server/config/server-config.js';
import { openServerResources } from '../../server/config/server-resources.js';
import { cardlinkCli } from '../support/daemon.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';
import { alive, commandLine, descendants } from '../support/process-tree.js';

/** From start to the ready line, generous for a loaded 2-core machine (cold: key generation). */
const READY_TIMEOUT_MS = 180_000;
/** From SIGINT to exit. */
const STOP_TIMEOUT_MS = 60_000;
/** One printed command (PKCS#11 start-up and a card round trip per APDU). */
const COMMAND_TIMEOUT_MS = 60_000;

interface DemoRun {
  readonly child: ChildProcess;
  output(): string;
  /** Exit code, or the signal's name. */
  readonly exited: Promise<number | string>;
}

interface Outcome {
  code: number | null;
  output: string;
}

/** Runs a printed command line in a shell; `input` goes to its stdin (through a terminal with `tty`). */
function runLine(line: string, env: NodeJS.ProcessEnv, options: { tty?: boolean; input?: string } = {}) {
  return new Promise<Outcome>((resolve) => {
    // pkcs11-tool reads the PIN from a terminal only: `script` gives it one.
    const child = options.tty
      ? spawn('script', ['-qec', line, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'] })
      : spawn('sh', ['-c', line], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
    if (options.input !== undefined) {
      // After the prompt is up: a terminal in canonical mode would keep early input anyway, but
      // pkcs11-tool turns echo off first.
      setTimeout(() => child.stdin.end(options.input), 1000);
    } else child.stdin.end();
  });
}

describe('cardlink demo', { timeout: 900_000 }, () => {
  let pcscd: PcscdInstance;
  let dir: string;
  let stateDir: string;
  const paths = () => demoPaths(stateDir);

  /**
   * Starts the demo (with --yes unless `person` does the sign-in on seeing the output) and waits for
   * its ready block (up to "Press Ctrl-C").
   */
  async function startDemo(
    extra: string[] = [],
    person?: (outputSoFar: string) => Promise<boolean>,
  ): Promise<DemoRun> {
    const env = { ...pcscd.env };
    // No desktop: the demo signs in with a device code.
    delete env['DISPLAY'];
    delete env['WAYLAND_DISPLAY'];
    const child = cardlinkCli(
      [
        'demo',
        ...(person ? [] : ['--yes']),
        '--state-dir',
        stateDir,
        '--reader-socket',
        pcscd.socketPath,
        '--reader-name',
        pcscd.friendlyName,
        ...extra,
      ],
      env,
    );
    let text = '';
    child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    const exited = new Promise<number | string>((resolve) =>
      child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
    );
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`the demo was not ready in time:\n${text}`));
      }, READY_TIMEOUT_MS);
      let acting = false;
      const look = () => {
        if (person && !acting) {
          acting = true;
          void person(text).then(
            (done) => (acting = done),
            (error: unknown) => reject(error as Error),
          );
        }
        if (text.includes(DEMO_READY_PREFIX) && text.includes('Press Ctrl-C')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout!.on('data', look);
      void exited.then((how) => {
        clearTimeout(timer);
        reject(new Error(`the demo exited (${how}) before it was ready:\n${text}`));
      });
    });
    return { child, output: () => text, exited };
  }

  /** Stops the demo with `signal`; checks the exit, the processes it started and the empty reader. */
  async function stopDemo(run: DemoRun, signal: NodeJS.Signals): Promise<void> {
    const started = descendants(run.child.pid!);
    assert.ok(started.length > 0, 'the demo runs the daemon as a child');
    run.child.kill(signal);
    const timer = setTimeout(() => run.child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const how = await run.exited;
    clearTimeout(timer);
    assert.equal(how, 0, run.output());
    assert.match(run.output(), /daemon stopped; reader ".+" is empty/);
    assert.match(run.output(), /cardlink demo: stopped\n/);
    // The daemon dies with its parent at the latest (setpriv --pdeathsig): give it a moment.
    const deadline = Date.now() + 10_000;
    while (started.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(
      started.filter(alive).map((pid) => `${pid}: ${commandLine(pid)}`),
      [],
      'every process the demo started has exited',
    );
    await waitForCardAbsent(pcscd.readerName(0), 5000);
  }

  /** Runs a demo that must be refused; returns its exit code and stderr. */
  async function refusedDemo(args: string[], env: NodeJS.ProcessEnv = pcscd.env) {
    const child = cardlinkCli(['demo', '--yes', ...args], env);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    return { code, stderr };
  }

  const cardIdOf = (output: string) => /\(card ([0-9a-f-]{36}), user demo\)/.exec(output)?.[1];

  /** The demo user's cards in the demo server's database (with the demo stopped: SQLite is one process's). */
  async function demoCards(): Promise<string[]> {
    const config = loadServerConfig({ config: paths().serverConfigFile }, {});
    const resources = await openServerResources(config);
    try {
      return (await listCards({ storage: resources.storage })).map((c) => `${c.subject}:${c.id}`);
    } finally {
      await resources.close();
    }
  }

  before(async () => {
    pcscd = await startPcscd({ cardlink: { slots: 4, friendlyName: 'cardlink Demo Reader' } });
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-demo-test-'));
    stateDir = path.join(dir, 'state');
  });

  after(async () => {
    await pcscd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  let firstCardId: string | undefined;
  let firstIdpKeys: string | undefined;
  let firstIssuer: string | undefined;

  it('a first run is ready with a new card, and every command it prints works', async () => {
    const run = await startDemo(['--idp-port', '0', '--server-port', '0']);
    const out = run.output();
    try {
      assert.match(out, /^\[1\/6\] demo identity provider on http:\/\/127\.0\.0\.1:\d+ \.\.\. ok \(/m);
      assert.match(out, /^\[3\/6\] card for user "demo" .* \.\.\. created [0-9a-f-]{36} \(/m);
      assert.match(out, /^\[6\/6\] card in the reader \.\.\. ok, "cardlink Demo Reader 00 00"/m);
      firstCardId = cardIdOf(out);
      assert.ok(firstCardId, out);
      firstIssuer = /demo identity provider on (http:\/\/127\.0\.0\.1:\d+)/.exec(out)?.[1];

      // The secrets: shown once here, kept 0600, never in argv or the logs.
      const p = paths();
      const password = fs.readFileSync(p.passwordFile, 'utf8').trim();
      const pin = fs.readFileSync(p.pinFile, 'utf8').trim();
      assert.ok(out.includes(`password ${password}   (shown once; kept in ${p.passwordFile})`), out);
      assert.ok(out.includes(`card PIN:   ${pin}   (shown once; kept in ${p.pinFile})`), out);
      for (const file of [p.passwordFile, p.pinFile, p.pukFile, p.managementKeyFile, p.idpKeysFile])
        assert.equal(fs.statSync(file).mode & 0o777, 0o600, file);
      assert.equal(fs.statSync(p.root).mode & 0o777, 0o700);
      for (const pid of [run.child.pid!, ...descendants(run.child.pid!)]) {
        assert.ok(!commandLine(pid).includes(password), `no password in the argv of ${pid}`);
        assert.ok(!commandLine(pid).includes(pin), `no PIN in the argv of ${pid}`);
      }
      // node runs the demo's daemon as bin/cardlink runs it (daemon/cli/daemon-process.ts).
      const daemonPid = descendants(run.child.pid!).find((pid) => / daemon --config /.test(commandLine(pid)));
      assert.ok(daemonPid !== undefined, 'the demo runs the daemon');
      for (const option of DAEMON_NODE_OPTIONS) assert.ok(commandLine(daemonPid).includes(` ${option} `));
      assert.match(
        fs.readFileSync(`/proc/${daemonPid}/environ`, 'latin1'),
        new RegExp(`(^|\\0)UV_THREADPOOL_SIZE=${DAEMON_UV_THREADPOOL_SIZE}\\0`),
      );
      firstIdpKeys = fs.readFileSync(p.idpKeysFile, 'utf8');

      // Every printed command, as a user would paste it.
      const lines = out
        .split('\n')
        .filter((l) => l.startsWith('  $ '))
        .map((l) => l.slice(4));
      assert.equal(lines.length, 6, out);
      const results: Outcome[] = [];
      for (const line of lines) {
        const asksForPin = line.includes('--login');
        const result = await runLine(line, pcscd.env, asksForPin ? { tty: true, input: `${pin}\n` } : {});
        assert.equal(result.code, 0, `${line}\n${result.output}`);
        results.push(result);
      }
      const [list, sign, pubkey, verify, ssh, status] = results;
      assert.match(list!.output, /PIV AUTH pubkey/);
      assert.match(list!.output, /Certificate for Digital Signature/);
      assert.match(sign!.output, /Using signature algorithm SHA256-RSA-PKCS/);
      assert.ok(fs.statSync(path.join(p.tryDir, 'message.sig')).size === 256, 'an RSA-2048 signature');
      assert.ok(fs.statSync(path.join(p.tryDir, '9a-public.der')).size > 0, pubkey!.output);
      assert.match(verify!.output, /Verified OK/);
      assert.match(ssh!.output, /^ssh-rsa \S+ PIV AUTH pubkey$/m);
      assert.match(status!.output, /^user: demo$/m);
      assert.ok(status!.output.includes(`(${firstCardId}): in "cardlink Demo Reader 00 00"`), status!.output);

      // Nothing secret in the logs the demo's parts wrote.
      for (const log of [p.daemonLogFile, p.serverLogFile]) {
        const text = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
        assert.ok(!text.includes(password), `no password in ${log}`);
        assert.ok(!text.includes(pin), `no PIN in ${log}`);
      }
    } finally {
      await stopDemo(run, 'SIGINT');
    }
    assert.deepEqual(await demoCards(), [`demo:${firstCardId}`]);
  });

  it('a second run on the same state is ready with the same card, IdP and keys: no second card', async () => {
    assert.ok(firstCardId, 'the first run passed');
    const run = await startDemo();
    const out = run.output();
    try {
      assert.match(out, /^\[3\/6\] card for user "demo" .* \.\.\. reused [0-9a-f-]{36} \(/m);
      assert.equal(cardIdOf(out), firstCardId);
      assert.ok(out.includes(`demo identity provider on ${firstIssuer} ...`), out);
      // Shown once: now only where they are.
      assert.ok(out.includes(`password in ${paths().passwordFile}`), out);
      assert.ok(out.includes(`card PIN:   in ${paths().pinFile}`), out);
      assert.equal(fs.readFileSync(paths().idpKeysFile, 'utf8'), firstIdpKeys);

      // While it runs, the reader is taken: another demo is refused before it makes any state.
      const other = path.join(dir, 'other');
      const busy = await refusedDemo([
        ...['--state-dir', other, '--reader-socket', pcscd.socketPath],
        ...['--idp-port', '0', '--server-port', '0'],
      ]);
      assert.equal(busy.code, 1, busy.stderr);
      assert.match(busy.stderr, /the cardlink reader is in use by another program .*stop it/);
      assert.equal(fs.existsSync(other), false);
    } finally {
      await stopDemo(run, 'SIGTERM');
    }
    assert.deepEqual(await demoCards(), [`demo:${firstCardId}`]);
  });

  it('--reset starts over: a new card, new IdP keys, one card in the new server', async () => {
    assert.ok(firstCardId, 'the first run passed');
    const run = await startDemo(['--reset', '--idp-port', '0', '--server-port', '0']);
    const out = run.output();
    let cardId: string | undefined;
    try {
      assert.match(out, /--reset: removed /);
      assert.match(out, /\.\.\. created [0-9a-f-]{36} \(/);
      cardId = cardIdOf(out);
      assert.ok(cardId && cardId !== firstCardId, out);
      assert.notEqual(fs.readFileSync(paths().idpKeysFile, 'utf8'), firstIdpKeys);
    } finally {
      await stopDemo(run, 'SIGINT');
    }
    assert.deepEqual(await demoCards(), [`demo:${cardId}`]);
  });

  it('without --yes and without a display, the user signs in with the printed device code', async () => {
    const password = fs.readFileSync(paths().passwordFile, 'utf8').trim();
    const run = await startDemo([], async (out) => {
      const m = /open (http:\/\/127\.0\.0\.1:\d+\/device) and enter the code (\S+)/.exec(out);
      if (!m) return false;
      // The person: the verification page, the code, the login page with the demo password, consent.
      await enterDeviceCode(m[2]!, m[1]!, { id: 'demo', password });
      return true;
    });
    const out = run.output();
    try {
      assert.match(out, /^\[5\/6\] sign in as "demo" at the demo identity provider \.\.\. ok \(/m);
      assert.ok(out.includes(`user demo, password in ${paths().passwordFile}`), out);
      assert.ok(!out.includes(password), 'a later run does not show the password again');
    } finally {
      await stopDemo(run, 'SIGINT');
    }
  });

  it('a port already taken is refused with the fix, and a first run leaves no state behind', async () => {
    const blocker = (await import('node:net')).createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', () => resolve()));
    const port = (blocker.address() as { port: number }).port;
    const fresh = path.join(dir, 'fresh');
    try {
      const { code, stderr } = await refusedDemo([
        ...['--state-dir', fresh, '--reader-socket', pcscd.socketPath],
        ...['--idp-port', String(port), '--server-port', '0'],
      ]);
      assert.equal(code, 69, stderr);
      assert.match(
        stderr,
        new RegExp(`port ${port} on 127\\.0\\.0\\.1 \\(the demo identity provider\\) is in use`),
      );
      assert.match(stderr, /'cardlink demo --reset --state-dir .* --idp-port <port>'/);
      assert.match(stderr, /\[ERR_PORT_IN_USE\]/);
      assert.equal(fs.existsSync(fresh), false, 'no state directory');
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });

  it('pcscd not running, or running without the cardlink reader, is refused with the set-up command', async () => {
    const fresh = path.join(dir, 'fresh');
    const noPcscd = await refusedDemo(['--state-dir', fresh, '--reader-socket', pcscd.socketPath], {
      ...pcscd.env,
      PCSCLITE_CSOCK_NAME: path.join(dir, 'no-pcscd.comm'),
    });
    assert.equal(noPcscd.code, 69, noPcscd.stderr);
    assert.match(noPcscd.stderr, /pcscd is not running: start it .*install-scripts\/debian\/setup\.sh/);
    assert.match(noPcscd.stderr, /\[ERR_PCSCD_UNAVAILABLE\]/);
    const noReader = await refusedDemo([
      '--state-dir',
      fresh,
      '--reader-socket',
      path.join(dir, 'no-reader.sock'),
    ]);
    assert.equal(noReader.code, 69, noReader.stderr);
    assert.match(
      noReader.stderr,
      /pcscd runs without the cardlink reader .*install-scripts\/debian\/setup\.sh/,
    );
    assert.match(noReader.stderr, /\[ERR_READER_DRIVER_MISSING\]/);
    assert.equal(fs.existsSync(fresh), false, 'no state directory');
  });
});
