/**
 * The tray's PIN page and `cardlink pin`, end to end with real parts: the test IdP, a card server
 * (SQLite) with alice's card, pcscd with the cardlink reader, `cardlink daemon` signed in, the
 * tray's own PinPageOpener and DaemonWatch (what Change PIN…/Unblock PIN… run, without a tray host), Debian's
 * Chromium driving the page, and OpenSC's pkcs11-tool checking the card's PIN through pcscd.
 *
 * Only the desktop's opener is replaced (a script first on PATH that records the URL): a test must
 * not open the machine's browser. Screenshots of the form and the answers go to the artifacts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import type { DaemonStatus } from '../../../daemon/control/control-protocol.js';
import { DaemonWatch } from '../../../tray/daemon-watch.js';
import { PinPageServer } from '../../../tray/pin-page/pin-page-server.js';
import { PinPageOpener } from '../../../tray/pin-page/pin-page-opener.js';
import { artifactPath, launchChromium, type TestBrowser } from '../../support/chromium.js';
import { CARDLINK_MAIN } from '../../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../../support/local-card.js';

/** Every secret this test types somewhere; none may show up in a log or any output. */
const PIN = '246810';
const PUK = '97531864';
const WRONG_PIN = '918273';
const WRONG_PUK = '19283746';
const PIN_2 = '13572468';
const PIN_3 = '864213';
const PIN_4 = '55443322';
const PIN_5 = '70615243';
const SECRETS = [PIN, PUK, WRONG_PIN, WRONG_PUK, PIN_2, PIN_3, PIN_4, PIN_5];

