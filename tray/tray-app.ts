/**
 * `cardlink tray`, wired: the daemon watch feeds the view model (tray-state.ts); each new view
 * goes to the icon and menu (menu.ts), each notice to the desktop's notifications
 * (notifications.ts), and each menu action to tray-actions.ts.
 *
 * The icon is optional: without a tray host (no display, the tray program cannot start or is not
 * ready in time) the tray says so once and goes on without it, so notifications still come and
 * its output still tells the state. Notifications are optional the same way.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { DaemonConfig } from '../daemon/config/daemon-config.js';
import { controlPaths } from '../daemon/control/control-paths.js';
import type { ControlEvent } from '../daemon/control/control-protocol.js';
import { CardlinkError } from '../protocol/errors.js';
import { DaemonWatch } from './daemon-watch.js';
import { trayIconPng } from './icons.js';
import { TrayMenu } from './menu.js';
import { DesktopNotifier } from './notifications.js';
import { TrayActions } from './tray-actions.js';
import {
  INITIAL_TRAY_MODEL,
  TRAY_ICON_STATES,
  nextClockCheck,
  trayView,
  withBusy,
  withClock,
  withDaemonUnreachable,
  withDiagnostics,
  withEvent,
  withSigningIn,
  withStatus,
  type TrayAction,
  type TrayIconState,
  type TrayModel,
  type TrayNotice,
  type TrayStep,
} from './tray-state.js';

export interface TrayAppOptions {
  config: DaemonConfig;
  /** Private directory for the tray program's copy and the icon files (0700). */
  cacheDir: string;
  /** One line of output (the state as it changes, what the tray cannot do). */
  out: (line: string) => void;
  /** Overrides TRAY_READY_TIMEOUT_MS. */
  readyTimeoutMs?: number;
}

/** The icon shown with each kind of notice. */
const NOTICE_ICON: Record<TrayNotice['kind'], TrayIconState> = {
  'taken-over': 'taken-over',
  'card-blocked': 'error',
  'session-expiring': 'signed-out',
  'session-ended': 'signed-out',
  'server-unreachable': 'reconnecting',
  'back-online': 'connected',
  info: 'connected',
};

export class TrayApp {
  private model: TrayModel = INITIAL_TRAY_MODEL;
  private lastTooltip = '';
  private menu: TrayMenu | undefined;
  private notifier: DesktopNotifier | undefined;
  private clockTimer: NodeJS.Timeout | undefined;
  private notifyFailed = false;
  private readonly watch: DaemonWatch;
  private readonly actions: TrayActions;
  private quit!: () => void;
  /** Resolves when the user chose Quit (or stop() was called). */
  readonly done = new Promise<void>((resolve) => (this.quit = resolve));

  private constructor(private readonly options: TrayAppOptions) {
    const paths = controlPaths({ runtimeDir: options.config.runtimeDir });
    this.watch = new DaemonWatch({ socketPath: paths.socketPath, secretFile: paths.secretFile });
    this.actions = new TrayActions({
      config: options.config,
      watch: this.watch,
      inform: (summary, body) => this.inform(summary, body),
      status: () => this.model.status,
    });
  }

  static async start(options: TrayAppOptions): Promise<TrayApp> {
    const app = new TrayApp(options);
    const pngs = Object.fromEntries(TRAY_ICON_STATES.map((s) => [s, trayIconPng(s)])) as Record<
      TrayIconState,
      Buffer
    >;
    const iconFiles = writeIconFiles(path.join(options.cacheDir, 'icons'), pngs);
    const [menu, notifier] = await Promise.all([
      TrayMenu.start(trayView(app.model), {
        icons: Object.fromEntries(TRAY_ICON_STATES.map((s) => [s, pngs[s].toString('base64')])) as Record<
          TrayIconState,
          string
        >,
        cacheDir: options.cacheDir,
        ...(options.readyTimeoutMs !== undefined ? { readyTimeoutMs: options.readyTimeoutMs } : {}),
      }).catch((error: unknown) => {
        options.out(
          `cardlink tray: no tray icon: ${message(error)}. ` +
            'Running on without it: notifications and this output still tell the state.',
        );
        return undefined;
      }),
      DesktopNotifier.open({
        icons: Object.fromEntries(
          Object.entries(NOTICE_ICON).map(([kind, state]) => [kind, iconFiles[state]]),
        ),
      }).catch((error: unknown) => {
        options.out(`cardlink tray: no desktop notifications: ${message(error)}`);
        return undefined;
      }),
    ]);
    app.menu = menu;
    app.notifier = notifier;
    menu?.on('action', (action) => void app.run(action));
    menu?.on('lost', (error) => {
      options.out(`cardlink tray: the tray icon is gone: ${error.message}. Running on without it.`);
      app.menu = undefined;
    });
    app.watch.on('status', (status) => {
      // The daemon dropped the token the tray signed in with (sign-out, expiry, refused): the
      // refresh token goes too. Told by the user vanishing, not by the state: the daemon passes
      // through logged-out (with its token kept) while it disconnects. And only on the change: a
      // status fetched just before a sign-in's hand-over has no user either, and must not drop
      // the sign-in it never saw (fetches never overlap).
      if (status.user === undefined && app.model.status?.user !== undefined) app.actions.forgetSignIn();
      app.apply(withStatus(app.model, status, Date.now()));
    });
    app.watch.on('event', (event) => {
      if (event.event === 'token-expiring' && app.actions.canRenew()) void app.renew(event);
      else app.apply(withEvent(app.model, event, Date.now()));
    });
    app.watch.on('unreachable', (error) =>
      app.set(withDaemonUnreachable(app.model, { code: error.code, message: error.message })),
    );
    app.watch.start();
    options.out(
      `cardlink tray: started (${menu ? `icon ready, tray program pid ${menu.pid}` : 'no icon'}` +
        `${notifier ? `, notifications by ${notifier.server}` : ''})`,
    );
    return app;
  }

