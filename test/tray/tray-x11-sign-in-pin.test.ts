/**
 * `cardlink tray` on a real X desktop (Xvfb, trayer, dunst, xclip) with two identity providers,
 * every part real: two test IdPs (oidc-provider), a card server that trusts both, pcscd with the
 * cardlink reader, `cardlink daemon`, and Debian's Chromium (playwright-core) for the pages a
 * person opens. The test clicks the menu as a person would (test/support/tray-desktop.ts); only the
 * desktop's opener is a recorder (test/support/tray.ts), and Chromium then loads what it recorded.
 * It shows:
 * - with `login.issuers`, the menu offers the admin's default identity provider first, then the
 *   other, then the code sign-in;
 * - Sign in with <the second IdP>…: that IdP's own pages in Chromium, and its user's card appears
 *   in pcscd;
 * - Change PIN… opens the PIN page, and a PIN change through it works (`pkcs11-tool --login`);
 * - Set a new PIN… (next to Unblock PIN…) opens the PIN page in its set mode, whose fresh sign-in
 *   (`prompt=login`) is at the IdP the tray signed in at, and the PIN set there works;
 * - Sign out, then Sign in with a code…: the code in the menu, the address on the X clipboard
 *   (read back with `xclip -o`); Cancel sign-in stops it.
 * Screenshots of the menus go to the artifacts (docs/tray.md shows the signed-out one).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Page } from 'playwright-core';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/index.js';
import { artifactPath, launchChromium, type TestBrowser } from '../support/chromium.js';
import { createTestCard } from '../support/card-server.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { startDesktopSession, type DesktopSession } from '../support/desktop-session.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { startTestIdp, type TestIdp } from '../support/oidc-provider.js';
import { startTestTray, type TestTray } from '../support/tray.js';
import { DESKTOP_WAIT_MS, trayOnDesktop, until, type TrayOnDesktop } from '../support/tray-desktop.js';

const run = promisify(execFile);
const READER = 'cardlink Two IdPs Reader';
const STAFF_PIN = '246810';
const PARTNER_PIN = '135791';
const NEW_PIN = '80604020';
const SET_PIN = '31415926';
const PUK = '97531864';
const WAIT_MS = DESKTOP_WAIT_MS;
const ARTIFACTS = path.dirname(artifactPath('.keep'));

describe('cardlink tray on X with two identity providers: code sign-in and clipboard, the second IdP, Change PIN…, Set a new PIN…', () => {
  let stack: DaemonStack;
  let partners: TestIdp;
  let daemon: TestDaemon;
  let desktop: DesktopSession;
  let tray: TestTray;
  let ui: TrayOnDesktop;
  let browser: TestBrowser;

  const onlyCard = (label: string) =>
    daemon.waitForCards(
      (cards) => cards.length === 1 && cards[0]!.label === label && cards[0]!.state === 'inserted',
      WAIT_MS,
    );

  const pkcs11Login = async (pin: string): Promise<boolean> =>
    run('pkcs11-tool', ['--module', OPENSC_PKCS11, '--login', '--pin', pin, '--list-objects'], {
      env: stack.pcscd.env,
    }).then(
      () => true,
      () => false,
    );

  /** The IdP's login and consent pages in Chromium, up to the tray's loopback callback page. */
  const signInInBrowser = async (url: string): Promise<Page> => {
    const page = await browser.newPage();
    await page.goto(url);
    for (let step = 0; step < 5; step++) {
      if (new URL(page.url()).hostname === '127.0.0.1' && page.url().includes('/callback')) break;
      const prompt = await page.locator('form[data-prompt]').getAttribute('data-prompt', { timeout: 10_000 });
      if (prompt === 'login') {
        await page.fill('input[name=login]', 'alice');
        await page.fill('input[name=password]', 'alice-password');
      }
      await Promise.all([page.waitForNavigation(), page.click('form[data-prompt] button[type=submit]')]);
    }
    await page.waitForURL(/127\.0\.0\.1:\d+\/callback/);
    return page;
  };

  before(async () => {
    partners = await startTestIdp();
    stack = await startDaemonStack({
      name: 'tray-x11-idps',
      trustIssuers: [partners.issuer],
      cards: [{ label: 'staff card', pin: STAFF_PIN, puk: PUK }],
      pcscd: { cardlink: { slots: 2, friendlyName: READER } },
      daemon: { deviceName: 'alice-laptop' },
    });
    // alice at the partners' IdP is another user of the card server, with a card of her own.
    // Its profile lets a fresh sign-in replace a forgotten PIN (pin.resetBySignIn): Set a new PIN….
    const base = profileToJson(await loadDefaultProfile());
    await createTestCard(stack.cardServer, partners, {
      label: 'partner card',
      pin: PARTNER_PIN,
      puk: PUK,
      profile: parseCardProfile({ ...base, pin: { ...(base.pin as object), resetBySignIn: true } }),
    });
    // The admin's settings: two identity providers, the staff one the default. The daemon is
    // started again on them, and the tray reads the same file.
    await stack.daemon.stop();
    daemon = await startTestDaemon({
      ...stack.daemonOptions(stack.daemonDir, 'alice-laptop'),
      settings: {
        login: {
          clientId: stack.idp.clientId,
          resource: stack.idp.resource,
          issuers: [
            { issuer: stack.idp.issuer, name: 'Example staff' },
            { issuer: partners.issuer, clientId: partners.clientId, name: 'Partners' },
          ],
        },
      },
    });
    const desktopDir = path.join(stack.dir, 'desktop');
    fs.mkdirSync(desktopDir);
    desktop = await startDesktopSession({ dir: desktopDir, trayHost: true, notifications: true });
    tray = startTestTray({
      configFile: daemon.configFile,
      dir: path.join(stack.dir, 'tray'),
      env: desktop.env,
    });
    await tray.waitForOutput(/tray program pid \d+/);
    ui = trayOnDesktop(desktop, tray);
    browser = await launchChromium();
  });

  after(async () => {
    await tray?.stop();
    if (tray) fs.writeFileSync(path.join(ARTIFACTS, 'tray-x11-sign-in-pin-output.txt'), tray.output());
    await browser?.close();
    await desktop?.stop();
    await daemon?.stop();
    await stack?.stop();
    await partners?.close();
  });

  it('signed out, the menu offers the admin’s default identity provider first, then the other, then a code', async () => {
    await ui.waitForIcon('signed-out');
    const { menu, lines, text } = await ui.menuShowing(/Sign in with Partners/);
    const at = (entry: RegExp) => {
      const line = lines.find((l) => entry.test(l.text));
      assert.ok(line, `${entry} in the menu:\n${text.join('\n')}`);
      return line.y;
    };
    const staff = at(/^Sign in with Example staff/);
    const partner = at(/^Sign in with Partners/);
    const code = at(/^Sign in with a code/);
    assert.ok(staff < partner && partner < code, text.join('\n'));
    await ui.keepScreenshot(ARTIFACTS, 'tray-signed-out-identity-providers.png', menu);
    await ui.closeMenu(menu);
  });

  it('Sign in with Partners…: that IdP’s own pages in Chromium, then its user’s card in pcscd', async () => {
    await ui.choose(/^Sign in with Partners/);
    const url = await until('the sign-in page opened', async () =>
      tray.opened().find((u) => u.startsWith('http')),
    );
    assert.equal(new URL(url).origin, new URL(partners.issuer).origin, 'the second IdP, not the default');
    assert.match(url, /code_challenge_method=S256/);
    const page = await signInInBrowser(url);
    assert.match(await page.locator('body').innerText(), /You can close this window/);
    await page.close();
    const [card] = await onlyCard('partner card');
    assert.equal(card!.readerName, stack.pcscd.readerName(0));
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    const { stdout } = await run('pkcs11-tool', ['--module', OPENSC_PKCS11, '-L'], { env: stack.pcscd.env });
    assert.match(stdout, new RegExp(`${READER}[^]*token label\\s*:\\s*\\S`), stdout);
    assert.equal((await daemon.status()).user, 'alice');
    await ui.waitForIcon('connected');
    const { menu, text } = await ui.menuShowing(/partner card: in the reader/);
    assert.ok(
      text.some((t) => /Sign out \(alice\)/.test(t)),
      text.join('\n'),
    );
    await ui.keepScreenshot(ARTIFACTS, 'tray-connected-partners.png', menu);
    await ui.closeMenu(menu);
  });

  it('Change PIN… opens the PIN page; the change made there holds (pkcs11-tool --login)', async () => {
    const before = tray.opened().length;
    await ui.choose(/^Change PIN/);
    const url = await until('the PIN page opened', async () =>
      tray
        .opened()
        .slice(before)
        .find((u) => /\/pin\//.test(u)),
    );
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/pin\/[A-Za-z0-9_-]{43}$/);
    const page = await browser.newPage();
    await page.goto(url);
    assert.equal(await page.textContent('h1'), 'Change PIN');
    assert.match((await page.textContent('.card')) ?? '', /partner card/);
    await page.fill('input[name="current"]', PARTNER_PIN);
    await page.fill('input[name="new"]', NEW_PIN);
    await page.fill('input[name="again"]', NEW_PIN);
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    assert.equal(await page.textContent('.answer'), 'Done: the PIN is changed.');
    await page.close();
    // The old PIN first: the right one afterwards gives the PIN its tries back.
    assert.equal(await pkcs11Login(PARTNER_PIN), false, 'the old PIN no longer works');
    assert.equal(await pkcs11Login(NEW_PIN), true, 'login with the new PIN');
  });

  it('Set a new PIN…, next to Unblock PIN…, opens the PIN page; its fresh sign-in is at the IdP the tray signed in at; the PIN set holds', async () => {
    const { menu, lines, text } = await ui.menuShowing(/^Set a new PIN/);
    const at = (entry: RegExp) => {
      const line = lines.find((l) => entry.test(l.text));
      assert.ok(line, `${entry} in the menu:\n${text.join('\n')}`);
      return line.y;
    };
    assert.ok(
      at(/^Change PIN/) < at(/^Unblock PIN/) && at(/^Unblock PIN/) < at(/^Set a new PIN/),
      text.join('\n'),
    );
    await ui.keepScreenshot(ARTIFACTS, 'tray-set-new-pin.png', menu);
    await ui.closeMenu(menu);

    const before = tray.opened().length;
    await ui.choose(/^Set a new PIN/);
    const url = await until('the PIN page opened', async () =>
      tray
        .opened()
        .slice(before)
        .find((u) => /\/pin\//.test(u)),
    );
    const page = await browser.newPage();
    await page.goto(url);
    assert.equal(await page.textContent('h1'), 'Set a new PIN');
    await page.screenshot({ path: artifactPath('tray-set-new-pin-page.png') });
    // "Sign in again": the partners' IdP (where this tray signed in), asking for the password
    // although the browser still has a session there (prompt=login, max_age=0).
    const idp = new URL(partners.issuer).origin;
    await Promise.all([page.waitForURL((u) => u.origin === idp), page.click('button[type="submit"]')]);
    await page.waitForSelector('form[data-prompt="login"]');
    await page.fill('input[name=login]', 'alice');
    await page.fill('input[name=password]', 'alice-password');
    await Promise.all([page.waitForNavigation(), page.click('form[data-prompt] button[type=submit]')]);
    for (let i = 0; i < 3 && new URL(page.url()).origin === idp; i++)
      await Promise.all([page.waitForNavigation(), page.click('form[data-prompt] button[type=submit]')]);
    assert.equal(new URL(page.url()).pathname, '/pin', 'back on the PIN page');
    await page.fill('input[name="new"]', SET_PIN);
    await page.fill('input[name="again"]', SET_PIN);
    await Promise.all([page.waitForNavigation(), page.click('button[type="submit"]')]);
    assert.equal(await page.textContent('.answer'), 'Done: your new PIN is set and unblocked.');
    await page.close();
    assert.equal(await pkcs11Login(NEW_PIN), false, 'the PIN it replaced no longer works');
    assert.equal(await pkcs11Login(SET_PIN), true, 'login with the PIN set after the fresh sign-in');
  });

  it('Sign out; Sign in with a code…: the code in the menu, the address on the clipboard; Cancel sign-in stops it', async () => {
    await ui.choose(/^Sign out/);
    await waitForCardAbsent(stack.pcscd.readerName(0), WAIT_MS);
    await ui.waitForIcon('signed-out');

    await ui.choose(/^Sign in with a code/);
    const [, address, shownCode] = await tray.waitForOutput(/open (\S+) and enter the code (\S+?)\.(?: |$)/m);
    const { menu, found } = await ui.menuShowing(/^Code \S+ at/);
    await ui.keepScreenshot(ARTIFACTS, 'tray-sign-in-code.png', menu);
    await ui.closeMenu(menu);
    assert.match(found.text, /http/);
    // What a person pastes: read back from the X clipboard, in this session, by another program.
    const clip = await until('the address on the clipboard', async () => {
      const text = await desktop.x('xclip', ['-o', '-selection', 'clipboard']);
      return text ? text : undefined;
    });
    const copied = new URL(clip);
    assert.equal(copied.origin, new URL(stack.idp.issuer).origin, 'the default IdP’s address');
    assert.equal(`${copied.origin}${copied.pathname}`, address);
    assert.equal(copied.searchParams.get('user_code'), shownCode, 'the address carries the code');
    assert.match(tray.output(), /The address is on the clipboard\./);
    const notice = await desktop.waitForNotification((n) => n.summary === 'Sign in to cardlink with a code');
    assert.match(notice.body, /The address is on the clipboard/);

    // The code sign-in is at the default IdP, whose alice is another user of the card server than
    // the partners' alice this device is registered to: stop it here (the device grant bringing
    // the card is in sign-in.test.ts).
    await ui.choose(/^Cancel sign-in/);
    await ui.menuShowing(/^Sign in with a code/).then(({ menu: m }) => ui.closeMenu(m));
    assert.equal((await daemon.status()).user, undefined);
    assert.doesNotMatch(tray.output(), /sign-in with a code failed/);
  });
});
