/**
 * The desktop tray in `cardlink demo`: the last step, where a display exists, starts the real
 * `cardlink tray --config <the demo daemon's config>` (tray/cli/tray-command.ts), which finds the
 * demo daemon through that config's runtime directory and shows its state and the demo card.
 *
 * Whether an icon can show is the tray's own finding, not guessed here: a desktop may host tray
 * icons as a StatusNotifier host on the session bus (KDE, GNOME with the AppIndicator extension)
 * or as an XEmbed system tray (trayer, XFCE, MATE), and the tray program tries both. The demo waits
 * for the tray's start line; with an icon the tray runs until the demo stops, without one (no tray
 * host, the tray program cannot start) the demo stops it again and says why. Without a display the
 * step is skipped. Either way the demo works the same: the sign-in happens in the demo.
 *
 * Like the daemon, the tray runs in a process group of its own (Ctrl-C reaches the demo alone,
 * which stops the tray first) and dies with the demo even if the demo is killed (setpriv).
 */
import type { ChildProcess } from 'node:child_process';
import { CardlinkError } from '../protocol/errors.js';
import { CARDLINK_MAIN, DAEMON_STOP_GRACE_MS, spawnTiedToDemo } from './demo-daemon.js';

/**
 * How long the tray may take to print its start line: node and the tray's modules, then the tray
 * program, which the tray itself waits for up to TRAY_READY_TIMEOUT_MS (15 s, tray/menu.ts).
 */
const TRAY_START_TIMEOUT_MS = 25_000;
/** Bytes of the tray's output kept for a message. */
const OUTPUT_KEPT_BYTES = 4000;
/** The tray's line once it runs: `cardlink tray: started (icon ready, tray program pid N, ...)`. */
const TRAY_STARTED = /^cardlink tray: started \((.*)\)$/m;
/** The tray's line when the icon cannot show: `cardlink tray: no tray icon: <why>. Running on ...`. */
const TRAY_NO_ICON = /^cardlink tray: no tray icon: (.*?)\. Running on/m;

/** Whether the tray step runs here: a display to show an icon on. */
export function trayWanted(
  env: NodeJS.ProcessEnv = process.env,
): { wanted: true } | { wanted: false; reason: string } {
  if (!env['DISPLAY'] && !env['WAYLAND_DISPLAY']) return { wanted: false, reason: 'no display' };
  return { wanted: true };
}

export interface DemoTray {
  readonly pid: number;
  /** The pid of the tray program that draws the icon (systray2's). */
  readonly iconPid: number;
  /** What the tray printed so far (its state lines). */
  output(): string;
  /** SIGTERM, then SIGKILL after DAEMON_STOP_GRACE_MS; resolves once it has exited. */
  stop(): Promise<void>;
}

/** How the tray step ended: running with its icon, or stopped again with the reason. */
export type DemoTrayStart = { running: true; tray: DemoTray } | { running: false; reason: string };

/**
 * Starts the tray for the demo daemon (`env`: the demo's environment without CARDLINK_*, as the
 * daemon gets it) and waits for its start line.
 */
export async function startDemoTray(
  daemonConfigFile: string,
  env: NodeJS.ProcessEnv,
  signal: AbortSignal,
): Promise<DemoTrayStart> {
  const child: ChildProcess = spawnTiedToDemo([CARDLINK_MAIN, 'tray', '--config', daemonConfigFile], env);
  let text = '';
  const keep = (d: Buffer) => {
    text = (text + d.toString()).slice(-OUTPUT_KEPT_BYTES);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<string>((resolve) => {
    child.once('exit', (code, sig) => resolve(sig ?? `exit code ${code}`));
    child.once('error', (e) => resolve(`not started: ${e.message}`));
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const kill = setTimeout(() => child.kill('SIGKILL'), DAEMON_STOP_GRACE_MS);
    await exited;
    clearTimeout(kill);
  };

  let started: RegExpExecArray;
  try {
    started = await new Promise<RegExpExecArray>((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        child.stdout!.off('data', look);
        signal.removeEventListener('abort', onAbort);
      };
      const look = () => {
        const m = TRAY_STARTED.exec(text);
        if (m) {
          done();
          resolve(m);
        }
      };
      const onAbort = () => {
        done();
        reject(signal.reason as Error);
      };
      const timer = setTimeout(() => {
        done();
        reject(new CardlinkError('ERR_INTERNAL', `the tray did not start in time:\n${text.trim()}`));
      }, TRAY_START_TIMEOUT_MS);
      child.stdout!.on('data', look);
      signal.addEventListener('abort', onAbort, { once: true });
      void exited.then((how) => {
        done();
        reject(new CardlinkError('ERR_INTERNAL', `the tray stopped at start (${how}):\n${text.trim()}`));
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
  const iconPid = /tray program pid (\d+)/.exec(started[1]!);
  if (!iconPid) {
    await stop();
    return { running: false, reason: `no tray icon: ${TRAY_NO_ICON.exec(text)?.[1] ?? started[1]}` };
  }
  return {
    running: true,
    tray: { pid: child.pid ?? -1, iconPid: Number(iconPid[1]), output: () => text, stop },
  };
}
