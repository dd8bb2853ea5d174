/**
 * The seam for the desktop tray in `cardlink demo`: an optional last step that starts
 * `cardlink tray --config <the demo daemon's config>` when this cardlink has that command and the
 * desktop can show a tray icon (a display, and a StatusNotifier host on the session bus). Where
 * either is missing the step is skipped and the demo works the same: sign-in happens in the demo.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { CARDLINK_MAIN, DAEMON_STOP_GRACE_MS } from './demo-daemon.js';

/** How long `cardlink tray --help` may take to answer. */
const PROBE_TIMEOUT_MS = 10_000;

export type TrayAvailability = { available: true } | { available: false; reason: string };

function hasStatusNotifierHost(): boolean {
  const r = spawnSync(
    'gdbus',
    [
      'call',
      '--session',
      '--dest',
      'org.freedesktop.DBus',
      '--object-path',
      '/org/freedesktop/DBus',
      '--method',
      'org.freedesktop.DBus.NameHasOwner',
      'org.kde.StatusNotifierWatcher',
    ],
    { encoding: 'utf8', timeout: PROBE_TIMEOUT_MS },
  );
  return r.status === 0 && r.stdout.includes('true');
}

/** Whether the tray step can run here, and why not. Cheap when there is no display. */
export function trayAvailability(): TrayAvailability {
  if (!process.env['DISPLAY'] && !process.env['WAYLAND_DISPLAY'])
    return { available: false, reason: 'no display' };
  if (!process.env['DBUS_SESSION_BUS_ADDRESS']) return { available: false, reason: 'no session bus' };
  const probe = spawnSync(process.execPath, [CARDLINK_MAIN, 'tray', '--help'], {
    stdio: 'ignore',
    timeout: PROBE_TIMEOUT_MS,
  });
  if (probe.status !== 0) return { available: false, reason: "this cardlink has no 'cardlink tray'" };
  if (!hasStatusNotifierHost())
    return { available: false, reason: 'the desktop shows no tray icons (no StatusNotifier host)' };
  return { available: true };
}

export interface DemoTray {
  readonly pid: number;
  stop(): Promise<void>;
}

/** Starts the tray for the demo daemon; stop() ends it (SIGTERM, then SIGKILL). */
export function startDemoTray(daemonConfigFile: string): DemoTray {
  const child: ChildProcess = spawn(process.execPath, [CARDLINK_MAIN, 'tray', '--config', daemonConfigFile], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((resolve) => {
    child.once('exit', () => resolve());
    child.once('error', () => resolve());
  });
  return {
    pid: child.pid ?? -1,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), DAEMON_STOP_GRACE_MS);
      await exited;
      clearTimeout(timer);
    },
  };
}
