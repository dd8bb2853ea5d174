/**
 * Opens a URL or a folder with the desktop's default application, for `cardlink login`'s browser
 * and the tray's "Sign in…", the PIN page and "Open logs". Whoever calls it also prints or shows the
 * target, so a desktop without an opener loses nothing.
 *
 * Per platform:
 * - Linux: the desktop's own `xdg-open` (xdg-utils: honours the user's default browser on every
 *   desktop), then GLib's `gio open` where xdg-open is missing or fails (GNOME installs without
 *   xdg-utils). Both are looked up on PATH, so a test can put its own first.
 * - macOS, Windows and Linux under WSL: the maintained `open` package (it runs `open`, PowerShell's
 *   Start-Process, or Windows' browser from WSL, each with the quoting that platform needs). It is
 *   loaded only there. Not run on those systems by this project's tests (docs/tray.md).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';

/** The Linux openers, tried in order; a test puts its own first on PATH. */
export const DESKTOP_OPENERS: readonly (readonly string[])[] = [['xdg-open'], ['gio', 'open']];

/** Which opener a platform uses. */
export type OpenerKind = 'xdg' | 'open-package';

/** Linux under WSL: the browser is Windows'. */
function isWsl(): boolean {
  try {
    return /microsoft/i.test(fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8'));
  } catch {
    return false;
  }
}

/** The opener for `platform` (process.platform by default). */
export function openerKind(platform: NodeJS.Platform = process.platform, wsl = isWsl): OpenerKind {
  if (platform === 'darwin' || platform === 'win32') return 'open-package';
  if (platform === 'linux' && wsl()) return 'open-package';
  return 'xdg';
}

/** Runs one opener command; true once it ran and exited 0. Never throws. */
function runOpener(command: readonly string[], target: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      const child = spawn(command[0]!, [...command.slice(1), target], { stdio: 'ignore', detached: true });
      child.once('error', () => resolve(false));
      child.once('exit', (code) => resolve(code === 0));
      child.unref();
    } catch {
      resolve(false);
    }
  });
}

/**
 * Starts the platform's opener for `target` and resolves true once it ran, false when there is
 * none or it failed. Never throws. The target is one argument, never shell text.
 */
export async function openWithDesktop(target: string): Promise<boolean> {
  if (openerKind() === 'open-package') {
    try {
      const { default: open } = await import('open');
      const child = await open(target, { wait: false });
      return await new Promise<boolean>((resolve) => {
        child.once('error', () => resolve(false));
        child.once('spawn', () => resolve(true));
        // Already spawned before the listener: the pid says so.
        if (child.pid !== undefined) resolve(true);
      });
    } catch {
      return false;
    }
  }
  for (const command of DESKTOP_OPENERS) {
    if (await runOpener(command, target)) return true;
  }
  return false;
}
