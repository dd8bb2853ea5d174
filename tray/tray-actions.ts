/**
 * What the tray's menu entries do. Everything the daemon does is asked of it over the control
 * socket (DaemonWatch.request); what the daemon has no method for runs here, with the same code
 * the CLI uses: the sign-in (`cardlink login`'s browser sign-in) and the diagnostics bundle
 * (`cardlink diag`).
 *
 * Tokens: the tray hands the daemon the access token only and keeps the refresh token (in memory)
 * to renew the sign-in itself when the daemon says the token expires (docs/security-model.md,
 * "Refresh token only for a login without a tray").
 *
 * Change PIN… and Unblock PIN… open the tray's PIN page (tray/pin-page/) at a one-time link in the
 * system browser. Sign in… opens the browser sign-in; the tray's own sign-in window comes in a
 * later slice.
 */
import path from 'node:path';
import type { PinOperation } from '../apdu/piv/index.js';
import { PinPageOpener } from './pin-page/pin-page-opener.js';
import type { DaemonConfig } from '../daemon/config/daemon-config.js';
import type { DaemonStatus } from '../daemon/control/control-protocol.js';
import { openWithDesktop } from '../daemon/cli/desktop-open.js';
import { DAEMON_VERSION } from '../daemon/daemon.js';
import type { BrowserLogin } from '../daemon/login/authorization-code-login.js';
import type { OidcClientSettings } from '../daemon/login/oidc-client-settings.js';
import type { TokenGrant } from '../daemon/login/token-grant.js';
import { CardlinkError } from '../protocol/errors.js';
import type { DaemonWatch } from './daemon-watch.js';
import { hostOf } from './tray-state.js';

export interface TrayActionsDeps {
  config: DaemonConfig;
  watch: DaemonWatch;
  /** Shows an answer to the user (a notification, and the tray's output). */
  inform(summary: string, body: string): void;
  /** The daemon's last status, if the tray has one. */
  status(): DaemonStatus | undefined;
}

/** The daemon's log folder: `Open logs` opens it, and `Save diagnostics` writes there. */
export function logDirectory(config: DaemonConfig): string {
  return config.log.file ? path.dirname(config.log.file) : config.stateDir;
}

/** The tray's own sign-in, kept to renew it: the refresh token never goes to the daemon. */
interface TraySignIn {
  readonly settings: OidcClientSettings;
  refreshToken: string;
}

export class TrayActions {
  /** Change PIN… / Unblock PIN… (made on first use). */
  private pinPage: PinPageOpener | undefined;
  private login: BrowserLogin | undefined;
  private signedIn: TraySignIn | undefined;

  constructor(private readonly deps: TrayActionsDeps) {}

  connect(): Promise<null> {
    return this.deps.watch.request('connect');
  }

  disconnect(): Promise<null> {
    return this.deps.watch.request('disconnect');
  }

  signOut(): Promise<null> {
    this.signedIn = undefined;
    return this.deps.watch.request('logout');
  }

  /** Whether the tray holds a refresh token of its own sign-in to renew it with. */
  canRenew(): boolean {
    return this.signedIn !== undefined;
  }

  /** Drops the tray's sign-in (the daemon's session ended, or another sign-in replaced it). */
  forgetSignIn(): void {
    this.signedIn = undefined;
  }

  /**
   * Renews the tray's sign-in with its refresh token (on the daemon's `token-expiring`) and hands
   * the new access token over; the daemon renews the live session with it (RENEW_TOKEN). Rejects
   * with the refresh's error; ERR_LOGIN_EXPIRED also drops the refresh token (sign in again).
   */
  async renewSignIn(): Promise<void> {
    const held = this.signedIn;
    if (!held) throw new CardlinkError('ERR_LOGIN_EXPIRED', 'the tray has no sign-in of its own to renew');
    const { refreshAccessToken } = await import('../daemon/login/refresh-token.js');
    const { idpRequestOptionsFor } = await import('../daemon/login/login-settings.js');
    let grant: TokenGrant;
    try {
      grant = await refreshAccessToken(held.settings, held.refreshToken, idpRequestOptionsFor(held.settings));
    } catch (error) {
      if (error instanceof CardlinkError && error.code === 'ERR_LOGIN_EXPIRED' && this.signedIn === held)
        this.signedIn = undefined;
      throw error;
    }
    if (grant.refreshToken) held.refreshToken = grant.refreshToken;
    await this.handOver(held.settings, grant);
  }