  /** Removes the icon and closes the connections. */
  async stop(): Promise<void> {
    clearTimeout(this.clockTimer);
    this.actions.cancelSignIn();
    await this.actions.close();
    await this.watch.stop();
    await this.menu?.close();
    this.notifier?.close();
    this.quit();
  }

  /** Renews the tray's own sign-in; only when that fails does the user hear the session expires. */
  private async renew(event: ControlEvent): Promise<void> {
    try {
      await this.actions.renewSignIn();
      this.options.out('cardlink tray: sign-in renewed');
    } catch (error) {
      this.options.out(`cardlink tray: the sign-in could not be renewed: ${message(error)}`);
      this.apply(withEvent(this.model, event, Date.now()));
    }
  }

  private apply(step: TrayStep): void {
    this.set(step.model);
    for (const notice of step.notices) this.notify(notice);
  }

  private set(model: TrayModel): void {
    this.model = model;
    const view = trayView(model);
    this.menu?.update(view);
    if (view.tooltip !== this.lastTooltip) {
      this.lastTooltip = view.tooltip;
      this.options.out(`cardlink tray: ${view.tooltip.replace(/^cardlink: /, '')}`);
    }
    clearTimeout(this.clockTimer);
    const at = nextClockCheck(model);
    if (at !== undefined)
      this.clockTimer = setTimeout(
        () => this.apply(withClock(this.model, Date.now())),
        Math.max(0, at - Date.now()),
      );
  }

  private notify(notice: TrayNotice): void {
    this.options.out(`cardlink tray: ${notice.summary}: ${notice.body}`);
    this.notifier?.notify(notice).catch((error: unknown) => {
      if (this.notifyFailed) return;
      this.notifyFailed = true;
      this.options.out(`cardlink tray: a desktop notification failed: ${message(error)}`);
    });
  }

  private inform(summary: string, body: string): void {
    this.notify({ kind: 'info', summary, body, urgency: 'low' });
  }

  /** Carries out a menu action; its entry is disabled meanwhile and a failure is shown. */
  private async run(action: TrayAction): Promise<void> {
    if (action === 'quit') {
      await this.stop();
      return;
    }
    if (action === 'cancel-sign-in') {
      this.actions.cancelSignIn();
      return;
    }
    this.set(withBusy(this.model, action, true));
    try {
      switch (action) {
        case 'sign-in':
          this.set(withSigningIn(this.model, true));
          try {
            await this.actions.signIn();
          } finally {
            this.set(withSigningIn(this.model, false));
          }
          break;
        case 'sign-out':
          await this.actions.signOut();
          break;
        case 'connect':
          await this.actions.connect();
          break;
        case 'disconnect':
          await this.actions.disconnect();
          break;
        case 'change-pin':
          await this.actions.openPinPage('change');
          break;
        case 'unblock-pin':
          await this.actions.openPinPage('unblock');
          break;
        case 'open-logs':
          await this.actions.openLogs();
          break;
        case 'save-diagnostics':
          this.set(withDiagnostics(this.model, await this.actions.saveDiagnostics()));
          break;
        case 'about':
          this.actions.about();
          break;
      }
    } catch (error) {
      if (!(error instanceof CardlinkError && error.code === 'ERR_LOGIN_CANCELLED'))
        this.inform(`cardlink: ${ACTION_NAMES[action]} failed`, message(error));
    } finally {
      this.set(withBusy(this.model, action, false));
      this.watch.refresh();
    }
  }
}

const ACTION_NAMES: Record<TrayAction, string> = {
  'sign-in': 'sign-in',
  'cancel-sign-in': 'cancelling the sign-in',
  'sign-out': 'sign-out',
  connect: 'Connect',
  disconnect: 'Disconnect',
  'change-pin': 'Change PIN',
  'unblock-pin': 'Unblock PIN',
  'open-logs': 'Open logs',
  'save-diagnostics': 'Save diagnostics',
  about: 'About',
  quit: 'Quit',
};

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Writes each state's icon as `<dir>/<state>.png` (notifications show them) and returns the paths. */
function writeIconFiles(dir: string, pngs: Record<TrayIconState, Buffer>): Record<TrayIconState, string> {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const files = {} as Record<TrayIconState, string>;
  for (const state of TRAY_ICON_STATES) {
    const file = path.join(dir, `${state}.png`);
    fs.writeFileSync(file, pngs[state], { mode: 0o644 });
    files[state] = file;
  }
  return files;
}
