/**
 * First PIN and forgotten PIN without PIN letters (issue 19), end to end with real parts: the test
 * IdP (oidc-provider), a card server (SQLite) with alice's card made with no PIN, pcscd with the
 * cardlink reader, `cardlink daemon` signed in, the tray's PIN page server with its fresh browser
 * sign-in (`prompt=login`, `max_age=0`), Debian's Chromium typing alice's password at the IdP and
 * the PIN on the page, and OpenSC's pkcs11-tool logging in through pcscd.
 *
 * The server's `pin.freshSignInMaxAgeSeconds` is 30 s here (default 300) so that a stale sign-in
 * can be shown by waiting; the clock tolerance is 0.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { startBrowserLogin } from '../../../daemon/login/authorization-code-login.js';
import { DaemonWatch } from '../../../tray/daemon-watch.js';
import { PinPageServer } from '../../../tray/pin-page/pin-page-server.js';
import { artifactPath, launchChromium, type TestBrowser } from '../../support/chromium.js';
import { startDaemonStack, type DaemonStack } from '../../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../../support/local-card.js';
import { TEST_ACCOUNTS } from '../../support/oidc-provider.js';
import { pinBySignInProfile } from '../../support/pin-by-sign-in-profile.js';
import path from 'node:path';

const PUK = '97531864';
const PIN_1 = '13572468';
const PIN_2 = '864213';
const PIN_3 = '70615243';
const FRESH_SECONDS = 30;

describe('first PIN and forgotten PIN after a fresh sign-in, in Chromium', { timeout: 600_000 }, () => {
  let stack: DaemonStack;
  let browser: TestBrowser;
  let watch: DaemonWatch;
  let pages: PinPageServer;
  const alice = TEST_ACCOUNTS[0]!;
  /** An ordinary sign-in made at the start: stale by the last test. */
  let earlyToken: string;

  const pkcs11Login = async (pin: string): Promise<boolean> => {
    try {
      await promisify(execFile)(
        'pkcs11-tool',
        ['--module', OPENSC_PKCS11, '--login', '--pin', pin, '--list-objects', '--type', 'privkey'],
        { env: stack.pcscd.env, encoding: 'utf8' },
      );
      return true;
    } catch {
      return false;
    }
  };

  /** Opens a set-PIN link, clicks "Sign in again", signs in at the IdP as alice, lands on the form. */
  const signInAgain = async (page: Page, shot: string): Promise<void> => {
    await page.goto(pages.link('set'));
    assert.equal(await page.textContent('h1'), 'Set a new PIN');
    await page.screenshot({ path: artifactPath(`first-pin-${shot}-start.png`) });
    const idp = new URL(stack.idp.issuer).origin;
    await page.click('button[type="submit"]');
    await page.waitForURL((u) => u.origin === idp);
    const asked = new URL(page.url());
    // The IdP asks for the password although the daemon's sign-in is alive (prompt=login).
    await page.waitForSelector('form[data-prompt="login"]');
    await page.fill('input[name="login"]', alice.id);
    await page.fill('input[name="password"]', alice.password);
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    for (let i = 0; i < 3 && new URL(page.url()).origin === idp; i++) {
      // Consent for this browser's new grant.
      await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    }
    assert.equal(new URL(page.url()).pathname, '/pin', `back on the PIN page (from ${asked.pathname})`);
    await page.waitForSelector('input[name="new"]');
  };

  const setPin = async (page: Page, pin: string): Promise<string> => {
    await page.fill('input[name="new"]', pin);
    await page.fill('input[name="again"]', pin);
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    return (await page.textContent('.answer')) ?? '';
  };

  before(async () => {
    const profile = await pinBySignInProfile();
    stack = await startDaemonStack({
      name: 'first-pin',
      server: { pin: { freshSignInMaxAgeSeconds: FRESH_SECONDS }, clockToleranceSeconds: 0 },
      cards: [{ label: 'alice new card', pin: '', puk: PUK, profile }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink First PIN Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      login: true,
    });
    earlyToken = (await stack.idp.login()).accessToken;
    const run = path.join(stack.daemonDir, 'run');
    watch = new DaemonWatch({
      socketPath: path.join(run, 'control.sock'),
      secretFile: path.join(run, 'control.secret'),
      pollMs: 500,
    });
    watch.start();
    const { idp } = stack;
    pages = await PinPageServer.start({
      daemon: {
        cards: () => watch.request('cards'),
        changePin: (p) => watch.request('change-pin', p),
        unblockPin: (p) => watch.request('unblock-pin', p),
        setPin: (p) => watch.request('set-pin', p),
      },
      // What the tray's opener does with the daemon's config (pin-page-opener.ts freshSignInAt).
      freshSignIn: (afterSignInUrl) =>
        startBrowserLogin(
          { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource },
          { allowInsecureHttpIssuer: true, fresh: true, afterSignInUrl },
        ),
    });
    browser = await launchChromium();
  });

  after(async () => {
    await browser?.close();
    await pages?.close();
    await watch?.stop();
    await stack?.stop();
  });

  it('a card made with no PIN: no PIN logs in; after a fresh sign-in the user sets the first PIN (a trivial one refused)', async () => {
    assert.equal(await pkcs11Login(PIN_1), false, 'no PIN works before the first is set');
    const page = await browser.newPage();
    await signInAgain(page, 'first');
    assert.match(await setPin(page, '123456'), /too simple/);
    await page.screenshot({ path: artifactPath('first-pin-trivial-refused.png') });
    assert.equal(await setPin(page, PIN_1), 'Done: your PIN is set.');
    await page.screenshot({ path: artifactPath('first-pin-done.png') });
    await page.close();
    assert.equal(await pkcs11Login(PIN_1), true, 'pkcs11-tool --login --pin with the first PIN');
  });

  it('forgotten PIN: the same fresh sign-in sets a new one, never a recent one', async () => {
    const page = await browser.newPage();
    await signInAgain(page, 'forgotten');
    assert.match(await setPin(page, PIN_1), /one of your recent PINs/);
    assert.equal(await setPin(page, PIN_2), 'Done: your new PIN is set and unblocked.');
    await page.close();
    assert.equal(await pkcs11Login(PIN_1), false, 'the forgotten PIN is gone');
    assert.equal(await pkcs11Login(PIN_2), true, 'the new PIN logs in');
  });

  it(`a sign-in older than ${FRESH_SECONDS} s is refused, and the page asks for a new one`, async () => {
    const page = await browser.newPage();
    await signInAgain(page, 'stale');
    await new Promise((r) => setTimeout(r, (FRESH_SECONDS + 2) * 1000));
    assert.match(await setPin(page, PIN_3), /sign-in is too old/);
    assert.equal(await page.locator('form[action="/pin/sign-in"]').count(), 1, 'offers to sign in again');
    await page.screenshot({ path: artifactPath('first-pin-stale-refused.png') });
    await page.close();
    assert.equal(await pkcs11Login(PIN_3), false, 'nothing was set');
    assert.equal(await pkcs11Login(PIN_2), true, 'the PIN is still the one set before');
  });

  it("an earlier sign-in's token (still valid, not fresh) cannot set a PIN through the daemon", async () => {
    const cards = await watch.request('cards');
    const result = await watch.request('set-pin', {
      cardId: cards[0]!.cardId,
      newPin: PIN_3,
      freshAccessToken: earlyToken,
    });
    assert.deepEqual(result, { outcome: 'sign-in-not-fresh' });
  });
});
