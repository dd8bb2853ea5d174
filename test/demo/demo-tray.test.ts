/**
 * `cardlink demo --yes` on a desktop, every part real: a private X session (Xvfb, trayer as the
 * tray host, dunst on a private bus; test/support/desktop-session.ts), a private pcscd with the
 * cardlink reader, and the demo's own IdP, card server, card, daemon and tray. With DISPLAY set the
 * demo starts `cardlink tray` for its daemon as its last step; the test finds the tray's icon in
 * trayer's panel, tells by the badge colour on screen that it shows the demo card's session
 * connected, and checks that Ctrl-C (SIGINT) stops the tray with the rest: the demo exits 0, the
 * tray and its icon program are gone, the icon left the panel and the reader is empty.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitForCardAbsent } from '../../daemon/reader/pcsc-presence.js';
import { DEMO_READY_PREFIX } from '../../demo/run-demo.js';
import { TRAY_BADGE_COLOURS } from '../../tray/icons.js';
import { TRAY_ICON_STATES, type TrayIconState } from '../../tray/tray-state.js';
import { cardlinkCli } from '../support/daemon.js';
import { startDesktopSession, type DesktopSession, type WindowGeometry } from '../support/desktop-session.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';
import { alive, commandLine, descendants } from '../support/process-tree.js';
import { until } from '../support/tray-desktop.js';

/** From start to the ready line, generous for a loaded 2-core machine (cold: key generation). */
const READY_TIMEOUT_MS = 180_000;
/** From SIGINT to exit. */
const STOP_TIMEOUT_MS = 60_000;
describe('cardlink demo on a desktop with a tray host', { timeout: 400_000 }, () => {
  let pcscd: PcscdInstance;
  let desktop: DesktopSession;
  let dir: string;

  before(async () => {
    pcscd = await startPcscd({ cardlink: { slots: 2, friendlyName: 'cardlink Demo Tray Reader' } });
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-demo-tray-test-'));
    const desktopDir = path.join(dir, 'desktop');
    fs.mkdirSync(desktopDir);
    desktop = await startDesktopSession({ dir: desktopDir, trayHost: true, notifications: true });
  });

  after(async () => {
    await desktop?.stop();
    await pcscd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('starts the tray, whose icon shows the card connected, and Ctrl-C stops it with the rest', async () => {
    const env: NodeJS.ProcessEnv = {
      ...pcscd.env,
      ...desktop.env,
      // The tray's private cache (its copy of the tray program, the icons) in the test's directory.
      XDG_CACHE_HOME: path.join(dir, 'cache'),
    };
    const demo = cardlinkCli(
      [
        'demo',
        '--yes',
        '--state-dir',
        path.join(dir, 'state'),
        '--reader-socket',
        pcscd.socketPath,
        '--reader-name',
        pcscd.friendlyName,
        '--idp-port',
        '0',
        '--server-port',
        '0',
      ],
      env,
    );
    let text = '';
    demo.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    demo.stderr!.on('data', (d: Buffer) => (text += d.toString()));
    const exited = new Promise<number | string>((resolve) =>
      demo.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')),
    );
    try {
      await until(
        'the demo ready',
        async () => {
          if (demo.exitCode !== null) throw new Error(`the demo exited (${demo.exitCode}):\n${text}`);
          return text.includes(DEMO_READY_PREFIX) && text.includes('Press Ctrl-C') ? true : undefined;
        },
        READY_TIMEOUT_MS,
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n${text}`);
      });

      // Step 7 of 7: the tray, kept because its icon shows.
      const step = /^\[7\/7\] tray \.\.\. ok, icon shown \(tray pid (\d+)\)/m.exec(text);
      assert.ok(step, text);
      assert.match(text, /^ {2}tray: {7}running \(pid \d+\)/m);
      const trayPid = Number(step[1]);
      assert.ok(alive(trayPid), 'the tray runs');
      assert.match(commandLine(trayPid), /main\.js tray --config \S+daemon\.json/);
      assert.ok(descendants(demo.pid!).includes(trayPid), 'the demo started the tray');

      // systray2's tray program draws the icon: a child of the tray, with a window in trayer's panel.
      const programPid = await until('the tray program', async () =>
        descendants(trayPid).find((pid) => /tray_linux_release/.test(commandLine(pid))),
      );
      const icon = await until('the icon in the panel', async () => {
        for (const w of await desktop.windowsOf(programPid))
          if ((await desktop.ancestorNames(w.id)).includes('panel') && w.width > 0) return w;
        return undefined;
      });

      // The badge colour says what the icon shows: the demo user's session connected, with the card.
      const shownState = async (w: WindowGeometry): Promise<TrayIconState | undefined> => {
        const pixels = await desktop.pixels(w);
        const counts = TRAY_ICON_STATES.map((state) => {
          const [r, g, b] = TRAY_BADGE_COLOURS[state];
          return pixels.filter(([pr, pg, pb]) => Math.abs(pr - r) + Math.abs(pg - g) + Math.abs(pb - b) <= 24)
            .length;
        });
        const best = Math.max(...counts);
        return best >= 8 ? TRAY_ICON_STATES[counts.indexOf(best)] : undefined;
      };
      await until('the icon showing connected', async () =>
        (await shownState(icon)) === 'connected' ? true : undefined,
      );

      // Ctrl-C: the tray stops first, then the daemon (the card leaves the reader), then the rest.
      const started = descendants(demo.pid!);
      demo.kill('SIGINT');
      const timer = setTimeout(() => demo.kill('SIGKILL'), STOP_TIMEOUT_MS);
      const how = await exited;
      clearTimeout(timer);
      assert.equal(how, 0, text);
      assert.match(text, /^ {6}tray stopped$/m);
      assert.match(text, /daemon stopped; reader ".+" is empty/);
      assert.ok(
        text.indexOf('tray stopped') < text.indexOf('daemon stopped'),
        'the tray stops before the daemon',
      );
      const deadline = Date.now() + 10_000;
      while (started.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(
        started.filter(alive).map((pid) => `${pid}: ${commandLine(pid)}`),
        [],
        'every process the demo started has exited, the tray and its icon program included',
      );
      assert.deepEqual(await desktop.windowsOf(programPid), [], 'the icon left the panel');
      await waitForCardAbsent(pcscd.readerName(0), 5000);
    } finally {
      if (demo.exitCode === null && demo.signalCode === null) {
        demo.kill('SIGKILL');
        await exited;
      }
    }
  });
});