  /**
   * Browser sign-in (Authorization Code + PKCE, loopback redirect) at the daemon's `login.issuer`;
   * the tokens go to the daemon. Resolves when they are handed over; rejects with the login's
   * error (ERR_LOGIN_CANCELLED after cancelSignIn()).
   */
  async signIn(): Promise<void> {
    const { config, inform } = this.deps;
    const { oidcSettingsFrom, idpRequestOptionsFor } = await import('../daemon/login/login-settings.js');
    const { startBrowserLogin } = await import('../daemon/login/authorization-code-login.js');
    const settings = oidcSettingsFrom(config);
    const login = await startBrowserLogin(settings, idpRequestOptionsFor(settings));
    this.login = login;
    try {
      const opened = await openWithDesktop(login.authorizationUrl);
      inform(
        'Sign in to cardlink',
        opened
          ? `Your browser opened the sign-in page. If it did not, open ${login.authorizationUrl}`
          : `Open this address in a browser to sign in: ${login.authorizationUrl}`,
      );
      const grant = await login.complete();
      await this.handOver(settings, grant);
      this.signedIn = grant.refreshToken ? { settings, refreshToken: grant.refreshToken } : undefined;
    } finally {
      this.login = undefined;
    }
  }

  /** The access token only (docs/security-model.md: the tray renews, so the daemon needs no refresh token). */
  private async handOver(settings: OidcClientSettings, grant: TokenGrant): Promise<void> {
    await this.deps.watch.request('hand-over-token', {
      accessToken: grant.accessToken,
      expiresAt: grant.expiresAt,
      issuer: settings.issuer,
      clientId: settings.clientId,
    });
  }

  /** Stops a sign-in waiting for the browser. */
  cancelSignIn(): void {
    this.login?.cancel();
  }

  /**
   * Change PIN… / Unblock PIN…: the tray's PIN page at a one-time link in the system browser
   * (tray/pin-page/). Resolves with the link, or undefined when no card is in the reader.
   */
  openPinPage(kind: PinOperation): Promise<string | undefined> {
    this.pinPage ??= new PinPageOpener(this.deps);
    return this.pinPage.open(kind);
  }

  /** Stops the PIN page's server, if it was started. */
  async close(): Promise<void> {
    await this.pinPage?.close();
  }

  /** Opens the folder of the daemon's log (and the diagnostics files) in the file manager. */
  async openLogs(): Promise<void> {
    const dir = logDirectory(this.deps.config);
    if (!(await openWithDesktop(dir))) this.deps.inform('cardlink logs', `The logs are in ${dir}`);
  }

  /** Writes the `cardlink diag` bundle and returns its path. */
  async saveDiagnostics(): Promise<string> {
    const { writeDiagnostics } = await import('../daemon/diag/diagnostics.js');
    const stamp = new Date().toISOString().replace(/[:.]/g, '-');
    const file = path.join(logDirectory(this.deps.config), `cardlink-diag-${stamp}.json`);
    const written = await writeDiagnostics(this.deps.config, file);
    this.deps.inform(
      'Diagnostics saved',
      `${written} (no tokens, PINs or keys; look it over before you send it)`,
    );
    return written;
  }

  about(): void {
    const server = this.deps.status()?.serverUrl ?? this.deps.config.server.url;
    this.deps.inform(
      `cardlink ${DAEMON_VERSION}`,
      `Virtual smart cards from ${server ? hostOf(server) : 'your card server'}. ` +
        `cardlink ${DAEMON_VERSION} on Node ${process.version}; free software under the Apache License 2.0.`,
    );
  }
}
