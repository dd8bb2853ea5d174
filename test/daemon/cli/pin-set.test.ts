/**
 * `cardlink pin set` through the real chain: the test IdP (oidc-provider), a card server (SQLite)
 * with alice's card made with no PIN under a profile that also lets a fresh sign-in replace a
 * forgotten PIN, pcscd with the cardlink reader, `cardlink daemon` signed in, the CLI as a child
 * process reading the new PIN from stdin, and OpenSC's pkcs11-tool logging in through pcscd.
 *
 * The person's part of each sign-in is driven at the IdP's own login pages without a browser
 * (`completeBrowserLogin` / `approveDeviceCode`, a fresh cookie jar each: the password is typed).
 * The server's `pin.freshSignInMaxAgeSeconds` is 20 s here (default 300) so that a stale sign-in
 * can be made by waiting between the IdP's redirect and the CLI's callback.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { CARDLINK_MAIN, CLI_RUN_TIMEOUT_MS } from '../../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../../support/local-card.js';
import { pinBySignInProfile } from '../../support/pin-by-sign-in-profile.js';

const PUK = '97531864';
const PIN_1 = '13572468';
const PIN_2 = '864213';
const PIN_3 = '70615243';
const FRESH_SECONDS = 20;

interface PinSetRun {
  /** Resolves with the first match of `pattern` in stdout. */
  said(pattern: RegExp): Promise<RegExpMatchArray>;
  readonly done: Promise<{ code: number | null; stdout: string; stderr: string }>;
}

describe('cardlink pin set: a new PIN after a fresh sign-in', { timeout: 600_000 }, () => {
  let stack: DaemonStack;

  const pkcs11Login = async (pin: string): Promise<boolean> =>
    promisify(execFile)(
      'pkcs11-tool',
      ['--module', OPENSC_PKCS11, '--login', '--pin', pin, '--list-objects', '--type', 'privkey'],
      { env: stack.pcscd.env },
    ).then(
      () => true,
      () => false,
    );

  /** `cardlink pin set ARGS` with `input` on stdin (the PIN: never on the command line). */
  const pinSet = (input: string, ...args: string[]): PinSetRun => {
    const child = spawn(
      process.execPath,
      [CARDLINK_MAIN, 'pin', 'set', ...args, '--config', stack.daemon.configFile],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    let stdout = '';
    let stderr = '';
    const waiting: { pattern: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      for (const w of [...waiting]) {
        const m = w.pattern.exec(stdout);
        if (m) {
          waiting.splice(waiting.indexOf(w), 1);
          w.resolve(m);
        }
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), CLI_RUN_TIMEOUT_MS * 2);
    const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => {
        clearTimeout(timer);
        resolve({ code, stdout, stderr });
      });
    });
    child.stdin.end(input);
    return {
      said: (pattern) =>
        new Promise((resolve, reject) => {
          const m = pattern.exec(stdout);
          if (m) return resolve(m);
          waiting.push({ pattern, resolve });
          void done.then((r) =>
            reject(new Error(`ended (${r.code}) without ${pattern}:\n${r.stdout}${r.stderr}`)),
          );
        }),
      done,
    };
  };

  /** Runs `pin set --no-browser` and signs in at the URL it prints; returns how it ended. */
  const setWithBrowserSignIn = async (pin: string) => {
    const run = pinSet(`${pin}\n`, '--no-browser');
    const [, url] = await run.said(/sign in again in your browser: (\S+)/);
    const asked = new URL(url!);
    assert.equal(asked.origin, new URL(stack.idp.issuer).origin);
    assert.equal(asked.searchParams.get('prompt'), 'login', 'the IdP asks for the password again');
    assert.equal(asked.searchParams.get('max_age'), '0');
    assert.doesNotMatch(asked.searchParams.get('scope') ?? '', /offline_access/, 'no refresh token');
    const callback = await stack.idp.completeBrowserLogin(url!);
    assert.equal(callback.status, 200);
    return run.done;
  };

  before(async () => {
    const profile = await pinBySignInProfile();
    stack = await startDaemonStack({
      name: 'pin-set-cli',
      server: { pin: { freshSignInMaxAgeSeconds: FRESH_SECONDS }, clockToleranceSeconds: 0 },
      cards: [{ label: 'alice new card', pin: '', puk: PUK, profile }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink PIN Set Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      login: true,
    });
  });

  after(async () => {
    await stack?.stop();
  });

  it('nothing on stdin: a usage error before any sign-in (64)', async () => {
    const r = await pinSet('').done;
    assert.equal(r.code, 64, r.stderr);
    assert.match(r.stderr, /stdin ended/);
    assert.doesNotMatch(r.stdout, /sign in again/);
  });

  it('a card made with no PIN: the first PIN after a browser sign-in (a trivial one refused, 65)', async () => {
    assert.equal(await pkcs11Login(PIN_1), false, 'no PIN works before the first is set');
    const trivial = await setWithBrowserSignIn('123456');
    assert.equal(trivial.code, 65, trivial.stderr);
    assert.match(trivial.stdout, /too simple/);
    const r = await setWithBrowserSignIn(PIN_1);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^Done: your PIN is set\.$/m);
    assert.doesNotMatch(r.stdout + r.stderr, new RegExp(PIN_1), 'the PIN is never printed');
    assert.equal(await pkcs11Login(PIN_1), true, 'pkcs11-tool --login --pin with the first PIN');
  });

  it('forgotten PIN with a code on another device (--device-code): a new PIN, the old one gone', async () => {
    const run = pinSet(`${PIN_2}\n`, '--device-code');
    const [, verificationUri, userCode] = await run.said(/open (\S+) and enter the code (\S+)/);
    await stack.idp.approveDeviceCode(userCode!, { verificationUri: verificationUri! });
    const r = await run.done;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^Done: your new PIN is set and unblocked\.$/m);
    assert.equal(await pkcs11Login(PIN_1), false, 'the forgotten PIN is gone');
    assert.equal(await pkcs11Login(PIN_2), true, 'the new PIN logs in');
  });

  it(`a sign-in older than ${FRESH_SECONDS} s is refused in words (77), and nothing is set`, async () => {
    const run = pinSet(`${PIN_3}\n`, '--no-browser');
    const [, url] = await run.said(/sign in again in your browser: (\S+)/);
    // The person signs in, then the browser comes back to the CLI's loopback address late.
    const callback = await stack.idp.authorize(url!);
    await new Promise((r) => setTimeout(r, (FRESH_SECONDS + 3) * 1000));
    await fetch(callback, { redirect: 'manual' });
    const r = await run.done;
    assert.equal(r.code, 77, r.stdout + r.stderr);
    assert.match(
      r.stdout,
      /Your sign-in is too old to set a PIN\. Sign in again, then set the PIN right away\./,
    );
    assert.equal(await pkcs11Login(PIN_3), false, 'nothing was set');
    assert.equal(await pkcs11Login(PIN_2), true, 'the PIN is still the one set before');
  });
});
