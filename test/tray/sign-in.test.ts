/**
 * The tray's sign-in end to end, every part real: the test IdP (oidc-provider) on loopback, a card
 * server, pcscd with the cardlink reader, `cardlink daemon`, and GNOME Keyring's Secret Service on
 * a private session bus as the desktop keyring (test/support/daemon-stack.ts).
 *
 * First the tray runs in this process (TrayApp, as `cardlink tray` runs it, without a tray host:
 * its menu actions are called directly) and a real browser, Debian's Chromium driven by
 * playwright-core, signs in on the IdP's own pages; then `cardlink tray` runs as its own process.
 * What it shows:
 * - the browser sign-in ends on the tray's loopback callback, the daemon gets the access token and
 *   the card appears in pcscd (`pkcs11-tool -L`); the refresh token goes to the keyring only;
 * - the tray renews the sign-in across the access token's expiry (the cards stay), rotating the
 *   refresh token in the keyring; the daemon never holds one;
 * - a callback with a wrong `state` or a wrong `iss` is refused;
 * - a daemon restart, and a daemon and tray restart, bring the card back with no browser;
 * - Sign out empties the reader, empties the keyring and revokes the token at the IdP (RFC 7009);
 * - Sign in with a code… (RFC 8628) shows the code and the address and brings the card too;
 * - a revoked refresh token leads to exactly one request to sign in again, and no browser;
 * - after all that, no token is anywhere in clear: files under the test's directories (logs,
 *   config, state, caches) and every process's output.
 * Screenshots of the IdP's login page and of the "you can close this window" page are kept as
 * test artifacts (artifactPath).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { AsyncEntry } from '@napi-rs/keyring';
import type { Page } from 'playwright-core';
import { loadDaemonConfig } from '../../daemon/config/daemon-config.js';
import { startBrowserLogin } from '../../daemon/login/authorization-code-login.js';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { CardlinkError } from '../../protocol/errors.js';
import { REFRESH_TOKEN_FILE, REFRESH_TOKEN_KEYRING_SERVICE } from '../../tray/refresh-token-store.js';
import { TrayApp } from '../../tray/tray-app.js';
import { artifactPath, launchChromium, type TestBrowser } from '../support/chromium.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { startTestTray, type TestTray } from '../support/tray.js';

const run = promisify(execFile);
/** Short tokens, so that a renewal across an expiry happens within the test. */
const TOKEN_TTL_SECONDS = 30;
const WAIT_MS = 30_000;
const READER = 'cardlink Sign In Reader';
const JWT = /eyJ[\w-]{10,}\.eyJ[\w-]{10,}\.[\w-]+/;

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  timeoutMs = WAIT_MS,
) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('the tray signs in in a real browser, keeps the refresh token in the keyring, and owns it', () => {
  let stack: DaemonStack;
  let daemon: TestDaemon;
  let browser: TestBrowser;
  let app: TrayApp | undefined;
  let tray: TestTray | undefined;
  const daemons: TestDaemon[] = [];
  const trayOutputs: string[] = [];
  let appOutput = '';
  let openedFile: string;
  /** Every token this test saw: none may be found in clear afterwards. */
  const secrets = new Set<string>();
  let keyringEntry: AsyncEntry;
  let firstRefreshToken: string;

  const storedRefreshToken = async (): Promise<string | undefined> => {
    const text = await keyringEntry.getPassword();
    if (!text) return undefined;
    const token = (JSON.parse(text) as { refreshToken: string }).refreshToken;
    secrets.add(token);
    return token;
  };
  const opened = () =>
    fs.existsSync(openedFile) ? fs.readFileSync(openedFile, 'utf8').split('\n').filter(Boolean) : [];
  const cardInserted = (d: TestDaemon) =>
    d.waitForCards((cards) => cards.length === 1 && cards[0]!.state === 'inserted', WAIT_MS);

  /** A new `cardlink daemon` on the same directory (config, state, device key in the keyring). */
  const restartDaemon = async (): Promise<void> => {
    await daemon.stop();
    await waitForCardAbsent(stack.pcscd.readerName(0), WAIT_MS);
    daemon = await startTestDaemon({
      ...stack.daemonOptions(stack.daemonDir, 'alice-laptop'),
      keyringBus: stack.keyring!.address,
    });
    daemons.push(daemon);
  };

  /** The IdP's pages in Chromium, as a person goes through them, up to the tray's callback page. */
  const signInInBrowser = async (url: string, screenshots: boolean): Promise<Page> => {
    const page = await browser.newPage();
    await page.goto(url);
    for (let step = 0; step < 5; step++) {
      if (new URL(page.url()).hostname === '127.0.0.1' && page.url().includes('/callback')) break;
      const prompt = await page.locator('form[data-prompt]').getAttribute('data-prompt', { timeout: 10_000 });
      if (prompt === 'login') {
        if (screenshots) await page.screenshot({ path: artifactPath('tray-sign-in-idp-login.png') });
        await page.fill('input[name=login]', 'alice');
        await page.fill('input[name=password]', 'alice-password');
      }
      await Promise.all([page.waitForNavigation(), page.click('form[data-prompt] button[type=submit]')]);
    }
    await page.waitForURL(/127\.0\.0\.1:\d+\/callback/);
    return page;
  };

  before(async () => {
    stack = await startDaemonStack({
      name: 'tray-sign-in',
      idp: { accessTokenTtlSeconds: TOKEN_TTL_SECONDS },
      server: { clockToleranceSeconds: 0, limits: { tokenWarningSeconds: 15 } },
      cards: [{ label: 'alice card', pin: '123987', puk: '87654321' }],
      pcscd: { cardlink: { slots: 2, friendlyName: READER } },
      daemon: { deviceName: 'alice-laptop' },
      keyring: true,
    });
    daemon = stack.daemon;
    // This process is the tray: its keyring is the test's, its desktop opener a recorder.
    process.env['DBUS_SESSION_BUS_ADDRESS'] = stack.keyring!.address;
    delete process.env['DISPLAY'];
    delete process.env['WAYLAND_DISPLAY'];
    const bin = path.join(stack.dir, 'opener');
    fs.mkdirSync(bin);
    openedFile = path.join(stack.dir, 'opened.txt');
    fs.writeFileSync(path.join(bin, 'xdg-open'), `#!/bin/sh\nprintf '%s\\n' "$1" >> '${openedFile}'\n`, {
      mode: 0o755,
    });
    process.env['PATH'] = `${bin}:${process.env['PATH'] ?? ''}`;
    const config = loadDaemonConfig({ config: daemon.configFile });
    keyringEntry = new AsyncEntry(REFRESH_TOKEN_KEYRING_SERVICE, config.stateDir, {
      linux: { store: 'secret-service' },
    });
    browser = await launchChromium();
    app = await TrayApp.start({
      config,
      cacheDir: path.join(stack.dir, 'tray-cache'),
      out: (line) => (appOutput += `${line}\n`),
      readyTimeoutMs: 2000,
    });
  });

  after(async () => {
    await app?.stop();
    await tray?.stop();
    await browser?.close();
    for (const d of daemons) await d.stop();
    await stack?.stop();
  });

  it('Sign in… in Chromium: the IdP’s login page, the callback’s “close this tab” page, the card in pcscd', async () => {
    const signingIn = app!.run('sign-in');
    const url = await until('the sign-in page opened', () => opened().find((u) => u.startsWith('http')));
    const page = await signInInBrowser(url, true);
    assert.match(await page.locator('h1').innerText(), /Signed in to cardlink/);
    assert.match(await page.locator('body').innerText(), /You can close this window/);
    await page.screenshot({ path: artifactPath('tray-sign-in-done.png') });
    await page.close();
    await signingIn;
    assert.doesNotMatch(appOutput, /sign-in failed/, appOutput);

    await cardInserted(daemon);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    const { stdout } = await run('pkcs11-tool', ['--module', OPENSC_PKCS11, '-L'], { env: stack.pcscd.env });
    assert.match(stdout, new RegExp(`${READER}.*\\n[^]*token label\\s*:\\s*\\S`), stdout);
    assert.equal((await daemon.status()).user, 'alice');

    // The refresh token is in the keyring, and only there.
    firstRefreshToken = (await storedRefreshToken())!;
    assert.ok(firstRefreshToken, 'a refresh token in the keyring');
    assert.equal(fs.existsSync(path.join(stack.daemonDir, 'state', REFRESH_TOKEN_FILE)), false);
  });

  it('renews the sign-in across the access token’s expiry: the card stays, the refresh token rotates in the keyring', async () => {
    const firstExpiry = (await daemon.status()).tokenExpiresAt!;
    await until(
      'past the first token’s expiry',
      () => (Date.now() / 1000 > firstExpiry + 3 ? true : undefined),
      60_000,
    );
    const status = await daemon.status();
    assert.equal(status.state, 'connected', appOutput);
    assert.ok(status.tokenExpiresAt! > firstExpiry);
    assert.equal(status.cards[0]?.state, 'inserted');
    assert.match(appOutput, /cardlink tray: sign-in renewed/);
    const rotated = await storedRefreshToken();
    assert.ok(rotated && rotated !== firstRefreshToken, 'the keyring holds the rotated token');
    assert.doesNotMatch(
      stack.daemonLog(),
      /access token refreshed/,
      'the daemon never refreshed: it has no refresh token',
    );
    assert.doesNotMatch(appOutput, /Sign in to cardlink again|session expiring/);
  });

  it('a callback with a wrong state, or a wrong iss, is refused and yields no token', async () => {
    const settings = { issuer: stack.idp.issuer, clientId: stack.idp.clientId, resource: stack.idp.resource };
    const options = { allowInsecureHttpIssuer: true };

    const wrongState = await startBrowserLogin(settings, options);
    const forged = new URL(wrongState.redirectUri);
    forged.search = new URLSearchParams({
      code: 'x',
      state: 'not-the-state',
      iss: stack.idp.issuer,
    }).toString();
    const answer = await fetch(forged);
    assert.equal(answer.status, 400);
    assert.match(await answer.text(), /does not belong to the sign-in that cardlink started/);
    await assert.rejects(wrongState.complete(), (e: unknown) => {
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, 'ERR_LOGIN_DENIED');
      assert.equal(e.context.reason, 'state-mismatch');
      return true;
    });

    // A real code from the IdP, but the response claims another issuer (RFC 9207 mix-up defence).
    const wrongIss = await startBrowserLogin(settings, options);
    const callback = await stack.idp.authorize(wrongIss.authorizationUrl);
    assert.equal(callback.searchParams.get('iss'), stack.idp.issuer, 'the IdP sends iss');
    callback.searchParams.set('iss', 'https://attacker.example/');
    const refused = await fetch(callback);
    assert.equal(refused.status, 400);
    assert.match(await refused.text(), /another identity provider/);
    await assert.rejects(wrongIss.complete(), (e: unknown) => {
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, 'ERR_LOGIN_DENIED');
      assert.equal(e.context.reason, 'issuer-mismatch');
      return true;
    });
  });

  it('a daemon restart brings the card back with the keyring’s refresh token, no browser', async () => {
    const before = opened().length;
    await restartDaemon();
    await cardInserted(daemon);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    assert.match(appOutput, /cardlink tray: sign-in restored/);
    assert.equal(opened().length, before, 'no browser opened');
  });

  it('Sign out empties the reader and the keyring and revokes the refresh token at the IdP', async () => {
    const token = (await storedRefreshToken())!;
    await app!.run('sign-out');
    await waitForCardAbsent(stack.pcscd.readerName(0), WAIT_MS);
    assert.equal((await daemon.status()).user, undefined);
    assert.equal(await keyringEntry.getPassword(), null);
    await assert.rejects(stack.idp.refresh(token), /invalid_grant/);
  });

  it('Sign in with a code… (device authorization grant): the code and the address shown, the card in pcscd', async () => {
    const before = opened().length;
    const signingIn = app!.run('sign-in-code');
    const [, address, code] = await until(
      'the code shown',
      () => /open (\S+) and enter the code (\S+)\./.exec(appOutput) ?? undefined,
    );
    await stack.idp.approveDeviceCode(code!.replace(/\.$/, ''), { verificationUri: address! });
    await signingIn;
    await cardInserted(daemon);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    assert.ok(await storedRefreshToken(), 'the code sign-in’s refresh token is in the keyring');
    assert.equal(opened().length, before, 'no browser opened');
    await app!.run('sign-out');
    await waitForCardAbsent(stack.pcscd.readerName(0), WAIT_MS);
  });

  it('signed in again, `cardlink tray` and the daemon restart: the card comes back with no browser', async () => {
    const signingIn = app!.run('sign-in');
    const url = await until('the sign-in page opened', () =>
      opened()
        .filter((u) => u.startsWith('http'))
        .at(1),
    );
    (await signInInBrowser(url, false)).close().catch(() => undefined);
    await signingIn;
    await cardInserted(daemon);
    await storedRefreshToken();
    await app!.stop();
    app = undefined;

    await restartDaemon();
    const before = opened().length;
    tray = startTestTray({
      configFile: daemon.configFile,
      dir: path.join(stack.dir, 'tray-process'),
      env: { DBUS_SESSION_BUS_ADDRESS: stack.keyring!.address },
    });
    await tray.waitForOutput(/cardlink tray: sign-in restored/, WAIT_MS);
    await cardInserted(daemon);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    assert.equal(opened().length, before);
    assert.deepEqual(tray.opened(), [], 'no browser opened');
  });

  it('a revoked refresh token: exactly one request to sign in again, no browser, the keyring emptied', async () => {
    const token = (await storedRefreshToken())!;
    const metadata = (await (
      await fetch(new URL('.well-known/openid-configuration', stack.idp.issuer))
    ).json()) as { revocation_endpoint: string };
    const revoked = await fetch(metadata.revocation_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ token, token_type_hint: 'refresh_token', client_id: stack.idp.clientId }),
    });
    assert.equal(revoked.status, 200);

    await tray!.stop();
    trayOutputs.push(tray!.output());
    await restartDaemon();
    tray = startTestTray({
      configFile: daemon.configFile,
      dir: path.join(stack.dir, 'tray-process-2'),
      env: { DBUS_SESSION_BUS_ADDRESS: stack.keyring!.address },
    });
    await tray.waitForOutput(/Sign in to cardlink again/, WAIT_MS);
    assert.equal(await keyringEntry.getPassword(), null, 'the dead token left the keyring');
    // Another daemon restart finds nothing to restore: no second request.
    const seen = tray.output().length;
    await restartDaemon();
    await until('the tray back with the new daemon', () =>
      /signed out/.test(tray!.output().slice(seen)) ? true : undefined,
    );
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(tray.output().match(/Sign in to cardlink again/g)?.length, 1, tray.output());
    assert.deepEqual(tray.opened(), [], 'no browser opened');
    assert.equal((await daemon.status()).user, undefined);
  });

  it('no token in clear in any file under the test’s directories or in any process’s output', async () => {
    await tray!.stop();
    trayOutputs.push(tray!.output());
    tray = undefined;
    assert.ok(secrets.size >= 3, `the test saw ${secrets.size} tokens`);
    const outputs = [appOutput, ...trayOutputs, ...[stack.daemon, ...daemons].map((d) => d.output())];
    const files: string[] = [];
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) walk(full);
        else if (entry.isFile()) files.push(full);
      }
    };
    walk(stack.dir);
    const texts = [
      ...outputs.map((text, i) => ({ where: `output ${i}`, text })),
      ...files.map((f) => ({ where: f, text: fs.readFileSync(f).toString('latin1') })),
    ];
    assert.ok(files.some((f) => f.endsWith('daemon.log')));
    for (const { where, text } of texts) {
      for (const secret of secrets) assert.ok(!text.includes(secret), `a refresh token in clear in ${where}`);
      assert.doesNotMatch(text, JWT, `a JWT (access or ID token) in clear in ${where}`);
    }
  });
});
