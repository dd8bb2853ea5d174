/**
 * `cardlink tray` on a real X desktop, every part real: Xvfb, trayer as the tray host, dunst on a
 * private D-Bus session bus, and the whole cardlink chain (test IdP, card server, pcscd with the
 * cardlink reader, `cardlink daemon`). The test uses the tray as a person would: it finds the
 * icon in trayer's panel, tells its state by the badge colour on screen, clicks it, reads the menu
 * (tesseract) and clicks entries, and checks what follows in pcscd and in dunst. Screenshots of
 * the menus go to CARDLINK_TEST_ARTIFACTS (default test-artifacts/, git-ignored).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import type { TrayIconState } from '../../tray/tray-state.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { PcscClient } from '../support/pcsc-client.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { startDesktopSession, type DesktopSession, type WindowGeometry } from '../support/desktop-session.js';
import { REPO_ROOT } from '../support/pcscd.js';
import { DEFAULT_ACCESS_TOKEN_TTL_SECONDS } from '../support/oidc-provider.js';
import { startTestTray, type TestTray } from '../support/tray.js';
import { trayOnDesktop, until, type TrayOnDesktop } from '../support/tray-desktop.js';

const SECOND_READER = 'cardlink Tray Second Reader';
const PINS = ['246810', '135791'];
const PUK = '97531864';
const SELECT_PIV = '00A4040009A0000003080000100000';
/** VERIFY of the PIN (80) with a wrong value, 99999999. */
const WRONG_VERIFY = '00200080083939393939393939';
const ascii = (text: string) => Buffer.from(text, 'ascii').toString('hex');
/** A PIN field: the digits in ASCII, padded with FF to 8 bytes (SP 800-73-4 Part 2 section 3.2.1). */
const padded = (pin: string) => ascii(pin).padEnd(16, 'f');
const WAIT_MS = 30_000;
const ARTIFACTS = process.env['CARDLINK_TEST_ARTIFACTS'] ?? path.join(REPO_ROOT, 'test-artifacts');

