/**
 * `cardlink tray` as a child process for a test, against a test daemon's config (so it finds that
 * daemon's control socket), in a desktop session of the test's (test/support/desktop-session.ts)
 * or none. Its `xdg-open` is a recorder first on PATH: the test reads what the tray asked the
 * desktop to open (the sign-in page, the logs folder) and plays the browser itself.
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { cardlinkCli } from './daemon.js';

export interface TestTray {
  readonly child: ChildProcess;
  /** Everything the tray printed so far. */
  output(): string;
  /** Waits until the output matches `pattern`; returns the match. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  /** What the tray had `xdg-open` open, in order. */
  opened(): string[];
  /** The pid of systray2's tray program (from the tray's start line), if it has an icon. */
  programPid(): number | undefined;
  /** SIGTERM, then waits for the exit; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export interface StartTrayOptions {
  /** The daemon's config file. */
  configFile: string;
  /** A directory for the tray's cache and the recorder. */
  dir: string;
  /** DISPLAY, DBUS_SESSION_BUS_ADDRESS and the like; others (DISPLAY…) are removed. */
  env: Record<string, string>;
}

const DESKTOP_VARIABLES = ['DISPLAY', 'WAYLAND_DISPLAY', 'DBUS_SESSION_BUS_ADDRESS'];

export function startTestTray(options: StartTrayOptions): TestTray {
  const bin = path.join(options.dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  const openedFile = path.join(options.dir, 'opened.txt');
  fs.writeFileSync(path.join(bin, 'xdg-open'), `#!/bin/sh\nprintf '%s\\n' "$1" >> '${openedFile}'\n`, {
    mode: 0o755,
  });
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of DESKTOP_VARIABLES) delete env[name];
  Object.assign(env, options.env, {
    PATH: `${bin}:${process.env['PATH'] ?? ''}`,
    XDG_CACHE_HOME: path.join(options.dir, 'cache'),
  });
  const child = cardlinkCli(['tray', '--config', options.configFile], env);
  let text = '';
  child.stdout!.on('data', (d: Buffer) => (text += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    output: () => text,
    async waitForOutput(pattern, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = pattern.exec(text);
        if (m) return m;
        if (child.exitCode !== null || Date.now() > deadline)
          throw new Error(`the tray never printed ${pattern} (exit ${child.exitCode}):\n${text}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    opened: () =>
      fs.existsSync(openedFile) ? fs.readFileSync(openedFile, 'utf8').split('\n').filter(Boolean) : [],
    programPid() {
      const m = /tray program pid (\d+)/.exec(text);
      return m ? Number(m[1]) : undefined;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        const code = await exited;
        clearTimeout(timer);
        return code;
      }
      return exited;
    },
  };
}
