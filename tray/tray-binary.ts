/**
 * systray2 draws the icon with a small prebuilt program it ships (`traybin/tray_<os>_release`,
 * Go on GTK3 and libappindicator on Linux). Its files are unpacked 0644 and its own chmod fails
 * silently (docs/tray.md), and in a system-wide install the package directory is not the user's
 * to change. So the tray copies the program into a private cache directory of its own (0700),
 * makes the copy 0755 and points systray2 there (its `copyDir`).
 *
 * systray2 also looks for `./traybin/<program>` in the working directory before its own; handing
 * it a `copyDir` whose program already exists means it runs exactly the copy made here, never a
 * file someone left in whatever directory the tray was started from.
 */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { CardlinkError } from '../protocol/errors.js';

const require = createRequire(import.meta.url);

/** The program's file name for this platform, as systray2 names it. */
export function trayProgramName(platform: NodeJS.Platform = process.platform): string | undefined {
  switch (platform) {
    case 'linux':
      return 'tray_linux_release';
    case 'darwin':
      return 'tray_darwin_release';
    case 'win32':
      return 'tray_windows_release.exe';
    default:
      return undefined;
  }
}

/**
 * Copies the program into `<cacheDir>/<systray2 version>/` (fresh each start: a copy left by an
 * older package version or changed since is never run) and returns `cacheDir`, systray2's copyDir.
 */
export function prepareTrayProgram(cacheDir: string): string {
  const name = trayProgramName();
  if (!name)
    throw new CardlinkError(
      'ERR_TRAY_HOST_UNAVAILABLE',
      `systray2 has no tray program for ${process.platform}`,
    );
  const packageDir = path.dirname(require.resolve('systray2/package.json'));
  const { version } = require('systray2/package.json') as { version: string };
  const source = path.join(packageDir, 'traybin', name);
  fs.mkdirSync(cacheDir, { recursive: true, mode: 0o700 });
  fs.chmodSync(cacheDir, 0o700);
  const dir = path.join(cacheDir, version);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const target = path.join(dir, name);
  const temporary = `${target}.${process.pid}.tmp`;
  try {
    fs.copyFileSync(source, temporary);
    fs.chmodSync(temporary, 0o755);
    fs.renameSync(temporary, target);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw new CardlinkError(
      'ERR_TRAY_HOST_UNAVAILABLE',
      `cannot put the tray program into ${dir}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      { path: dir },
    );
  }
  return cacheDir;
}
