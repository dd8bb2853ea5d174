/**
 * Opens a URL or a folder with the desktop's default application (`xdg-open`, from xdg-utils),
 * for `cardlink login`'s browser and the tray's "Sign in…" and "Open logs". Whoever calls it also
 * prints or shows the target, so a desktop without an opener loses nothing.
 */
import { spawn } from 'node:child_process';

/** The opener; a test puts its own first on PATH. */
export const DESKTOP_OPENER = 'xdg-open';

/**
 * Starts the opener for `target` and resolves true once it ran and exited 0, false when there is
 * none or it failed. Never throws. The target is one argument, never shell text.
 */
export function openWithDesktop(target: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      const child = spawn(DESKTOP_OPENER, [target], { stdio: 'ignore', detached: true });
      child.once('error', () => resolve(false));
      child.once('exit', (code) => resolve(code === 0));
      child.unref();
    } catch {
      resolve(false);
    }
  });
}
