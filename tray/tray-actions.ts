/**
 * What the tray's menu entries do. Everything the daemon does is asked of it over the control
 * socket (DaemonWatch.request); what the daemon has no method for runs here, with the same code
 * the CLI uses: the sign-in (`cardlink login`'s browser sign-in) and the diagnostics bundle
 * (`cardlink diag`).
 *
 * Tokens: the tray hands the daemon the access token only; the refresh token belongs to the tray's
 * SignInOwner (sign-in-owner.ts: memory and the keyring), which renews the sign-in when the daemon
 * says the token expires (docs/security-model.md, "The refresh token's owner").
 *
 * Change PIN…, Unblock PIN… and Set a new PIN… open the tray's PIN page (tray/pin-page/) at a one-time link in the
 * system browser. Sign in… opens the browser sign-in; the tray's own sign-in window comes in a
 * later slice.
 */
import path from 'node:path';
import type { PinPageOperation } from './pin-page/one-time-links.js';
import { PinPageOpener } from './pin-page/pin-page-opener.js';
import type { DaemonConfig } from '../daemon/config/daemon-config.js';
import type { DaemonStatus } from '../daemon/control/control-protocol.js';
import { openWithDesktop } from '../daemon/cli/desktop-open.js';
import { DAEMON_VERSION } from '../daemon/daemon.js';
import type { BrowserLogin } from '../daemon/login/authorization-code-login.js';
import type { DaemonWatch } from './daemon-watch.js';
import { copyToClipboard } from './clipboard.js';
import type { DeviceCodePrompt } from './sign-in-menu.js';
import type { SignInOwner } from './sign-in-owner.js';
import { hostOf } from './tray-state.js';

export interface TrayActionsDeps {
  config: DaemonConfig;
  watch: DaemonWatch;
  /** Shows an answer to the user (a notification, and the tray's output). */
  /** `outputBody`: the body for the tray's output line where `body` holds a secret (TrayNotice). */
  inform(summary: string, body: string, outputBody?: string): void;
  /** The daemon's last status, if the tray has one. */
  status(): DaemonStatus | undefined;
  /** The tray's sign-in and its refresh token. */
  owner: SignInOwner;
}

/** The daemon's log folder: `Open logs` opens it, and `Save diagnostics` writes there. */
export function logDirectory(config: DaemonConfig): string {
  return config.log.file ? path.dirname(config.log.file) : config.stateDir;
}

export class TrayActions {
  /** Change PIN… / Unblock PIN… / Set a new PIN… (made on first use). */
  private pinPage: PinPageOpener | undefined;
  private login: BrowserLogin | undefined;
  private codeLogin: AbortController | undefined;

  constructor(private readonly deps: TrayActionsDeps) {}

  connect(): Promise<null> {
    return this.deps.watch.request('connect');
  }

  disconnect(): Promise<null> {
    return this.deps.watch.request('disconnect');
  }

  /**
   * Get certificates: self-service enrollment of the card in the reader (the daemon's `enroll`);
   * a refusal (the profile does not allow it) reaches the user as the action's failure notice.
   */
  async enroll(): Promise<void> {
    const result = await this.deps.watch.request('enroll', {});
    this.deps.inform(
      'Certificates issued',
      `${result.label}: ${result.certificates} new certificates from your organisation; they are in the reader now.`,
    );
  }

  /**
   * The daemon's `logout` empties the reader; then the refresh token leaves memory and keyring
   * and is revoked at the IdP where it offers revocation (RFC 7009).
   */
  async signOut(): Promise<null> {
    const revoked = await this.deps.owner.signOut(() => this.deps.watch.request('logout'));
    if (revoked === 'not-supported')
      this.deps.inform(
        'Signed out of cardlink',
        'Your identity provider offers no token revocation: the sign-in runs out on its own at its expiry.',
      );
    return null;
  }

  /** Whether the tray holds a refresh token of its own sign-in to renew it with. */
  canRenew(): boolean {
    return this.deps.owner.holds();
  }

  /** Drops the tray's sign-in (the daemon's session ended without the tray, e.g. `cardlink logout`). */
  forgetSignIn(): Promise<void> {
    return this.deps.owner.forget();
  }

  /**
   * Renews the tray's sign-in with its refresh token (on the daemon's `token-expiring`) and hands
   * the new access token over; the daemon renews the live session with it (RENEW_TOKEN). Rejects
   * with the refresh's error; a final one (ERR_LOGIN_EXPIRED) also drops the refresh token.
   */
  renewSignIn(): Promise<void> {
    return this.deps.owner.renew();
  }

  /**
   * Browser sign-in (Authorization Code + PKCE, loopback redirect) at the `issuer`th configured
   * identity provider (0: the default); the tokens go to the daemon. Resolves when they are handed
   * over; rejects with the login's error (ERR_LOGIN_CANCELLED after cancelSignIn()).
   */
  async signIn(issuer = 0): Promise<void> {
    const { config, inform } = this.deps;
    const { oidcSettingsAt, browserLoginOptionsFor } = await import('../daemon/login/login-settings.js');
    const { startBrowserLogin } = await import('../daemon/login/authorization-code-login.js');
    const settings = oidcSettingsAt(config, issuer);
    const login = await startBrowserLogin(settings, browserLoginOptionsFor(config, settings));
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
      await this.deps.owner.adopt(settings, grant);
    } finally {
      this.login = undefined;
    }
  }

  /**
   * Sign-in with a code (RFC 8628 device authorization grant) at the default identity provider,
   * for where no browser opens here: `onCode` gets the code and the address (the menu shows them),
   * the address goes to the clipboard where a tool exists, and a notification says both. Resolves
   * once the user finished on any device and the tokens are handed over.
   */
  async signInWithCode(onCode: (code: DeviceCodePrompt | undefined) => void): Promise<void> {
    const { config, inform } = this.deps;
    const { oidcSettingsAt, idpRequestOptionsFor } = await import('../daemon/login/login-settings.js');
    const { startDeviceCodeLogin } = await import('../daemon/login/device-code-login.js');
    const settings = oidcSettingsAt(config, 0);
    const control = new AbortController();
    this.codeLogin = control;
    try {
      const login = await startDeviceCodeLogin(settings, {
        ...idpRequestOptionsFor(settings),
        signal: control.signal,
      });
      const address = login.verificationUriComplete ?? login.verificationUri;
      const copied = await copyToClipboard(address);
      onCode({ userCode: login.userCode, verificationUri: login.verificationUri });
      inform(
        'Sign in to cardlink with a code',
        `On any device, open ${login.verificationUri} and enter the code ${login.userCode}.` +
          (copied ? ' The address is on the clipboard.' : ''),
      );
      const grant = await login.complete();
      await this.deps.owner.adopt(settings, grant);
    } finally {
      this.codeLogin = undefined;
      onCode(undefined);
    }
  }

  /** Stops a sign-in waiting for the browser or for the code to be entered. */
  cancelSignIn(): void {
    this.login?.cancel();
    this.codeLogin?.abort();
  }

  /**
   * Change PIN… / Unblock PIN… / Set a new PIN…: the tray's PIN page at a one-time link in the
   * system browser (tray/pin-page/); Set a new PIN… starts with a fresh sign-in at the identity
   * provider the tray signed in at. Resolves with the link, or undefined when no card is in the reader.
   */
  openPinPage(kind: PinPageOperation): Promise<string | undefined> {
    this.pinPage ??= new PinPageOpener({ ...this.deps, signedInWith: () => this.deps.owner.signedInWith() });
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
