/**
 * Using `cardlink tray` on a test's X desktop as a person would: find the icon in trayer's panel,
 * tell its state by the badge colour on screen, open the menu with a click, read it (tesseract)
 * and click an entry. For a tray started by test/support/tray.ts in a session of
 * test/support/desktop-session.ts.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TRAY_BADGE_COLOURS } from '../../tray/icons.js';
import { TRAY_ICON_STATES, type TrayIconState } from '../../tray/tray-state.js';
import type { DesktopSession, ReadLine, WindowGeometry } from './desktop-session.js';
import type { TestTray } from './tray.js';

/** How long a step on the desktop may take. */
export const DESKTOP_WAIT_MS = 30_000;

/** Polls `probe` until it gives a value; throws naming `what` after `timeoutMs`. */
export async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = DESKTOP_WAIT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

export interface TrayOnDesktop {
  /** The icon: the tray program's window inside trayer's panel. */
  icon(): Promise<WindowGeometry>;
  /** The state the icon shows, told by its badge colour on screen. */
  shownState(): Promise<TrayIconState | undefined>;
  waitForIcon(state: TrayIconState): Promise<void>;
  /** Clicks the icon and returns the menu's window. */
  openMenu(): Promise<WindowGeometry>;
  closeMenu(menu: WindowGeometry): Promise<void>;
  /**
   * Opens the menu until a line matches `line` (the view may lag the daemon by a status fetch);
   * the menu stays open.
   */
  menuShowing(
    line: RegExp,
  ): Promise<{ menu: WindowGeometry; lines: ReadLine[]; text: string[]; found: ReadLine }>;
  /** Opens the menu and clicks the entry whose text matches `entry`. */
  choose(entry: RegExp): Promise<void>;
  /** A screenshot of the panel's corner with the open menu, into `dir`. */
  keepScreenshot(dir: string, name: string, menu: WindowGeometry): Promise<void>;
}

export function trayOnDesktop(desktop: DesktopSession, tray: TestTray): TrayOnDesktop {
  const icon = () =>
    until('the icon in the panel', async () => {
      const pid = tray.programPid();
      if (!pid) return undefined;
      for (const w of await desktop.windowsOf(pid))
        if ((await desktop.ancestorNames(w.id)).includes('panel') && w.width > 0) return w;
      return undefined;
    });

  const shownState = async (): Promise<TrayIconState | undefined> => {
    const w = await icon();
    const pixels = await desktop.pixels(w);
    const counts = TRAY_ICON_STATES.map((state) => {
      const [r, g, b] = TRAY_BADGE_COLOURS[state];
      return pixels.filter(([pr, pg, pb]) => Math.abs(pr - r) + Math.abs(pg - g) + Math.abs(pb - b) <= 24)
        .length;
    });
    const best = Math.max(...counts);
    return best >= 8 ? TRAY_ICON_STATES[counts.indexOf(best)] : undefined;
  };

  const openMenu = async (): Promise<WindowGeometry> => {
    const w = await icon();
    const pid = tray.programPid()!;
    await desktop.click(w.x + w.width / 2, w.y + w.height / 2);
    return until('the menu', async () =>
      (await desktop.windowsOf(pid)).find((m) => m.id !== w.id && m.height > 100),
    );
  };

  const closeMenu = async (menu: WindowGeometry) => {
    await desktop.key('Escape');
    await until('the menu to close', async () =>
      (await desktop.windowsOf(tray.programPid()!)).some((m) => m.id === menu.id) ? undefined : true,
    );
  };

  const menuShowing = async (line: RegExp) => {
    for (let attempt = 0; ; attempt++) {
      const menu = await openMenu();
      const lines = await desktop.readText(menu);
      const text = lines.map((l) => l.text);
      const found = lines.find((l) => line.test(l.text));
      if (found) return { menu, lines, text, found };
      await closeMenu(menu);
      if (attempt >= 10)
        assert.fail(`the menu never showed ${line}; last:\n${text.join('\n')}\n${tray.output()}`);
      await new Promise((r) => setTimeout(r, 1000));
    }
  };

  return {
    icon,
    shownState,
    waitForIcon: (state) =>
      until(`the icon showing ${state}`, async () =>
        (await shownState()) === state ? true : undefined,
      ).then(
        () => undefined,
        async (e: Error) => {
          throw new Error(`${e.message}; it shows ${await shownState()}\n${tray.output()}`);
        },
      ),
    openMenu,
    closeMenu,
    menuShowing,
    async choose(entry) {
      const { found } = await menuShowing(entry);
      await desktop.click(found.x + found.width / 2, found.y + found.height / 2);
    },
    async keepScreenshot(dir, name, menu) {
      fs.mkdirSync(dir, { recursive: true });
      const x = Math.max(0, menu.x - 16);
      await desktop.screenshot(path.join(dir, name), {
        x,
        y: 0,
        width: 1024 - x,
        height: menu.y + menu.height + 16,
      });
    },
  };
}