describe('cardlink tray in an X session with a tray host', () => {
  let stack: DaemonStack;
  let desktop: DesktopSession;
  let tray: TestTray;
  let daemon: TestDaemon;
  let dir: string;
  /** The token's expiry right after the tray's sign-in. */
  let firstExpiry: number;
  let ui: TrayOnDesktop;
  const waitForIcon = (state: TrayIconState) => ui.waitForIcon(state);
  const menuShowing = (line: RegExp) => ui.menuShowing(line);
  const closeMenu = (menu: WindowGeometry) => ui.closeMenu(menu);
  const choose = (entry: RegExp) => ui.choose(entry);
  /** A screenshot of the panel's corner with the open menu, for the docs and for people. */
  const keepScreenshot = (name: string, menu: WindowGeometry) => ui.keepScreenshot(ARTIFACTS, name, menu);

  before(async () => {
    stack = await startDaemonStack({
      name: 'tray-x11',
      // The server warns 30 s into each 600 s token: the tray renews its sign-in during the test,
      // while no token comes near its end (Disconnect leaves no session to warn over).
      server: {
        deviceRegistration: 'automatic',
        limits: { tokenWarningSeconds: DEFAULT_ACCESS_TOKEN_TTL_SECONDS - 30 },
      },
      cards: [
        { label: 'alice card 1', pin: PINS[0]!, puk: PUK },
        { label: 'alice card 2', pin: PINS[1]!, puk: PUK },
      ],
      pcscd: {
        cardlink: { slots: 2, friendlyName: 'cardlink Tray Reader' },
        secondCardlink: { slots: 2, friendlyName: SECOND_READER },
      },
      daemon: { deviceName: 'alice-laptop' },
    });
    ({ daemon, dir } = stack);
    const desktopDir = path.join(dir, 'desktop');
    fs.mkdirSync(desktopDir);
    desktop = await startDesktopSession({ dir: desktopDir, trayHost: true, notifications: true });
    tray = startTestTray({ configFile: daemon.configFile, dir: path.join(dir, 'tray'), env: desktop.env });
    await tray.waitForOutput(/tray program pid \d+/);
    ui = trayOnDesktop(desktop, tray);
  });

  after(async () => {
    await tray?.stop();
    // What the tray said, beside the screenshots: the first thing to read when a step failed.
    if (tray) {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      fs.writeFileSync(path.join(ARTIFACTS, 'tray-x11-output.txt'), tray.output());
    }
    await desktop?.stop();
    await stack?.stop();
  });

  it('the icon appears in the panel, signed out; the menu offers Sign in…', async () => {
    assert.match(tray.output(), /notifications by dunst/);
    await waitForIcon('signed-out');
    const { menu, text } = await menuShowing(/signed out/);
    assert.ok(
      text.some((t) => /not signed in/.test(t)),
      text.join('\n'),
    );
    assert.ok(
      text.some((t) => /^Sign in/.test(t)),
      text.join('\n'),
    );
    assert.ok(
      text.some((t) => /No cards/.test(t)),
      text.join('\n'),
    );
    await keepScreenshot('tray-signed-out.png', menu);
    await closeMenu(menu);
  });

  it('Sign in… opens the browser sign-in; once done, the cards are in the reader and the icon says connected', async () => {
    await choose(/^Sign in/);
    const url = await until('the sign-in page opened', async () =>
      tray.opened().find((u) => u.startsWith('http')),
    );
    assert.match(url, /response_type=code/);
    assert.match(url, /code_challenge_method=S256/);
    await stack.idp.completeBrowserLogin(url, { account: 'alice' });
    await daemon.waitForCards((cards) => cards.filter((c) => c.state === 'inserted').length === 2, WAIT_MS);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    await waitForIcon('connected');
    await desktop.waitForNotification((n) => n.summary === 'Sign in to cardlink');
    firstExpiry = (await daemon.status()).tokenExpiresAt!;
  });

  it('the connected menu: user, server, round trip, and each card in its slot', async () => {
    const { menu, text } = await menuShowing(/round trip/);
    const all = text.join('\n');
    assert.ok(
      text.some((t) => /cardlink: connected/.test(t)),
      all,
    );
    assert.ok(
      text.some((t) => /alice .*127\.0\.0\.1.*ms round trip/.test(t)),
      all,
    );
    assert.ok(
      text.some((t) => /alice card 1: in the reader \(slot 0\)/.test(t)),
      all,
    );
    assert.ok(
      text.some((t) => /alice card 2: in the reader \(slot 1\)/.test(t)),
      all,
    );
    assert.ok(
      text.some((t) => /Sign out \(alice\)/.test(t)),
      all,
    );
    assert.ok(
      text.some((t) => /^Disconnect/.test(t)),
      all,
    );
    await keepScreenshot('tray-connected.png', menu);
    await closeMenu(menu);
  });

  it('Disconnect empties the reader; Connect brings the cards back', async () => {
    const mark = tray.output().length;
    await choose(/^Disconnect/);
    await waitForCardAbsent(stack.pcscd.readerName(0), WAIT_MS);
    await waitForCardAbsent(stack.pcscd.readerName(1), WAIT_MS);
    assert.equal((await daemon.status()).state, 'offline');
    await waitForIcon('signed-out');
    const { menu } = await menuShowing(/disconnected/);
    await closeMenu(menu);
    // On the way the daemon never looked signed out, nor connected without its cards.
    const meanwhile = tray.output().slice(mark);
    assert.match(meanwhile, /cardlink tray: disconnected; signed in as alice/);
    assert.doesNotMatch(
      meanwhile,
      /cardlink tray: signed out|cardlink tray: connected; signed in as alice; 0 cards/,
    );

    await choose(/^Connect/);
    await waitForCardPresent(stack.pcscd.readerName(0), WAIT_MS);
    await waitForCardPresent(stack.pcscd.readerName(1), WAIT_MS);
    await waitForIcon('connected');
  });

  it('a PIN entered wrong too often: an urgent notification and "PIN blocked"; the PUK unblocks it', async () => {
    const pcsc = await PcscClient.open();
    try {
      const card = await pcsc.connect(stack.pcscd.readerName(0));
      const sw = async (apdu: string) =>
        (await card.transmit(Buffer.from(apdu, 'hex'))).subarray(-2).toString('hex');
      assert.equal(await sw(SELECT_PIV), '9000');
      const answers = [await sw(WRONG_VERIFY), await sw(WRONG_VERIFY), await sw(WRONG_VERIFY)];
      assert.deepEqual(answers, ['63c2', '63c1', '6983']);
      const notice = await desktop.waitForNotification((n) => n.summary === 'Card PIN blocked', WAIT_MS);
      assert.equal(notice.urgency, 'CRITICAL');
      assert.match(notice.body, /^The PIN of “alice card 1” was entered wrong too often and is blocked/);
      const { menu } = await menuShowing(/alice card 1: in the reader \(slot 0\), PIN blocked/);
      await closeMenu(menu);
      // RESET RETRY COUNTER with the PUK and a new PIN (the old one again).
      assert.equal(await sw(`002C008010${ascii(PUK)}${padded(PINS[0]!)}`), '9000');
      await card.disconnect();
      await menuShowing(/alice card 1: in the reader \(slot 0\)(?!, PIN)/).then(({ menu: m }) =>
        closeMenu(m),
      );
      assert.equal(
        desktop.notifications().filter((n) => n.summary === 'Card PIN blocked').length,
        1,
        'told once',
      );
    } finally {
      await pcsc.close();
    }
  });

  it('a takeover by another device: a notification naming it, the icon and the card entry say so', async () => {
    const second = await startTestDaemon({
      ...stack.daemonOptions(path.join(dir, 'daemon-b'), 'alice-desktop'),
      secondReader: { friendlyName: SECOND_READER },
    });
    try {
      await second.login('alice');
      // One event per card; the second notice names both and replaces the first.
      const notice = await desktop.waitForNotification((n) => n.summary === '2 cards taken over', WAIT_MS);
      assert.equal(notice.appName, 'cardlink');
      assert.match(notice.body, /^“alice card [12]” and “alice card [12]” are now in use on alice-desktop/);
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await desktop.screenshot(path.join(ARTIFACTS, 'tray-notification.png'), {
        x: 0,
        y: 0,
        width: 460,
        height: 176,
      });
      await waitForIcon('taken-over');
      const { menu, text } = await menuShowing(/taken over by alice-desktop/);
      assert.ok(
        text.some((t) => /Connect \(take the cards back\)/.test(t)),
        text.join('\n'),
      );
      await keepScreenshot('tray-taken-over.png', menu);
      await closeMenu(menu);
    } finally {
      await second.stop();
    }
  });

  it('Save diagnostics writes the diag bundle and shows where', async () => {
    await choose(/^Save diagnostics/);
    const notice = await desktop.waitForNotification((n) => n.summary === 'Diagnostics saved', WAIT_MS);
    const file = /^(\/\S+\.json)/.exec(notice.body)?.[1];
    assert.ok(file, notice.body);
    assert.equal(path.dirname(file), stack.daemonDir, 'beside the daemon log');
    const bundle = JSON.parse(fs.readFileSync(file, 'utf8')) as { daemon: { running: boolean } };
    assert.equal(bundle.daemon.running, true);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const { menu } = await menuShowing(/Saved: /);
    await closeMenu(menu);
  });

  it('the tray renews its sign-in itself when the server warns; the daemon never held a refresh token', async () => {
    await tray.waitForOutput(/cardlink tray: sign-in renewed/, 60_000);
    const status = await daemon.status();
    assert.equal(status.state, 'connected');
    assert.ok(status.tokenExpiresAt! > firstExpiry, `${status.tokenExpiresAt} > ${firstExpiry}`);
    assert.doesNotMatch(stack.daemonLog(), /access token refreshed/, 'the daemon did not refresh by itself');
    assert.deepEqual(
      desktop.notifications().filter((n) => n.summary === 'cardlink session expiring'),
      [],
      `nobody was asked to sign in again:\n${tray.output()}`,
    );
  });

  it('Open logs opens the log folder; Quit removes the icon and ends the tray', async () => {
    await choose(/^Open logs/);
    await until('the log folder opened', async () =>
      tray.opened().includes(stack.daemonDir) ? true : undefined,
    );
    const pid = tray.programPid()!;
    await choose(/^Quit/);
    const code = await new Promise<number | null>((resolve) =>
      tray.child.exitCode !== null
        ? resolve(tray.child.exitCode)
        : tray.child.once('exit', (c) => resolve(c)),
    );
    assert.equal(code, 0, tray.output());
    assert.match(tray.output(), /cardlink tray: stopped/);
    await until('the icon gone', async () =>
      (await desktop.windowsOf(pid, { onlyVisible: false })).length === 0 ? true : undefined,
    );
    // The daemon is untouched by the tray leaving.
    assert.equal((await daemon.status()).state, 'connected');
  });
});
