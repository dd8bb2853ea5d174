/**
 * `cardlink tray` where no icon can show: with no display at all, and with a display nobody
 * serves (the tray program exits at once; systray2 alone would wait forever). The tray says so
 * once and runs on: it follows the daemon (its output tells the state) and the desktop's
 * notifications still come, here a session that expires (dunst on a private bus, on Xvfb).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import type { TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { startDesktopSession, type DesktopSession } from '../support/desktop-session.js';
import { startTestTray, type TestTray } from '../support/tray.js';

/** Short tokens, so the expiry notices come within the test. */
const TOKEN_TTL_SECONDS = 20;
const WAIT_MS = 30_000;

/** A display number no X server serves on this machine. */
function unservedDisplay(): string {
  for (let n = 900; n < 1000; n++)
    if (!fs.existsSync(`/tmp/.X11-unix/X${n}`) && !fs.existsSync(`/tmp/.X${n}-lock`)) return `:${n}`;
  throw new Error('no free display number between 900 and 999');
}

describe('cardlink tray without a tray host', () => {
  let stack: DaemonStack;
  let daemon: TestDaemon;
  let desktop: DesktopSession;
  const trays: TestTray[] = [];

  before(async () => {
    stack = await startDaemonStack({
      name: 'tray-no-host',
      idp: { accessTokenTtlSeconds: TOKEN_TTL_SECONDS },
      server: { clockToleranceSeconds: 0, limits: { tokenWarningSeconds: 8 } },
      cards: [{ label: 'alice card', pin: '111222', puk: '33344455' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink No Host Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    ({ daemon } = stack);
    const desktopDir = path.join(stack.dir, 'desktop');
    fs.mkdirSync(desktopDir);
    // Notifications only: no trayer, and the tray is not even told the display.
    desktop = await startDesktopSession({ dir: desktopDir, trayHost: false, notifications: true });
  });

  after(async () => {
    for (const tray of trays) await tray.stop();
    await desktop?.stop();
    await stack?.stop();
  });

  it('with no display: says so once, follows the daemon, and notifies of an expiring and an ended session', async () => {
    const tray = startTestTray({
      configFile: daemon.configFile,
      dir: path.join(stack.dir, 'tray-a'),
      env: { DBUS_SESSION_BUS_ADDRESS: desktop.busAddress },
    });
    trays.push(tray);
    await tray.waitForOutput(/cardlink tray: started \(no icon, notifications by dunst/);
    await tray.waitForOutput(/cardlink tray: signed out/);
    const noIcon = tray.output().match(/no tray icon: .*/g) ?? [];
    assert.deepEqual(noIcon, [
      'no tray icon: no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set). ' +
        'Running on without it: notifications and this output still tell the state.',
    ]);

    // A sign-in without a refresh token (as an older tray would hand over): it cannot be renewed.
    await daemon.handOver((await stack.idp.login()).accessToken);
    await tray.waitForOutput(/cardlink tray: connected; signed in as alice; 1 card in the reader/);
    const expiring = await desktop.waitForNotification(
      (n) => n.summary === 'cardlink session expiring',
      WAIT_MS,
    );
    assert.equal(expiring.appName, 'cardlink');
    assert.match(expiring.body, /sign-in ends (within a minute|in about \d+ minutes)/);
    const ended = await desktop.waitForNotification((n) => n.summary === 'Signed out of cardlink', WAIT_MS);
    assert.match(ended.body, /^The access token expired\. Your cards have left the reader; choose Sign in…/);
    await tray.waitForOutput(/cardlink tray: signed out[^]*cardlink tray: signed out/);
    assert.equal((tray.output().match(/no tray icon/g) ?? []).length, 1, 'said once');
    assert.equal(tray.child.exitCode, null, 'still running');

    assert.equal(await tray.stop(), 0, tray.output());
    assert.match(tray.output(), /cardlink tray: stopped/);
  });

  it('with a display nobody serves: the tray program’s failure is named, and the tray runs on', async () => {
    const display = unservedDisplay();
    const tray = startTestTray({
      configFile: daemon.configFile,
      dir: path.join(stack.dir, 'tray-b'),
      env: { DISPLAY: display, DBUS_SESSION_BUS_ADDRESS: desktop.busAddress },
    });
    trays.push(tray);
    const [line] = await tray.waitForOutput(/no tray icon: .*/);
    assert.match(
      line,
      new RegExp(`the tray program exited \\(status 1\\): .*cannot open display: ${display}`),
    );
    await tray.waitForOutput(/cardlink tray: started \(no icon/);
    await tray.waitForOutput(/cardlink tray: signed out/);
    assert.equal(tray.child.exitCode, null, 'still running');
    assert.equal(await tray.stop(), 0, tray.output());
  });
});
