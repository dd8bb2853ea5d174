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
import { RefreshTokenStore } from './refresh-token-store.js';
import { issuerIndexOf } from './sign-in-menu.js';
import { SignInOwner } from './sign-in-owner.js';
import { TrayActions } from './tray-actions.js';
import {
  INITIAL_TRAY_MODEL,
  TRAY_ICON_STATES,
  nextClockCheck,
  trayView,
  withBusy,
  withClock,
  withDaemonUnreachable,
  withDeviceCode,
  withDiagnostics,
  withSignInChoices,
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

/** How long the tray waits before it tries again to restore a sign-in the IdP could not renew (unreachable). */
export const RESTORE_RETRY_MS = 30_000;

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
  private readonly owner: SignInOwner;
  private restoring = false;
  /** When the tray last renewed a sign-in that had run out (ms): a second within RESTORE_RETRY_MS ends it. */
  private lastExpiryRenewal = -Infinity;
  private restoreTimer: NodeJS.Timeout | undefined;
  private quit!: () => void;
  /** Resolves when the user chose Quit (or stop() was called). */
  readonly done = new Promise<void>((resolve) => (this.quit = resolve));

  private constructor(private readonly options: TrayAppOptions) {
    const paths = controlPaths({ runtimeDir: options.config.runtimeDir });
    this.watch = new DaemonWatch({ socketPath: paths.socketPath, secretFile: paths.secretFile });
    const config = options.config;
    this.owner = new SignInOwner({
      store: new RefreshTokenStore({ stateDir: config.stateDir, setting: config.tray.signInStore }),
      settingsFor: (signIn) => {
        // The configured identity provider the sign-in was made at, for its resource and scope.
        const known = config.login.issuers.find(
          (i) => i.issuer === signIn.issuer && i.clientId === signIn.clientId,
        );
        const resource = known ? known.resource : config.login.resource;
        return {
          issuer: signIn.issuer,
          clientId: signIn.clientId,
          scope: known?.scope ?? config.login.scope,
          ...(resource ? { resource } : {}),
        };
      },
      handOver: async (settings, grant) => {
        await this.watch.request('hand-over-token', {
          accessToken: grant.accessToken,
          expiresAt: grant.expiresAt,
          issuer: settings.issuer,
          clientId: settings.clientId,
        });
      },
      promptSignIn: (reason) =>
        this.notify({
          kind: 'session-ended',
          summary: 'Sign in to cardlink again',
          body: `${reason} Choose Sign in… in the cardlink menu to get your cards back.`,
          urgency: 'normal',
        }),
      out: options.out,
    });
    this.actions = new TrayActions({
      config,
      watch: this.watch,
      inform: (summary, body, outputBody) => this.inform(summary, body, outputBody),
      status: () => this.model.status,
      owner: this.owner,
    });
  }

  static async start(options: TrayAppOptions): Promise<TrayApp> {
    const app = new TrayApp(options);
    app.model = withSignInChoices(
      app.model,
      options.config.login.issuers.map((i) => i.name),
    );
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
      const before = app.model.status;
      if (status.user === undefined && before?.user !== undefined) {
        // Ran out (the renewal failed, or the IdP was away when it was due): renewing may still
        // work. Ended by someone (`cardlink logout`): the tray's sign-in ends with it.
        // A token refused right after a renewal (the server no longer takes this user) is not
        // renewed again and again: the sign-in ends, and the daemon's error asks the user once.
        const now = Date.now();
        const ranOut = status.lastError?.code === 'ERR_AUTH_TOKEN_INVALID';
        if (ranOut && app.owner.holds() && now - app.lastExpiryRenewal >= RESTORE_RETRY_MS) {
          app.lastExpiryRenewal = now;
          void app.restore();
        } else void app.actions.forgetSignIn();
      } else if (before === undefined) {
        // The first status from this daemon (the tray or the daemon started).
        if (status.user === undefined && status.state === 'logged-out') void app.restore();
        else if (status.user !== undefined) void app.owner.load().catch(() => false);
      }
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
    clearTimeout(this.restoreTimer);
    this.actions.cancelSignIn();
    await this.actions.close();
    await this.watch.stop();
    await this.menu?.close();
    this.notifier?.close();
    this.quit();
  }

  /**
   * Brings the stored sign-in back into a daemon without one; an IdP out of reach is tried again
   * every RESTORE_RETRY_MS while the daemon still has no sign-in. Never opens a browser.
   */
  private async restore(): Promise<void> {
    if (this.restoring) return;
    this.restoring = true;
    clearTimeout(this.restoreTimer);
    try {
      const result = await this.owner.restore();
      if (result === 'failed' && this.owner.holds())
        this.restoreTimer = setTimeout(() => {
          if (this.model.status !== undefined && this.model.status.user === undefined) void this.restore();
        }, RESTORE_RETRY_MS);
    } finally {
      this.restoring = false;
      this.watch.refresh();
    }
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
    const notifying = this.notifier !== undefined && !this.notifyFailed;
    const body = notifying ? (notice.outputBody ?? notice.body) : notice.body;
    this.options.out(`cardlink tray: ${notice.summary}: ${body}`);
    this.notifier?.notify(notice).catch((error: unknown) => {
      if (this.notifyFailed) return;
      this.notifyFailed = true;
      this.options.out(`cardlink tray: a desktop notification failed: ${message(error)}`);
    });
  }

  private inform(summary: string, body: string, outputBody?: string): void {
    this.notify({ kind: 'info', summary, body, urgency: 'low', ...(outputBody ? { outputBody } : {}) });
  }

  /**
   * Carries out a menu action (a click in the menu; a test without a tray host calls it directly);
   * its entry is disabled meanwhile and a failure is shown.
   */
  async run(action: TrayAction): Promise<void> {
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
        case 'sign-in-2':
        case 'sign-in-3':
        case 'sign-in-4':
        case 'sign-in-5':
        case 'sign-in-6':
        case 'sign-in-7':
        case 'sign-in-8':
          this.set(withSigningIn(this.model, true));
          try {
            await this.actions.signIn(issuerIndexOf(action));
          } finally {
            this.set(withSigningIn(this.model, false));
          }
          break;
        case 'sign-in-code':
          this.set(withSigningIn(this.model, true));
          try {
            await this.actions.signInWithCode((code) => this.set(withDeviceCode(this.model, code)));
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
        case 'set-pin':
          await this.actions.openPinPage('set');
          break;
        case 'enroll':
          await this.actions.enroll();
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
  'sign-in-2': 'sign-in',
  'sign-in-3': 'sign-in',
  'sign-in-4': 'sign-in',
  'sign-in-5': 'sign-in',
  'sign-in-6': 'sign-in',
  'sign-in-7': 'sign-in',
  'sign-in-8': 'sign-in',
  'sign-in-code': 'sign-in with a code',
  'cancel-sign-in': 'cancelling the sign-in',
  'sign-out': 'sign-out',
  connect: 'Connect',
  disconnect: 'Disconnect',
  'change-pin': 'Change PIN',
  'unblock-pin': 'Unblock PIN',
  'set-pin': 'Set a new PIN',
  enroll: 'Get certificates',
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