describe('the PIN page and cardlink pin, against a real card in pcscd', { timeout: 600_000 }, () => {
  let stack: DaemonStack;
  let browser: TestBrowser;
  let watch: DaemonWatch;
  let actions: PinPageOpener;
  let status: DaemonStatus | undefined;
  let openerLog: string;
  /** Everything shown or printed during the test, scanned for secrets at the end. */
  const outputs: string[] = [];
  const informed: string[] = [];
  /** What the tray's output line (a log) gets for each notice while notifications work. */
  const outputLines: string[] = [];

  const pkcs11Login = async (pin: string): Promise<{ ok: boolean; output: string }> => {
    try {
      const { stdout, stderr } = await promisify(execFile)(
        'pkcs11-tool',
        ['--module', OPENSC_PKCS11, '--login', '--pin', pin, '--list-objects', '--type', 'privkey'],
        { env: stack.pcscd.env, encoding: 'utf8' },
      );
      outputs.push(stdout, stderr);
      return { ok: true, output: stdout + stderr };
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string };
      outputs.push(e.stdout ?? '', e.stderr ?? '');
      return { ok: false, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };

  const waitForStatus = async (ok: (s: DaemonStatus) => boolean): Promise<DaemonStatus> => {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const s = await stack.daemon.status();
      if (ok(s)) return s;
      if (Date.now() > deadline) assert.fail(`status never matched: ${JSON.stringify(s)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  /** Opens a link, fills the form and submits it; returns the answer's text. */
  const submit = async (page: Page, fields: Record<string, string>): Promise<string> => {
    for (const [name, value] of Object.entries(fields)) await page.fill(`input[name="${name}"]`, value);
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    return (await page.textContent('.answer')) ?? '';
  };

  /** The card server runs in this process: what it logs to stderr is kept here for the scan too. */
  let serverStderr = '';
  const stderrWrite = process.stderr.write.bind(process.stderr);

  before(async () => {
    process.stderr.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
      serverStderr += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
      return stderrWrite(chunk, ...rest);
    }) as typeof process.stderr.write;
    stack = await startDaemonStack({
      name: 'pin-page',
      // The server's most talkative level, so the scan at the end covers all it could log.
      server: { log: { level: 'debug' } },
      cards: [{ label: 'alice work card', pin: PIN, puk: PUK }],
      pcscd: { cardlink: { slots: 4, friendlyName: 'cardlink PIN Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      login: true,
    });
    // The desktop opener the tray calls: records the URL instead of starting a browser.
    const bin = path.join(stack.dir, 'bin');
    fs.mkdirSync(bin);
    openerLog = path.join(stack.dir, 'opened.txt');
    fs.writeFileSync(path.join(bin, 'xdg-open'), `#!/bin/sh\nprintf '%s\\n' "$1" >> '${openerLog}'\n`, {
      mode: 0o755,
    });
    process.env['PATH'] = `${bin}:${process.env['PATH'] ?? ''}`;
    const run = path.join(stack.daemonDir, 'run');
    watch = new DaemonWatch({
      socketPath: path.join(run, 'control.sock'),
      secretFile: path.join(run, 'control.secret'),
      pollMs: 500,
    });
    watch.on('status', (s) => (status = s));
    watch.start();
    actions = new PinPageOpener({
      watch,
      inform: (summary, body, outputBody) => {
        informed.push(`${summary}: ${body}`);
        outputLines.push(`${summary}: ${outputBody ?? body}`);
      },
      status: () => status,
    });
    const deadline = Date.now() + 15_000;
    while (!status?.cards.some((c) => c.state === 'inserted')) {
      if (Date.now() > deadline) assert.fail('the tray never saw the card');
      await new Promise((r) => setTimeout(r, 100));
    }
    browser = await launchChromium();
  });

  after(async () => {
    process.stderr.write = stderrWrite;
    await browser?.close();
    await actions?.close();
    await watch?.stop();
    await stack?.stop();
  });

  let changeUrl: string;

  it('Change PIN…: the link opens the form; the new PIN is set, and pkcs11-tool logs in with it', async () => {
    const url = await actions.open('change');
    assert.ok(url, informed.join('\n'));
    changeUrl = url;
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/pin\/[A-Za-z0-9_-]{43}$/);
    assert.deepEqual(fs.readFileSync(openerLog, 'utf8').trim().split('\n'), [url], 'the opener got the link');
    assert.match(informed.at(-1)!, /Your browser opened the PIN page/);
    const token = url.slice(url.lastIndexOf('/') + 1);
    assert.ok(informed.at(-1)!.includes(url), 'the notification carries the whole link');
    assert.ok(!outputLines.at(-1)!.includes(token), 'the output line (a log) does not carry the token');
    assert.match(outputLines.at(-1)!, /\/pin\/… \(it works once/);
    const page = await browser.newPage();
    const response = await page.goto(url);
    const headers = response!.headers();
    assert.equal(new URL(page.url()).pathname, '/pin', 'the token left the address bar');
    assert.match(headers['content-security-policy'] ?? '', /default-src 'none'/);
    assert.match(headers['content-security-policy'] ?? '', /script-src 'none'/);
    assert.match(headers['content-security-policy'] ?? '', /form-action 'self'/);
    assert.match(headers['content-security-policy'] ?? '', /frame-ancestors 'none'/);
    assert.equal(headers['x-content-type-options'], 'nosniff');
    assert.equal(headers['cache-control'], 'no-store');
    assert.equal(headers['referrer-policy'], 'no-referrer');
    assert.equal(await page.textContent('h1'), 'Change PIN');
    assert.match((await page.textContent('.card')) ?? '', /alice work card/);
    assert.equal(await page.locator('script').count(), 0);
    await page.fill('input[name="current"]', PIN);
    await page.fill('input[name="new"]', PIN_2);
    await page.fill('input[name="again"]', PIN_2);
    await page.screenshot({ path: artifactPath('pin-page-change-form.png') });
    const csrf = await page.locator('input[name="csrf"]').inputValue();
    const cardId = await page.locator('[name="card"]').inputValue();
    const posted = page.waitForRequest((r) => r.method() === 'POST');
    const [answered] = await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    // POST/redirect/GET: the POST is answered 303 to /pin, which the browser GETs.
    const post = await posted;
    assert.equal((await post.response())!.status(), 303);
    assert.equal(answered!.request().method(), 'GET');
    assert.equal(answered!.request().redirectedFrom(), post);
    assert.equal(new URL(page.url()).pathname, '/pin');
    assert.equal(await page.textContent('.answer'), 'Done: the PIN is changed.');
    assert.equal(await page.locator('form').count(), 0, 'no form after done');
    // A reload shows "done" again and sends nothing; the session takes no further form.
    await page.reload();
    assert.equal(await page.textContent('.answer'), 'Done: the PIN is changed.');
    const again = await page.request.post(new URL('/pin', url).href, {
      headers: { origin: new URL(url).origin },
      form: { csrf, card: cardId, current: PIN_2, new: PIN_2, again: PIN_2 },
      maxRedirects: 0,
    });
    assert.equal(again.status(), 403, 'a done session takes no form');
    await page.screenshot({ path: artifactPath('pin-page-change-done.png') });
    await page.close();
    // The old PIN first: the right one afterwards gives the PIN its full tries back.
    assert.equal((await pkcs11Login(PIN)).ok, false, 'the old PIN no longer works');
    assert.equal((await pkcs11Login(PIN_2)).ok, true, 'login with the new PIN');
  });

  it('a reused link is refused, and so is an expired one', async () => {
    const page = await browser.newPage();
    const reused = await page.goto(changeUrl);
    assert.equal(reused!.status(), 410);
    assert.match((await page.textContent('.answer')) ?? '', /used already/);
    await page.screenshot({ path: artifactPath('pin-page-link-refused.png') });
    // An expired one: a page server whose links last 300 ms, on the same daemon.
    const short = await PinPageServer.start({
      linkTtlMs: 300,
      daemon: {
        cards: () => watch.request('cards'),
        changePin: (p) => watch.request('change-pin', p),
        unblockPin: (p) => watch.request('unblock-pin', p),
        setPin: (p) => watch.request('set-pin', p),
      },
    });
    try {
      const link = short.link('change');
      await new Promise((r) => setTimeout(r, 400));
      const expired = await page.goto(link);
      assert.equal(expired!.status(), 410);
      assert.match((await page.textContent('.answer')) ?? '', /expired/);
      // An unknown token, and the form without a session.
      assert.equal((await page.goto(`${short.origin}/pin/${'A'.repeat(43)}`))!.status(), 410);
      assert.equal((await page.goto(`${short.origin}/pin`))!.status(), 403);
    } finally {
      await short.close();
      await page.close();
    }
  });

  it('refuses another Host, a POST without the session and CSRF token, and a foreign Origin', async () => {
    const url = new URL((await actions.open('change'))!);
    const ask = (options: http.RequestOptions, body?: string) =>
      new Promise<number>((resolve, reject) => {
        const req = http.request({ host: '127.0.0.1', port: url.port, ...options }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        });
        req.once('error', reject);
        req.end(body);
      });
    assert.equal(await ask({ path: url.pathname, headers: { host: `evil.example:${url.port}` } }), 421);
    const form = { 'content-type': 'application/x-www-form-urlencoded', host: `127.0.0.1:${url.port}` };
    const body = `csrf=x&card=y&current=${WRONG_PIN}&new=${PIN_3}&again=${PIN_3}`;
    assert.equal(
      await ask({ method: 'POST', path: '/pin', headers: { ...form, origin: url.origin } }, body),
      403,
    );
    assert.equal(
      await ask({ method: 'POST', path: '/pin', headers: { ...form, origin: 'http://evil.example' } }, body),
      403,
    );
    assert.equal(
      await ask(
        {
          method: 'POST',
          path: '/pin',
          headers: { ...form, origin: 'null', 'sec-fetch-site': 'cross-site' },
        },
        body,
      ),
      403,
      'a form on another site (its Origin hidden by no-referrer)',
    );
    const withSession = { ...form, origin: url.origin };
    assert.equal(
      await ask({ method: 'POST', path: '/pin', headers: withSession }, 'x'.repeat(5000)),
      413,
      'a body over MAX_PIN_FORM_BYTES',
    );
    assert.equal(
      await ask(
        { method: 'POST', path: '/pin', headers: { ...withSession, 'content-type': 'application/json' } },
        '{}',
      ),
      415,
    );
    assert.equal(await ask({ path: '/other', headers: { host: `127.0.0.1:${url.port}` } }), 404);
    // Nothing reached the card: the PIN's tries are untouched.
    const page = await browser.newPage();
    await page.goto(url.href);
    assert.match(
      await submit(page, { current: PIN_2, new: '12345', again: '12345' }),
      /must be 6 to 8 digits/,
    );
    await page.close();
  });

  it('a wrong current PIN shows the tries left; the third blocks the PIN', async () => {
    const page = await browser.newPage();
    await page.goto((await actions.open('change'))!);
    const fields = { current: WRONG_PIN, new: PIN_3, again: PIN_3 };
    assert.equal(
      await submit(page, fields),
      'Wrong current PIN: 2 tries left before the PIN is blocked. Nothing was changed.',
    );
    await page.screenshot({ path: artifactPath('pin-page-wrong-pin.png') });
    // POST, redirect, GET: the answer is on /pin, reached by a GET after a 303 to the POST.
    const shown = await page.reload();
    assert.equal(shown!.request().method(), 'GET');
    assert.equal(new URL(page.url()).pathname, '/pin');
    // The reload sent nothing to the card (the next wrong PIN still has a try after it), and the
    // answer, shown once, is gone.
    assert.equal(await page.locator('.answer').count(), 0, 'the answer is shown once');
    assert.equal(await page.locator('form').count(), 1);
    assert.match(await submit(page, fields), /1 try left/);
    assert.match(await submit(page, fields), /The PIN is blocked/);
    await page.screenshot({ path: artifactPath('pin-page-blocked.png') });
    await page.close();
    const s = await waitForStatus((st) => st.cards[0]?.pinBlocked === true);
    assert.equal(s.cards[0]!.pinBlocked, true);
    assert.equal((await pkcs11Login(PIN_2)).ok, false, 'a blocked PIN does not log in');
  });

  it('Unblock PIN…: a wrong PUK shows its tries left; the PUK unblocks the PIN with a new one', async () => {
    const page = await browser.newPage();
    await page.goto((await actions.open('unblock'))!);
    assert.equal(await page.textContent('h1'), 'Unblock PIN');
    await page.screenshot({ path: artifactPath('pin-page-unblock-form.png') });
    assert.match(await submit(page, { puk: WRONG_PUK, new: PIN_3, again: PIN_3 }), /Wrong PUK: 2 tries left/);
    assert.equal(
      await submit(page, { puk: PUK, new: PIN_3, again: PIN_3 }),
      'Done: the PIN is unblocked and set to the new PIN.',
    );
    await page.screenshot({ path: artifactPath('pin-page-unblock-done.png') });
    await page.close();
    await waitForStatus((st) => st.cards[0]?.pinBlocked === undefined);
    assert.equal((await pkcs11Login(PIN_3)).ok, true, 'login with the PIN set by the unblock');
  });

  it('cardlink pin change reads the PINs from stdin and says what the card answered', async () => {
    const cli = (input: string, ...args: string[]) =>
      new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
        const child = spawn(
          process.execPath,
          [CARDLINK_MAIN, 'pin', ...args, '--config', stack.daemon.configFile],
          {
            stdio: ['pipe', 'pipe', 'pipe'],
          },
        );
        let stdout = '';
        let stderr = '';
        child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.once('error', reject);
        child.once('close', (code) => {
          outputs.push(stdout, stderr);
          resolve({ code, stdout, stderr });
        });
        child.stdin.end(input);
      });
    const wrong = await cli(`${WRONG_PIN}\n${PIN_4}\n`, 'change');
    assert.equal(wrong.code, 2, wrong.stderr);
    assert.match(wrong.stdout, /Wrong current PIN: 2 tries left/);
    const short = await cli(`${PIN_3}\n`, 'change');
    assert.equal(short.code, 64, short.stdout);
    assert.match(short.stderr, /stdin ended after 1 of 2 lines/);
    const bad = await cli(`${PIN_3}\n1234\n`, 'change', '--card', 'alice work card');
    assert.equal(bad.code, 65, bad.stderr);
    assert.match(bad.stdout, /must be 6 to 8 digits/);
    const unknown = await cli(`${PIN_3}\n${PIN_4}\n`, 'change', '--card', 'no such card');
    assert.equal(unknown.code, 1, unknown.stdout);
    assert.match(unknown.stderr, /no card "no such card".*ERR_CARD_NOT_FOUND/);
    const done = await cli(`${PIN_3}\r\n${PIN_4}\r\n`, 'change', '--card', stack.cardIds[0]!);
    assert.equal(done.code, 0, done.stderr);
    assert.equal(done.stdout, 'Done: the PIN is changed.\n');
    assert.equal((await pkcs11Login(PIN_4)).ok, true, 'login with the PIN set by the CLI');
  });

  it('cardlink pin change on a terminal asks three times and echoes nothing typed, even typed ahead', async () => {
    // `script` gives the command a terminal; everything the terminal shows is in its output.
    const command = [process.execPath, CARDLINK_MAIN, 'pin', 'change', '--config', stack.daemon.configFile]
      .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
      .join(' ');
    const child = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let screen = '';
    let typed = false;
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    const onOutput = (d: Buffer) => {
      screen += d.toString();
      // All three answers at once, as soon as the first prompt is up: the typed-ahead ones too
      // must not be echoed.
      if (!typed && screen.includes('Current PIN: ')) {
        typed = true;
        child.stdin.write(`${PIN_4}\r${PIN_5}\r${PIN_5}\r`);
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    const code = await exited;
    clearTimeout(timer);
    child.stdin.destroy();
    outputs.push(screen);
    assert.equal(code, 0, screen);
    assert.match(screen, /Changing the PIN of "alice work card"\./);
    assert.match(screen, /Current PIN: \r?\nNew PIN: \r?\nNew PIN again: \r?\n/);
    assert.match(screen, /Done: the PIN is changed\./);
    assert.ok(!screen.includes(PIN_4) && !screen.includes(PIN_5), `echoed: ${JSON.stringify(screen)}`);
    assert.equal((await pkcs11Login(PIN_5)).ok, true, 'login with the PIN typed on the terminal');
  });

  it('no PIN or PUK typed in this test is in a log file or any process output', async () => {
    // The daemon writes its log asynchronously: give it a moment, then stop it so all is flushed.
    await new Promise((r) => setTimeout(r, 500));
    await stack.daemon.stop();
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.isFile()) files.push(p);
      }
    };
    walk(stack.daemonDir);
    walk(path.join(stack.dir, 'server'));
    const log = stack.daemonLog();
    assert.match(log, /"message":"PIN operation"/, 'the log tells of the operations');
    assert.match(log, /"outcome":"wrong"/);
    const texts: [string, string][] = [
      // Every file, the card server's database too: PINs are kept there only as hashes.
      ...files.map((f): [string, string] => [f, fs.readFileSync(f, 'latin1')]),
      ['daemon output', stack.daemon.output()],
      ["the card server's log (this process's stderr)", serverStderr],
      ['tray notices', informed.join('\n')],
      ...outputs.map((o, i): [string, string] => [`process output ${i}`, o]),
    ];
    assert.ok(
      files.some((f) => /\.(sqlite|db)$/.test(f)),
      `the server's database is scanned: ${files.join(' ')}`,
    );
    assert.ok(texts.length > 5);
    for (const [where, text] of texts)
      for (const secret of SECRETS) assert.ok(!text.includes(secret), `${secret} found in ${where}`);
  });
});
