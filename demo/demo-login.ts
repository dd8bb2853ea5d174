/**
 * Signs the demo user in with the daemon's own login code (daemon/login/) and hands the tokens to
 * the demo's daemon, as `cardlink login` does:
 * - `browser`: Authorization Code + PKCE with a loopback redirect, the browser opened by xdg-open;
 * - `device`: the device authorization grant, the code printed for the user to enter;
 * - `yes` (`--yes`): the browser login, with the demo user's part done by the demo itself through the
 *   demo IdP's real authorization endpoint and login page (idp/idp-browser.ts), for unattended runs.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startBrowserLogin } from '../daemon/login/authorization-code-login.js';
import { startDeviceCodeLogin } from '../daemon/login/device-code-login.js';
import type { OidcClientSettings } from '../daemon/login/oidc-client-settings.js';
import type { TokenGrant } from '../daemon/login/token-grant.js';
import { CardlinkError } from '../protocol/errors.js';
import type { DemoDaemon } from './demo-daemon.js';
import { driveAuthorization, type IdpCredentials } from './idp/idp-browser.js';

export type DemoLoginMode = 'yes' | 'browser' | 'device';

/** Whether `command` is an executable file on PATH. */
function onPath(command: string): boolean {
  return (process.env['PATH'] ?? '')
    .split(path.delimiter)
    .some((dir) => dir !== '' && fs.existsSync(path.join(dir, command)));
}

/** `yes` when asked; `browser` where a desktop can open one; else `device`. */
export function chooseLoginMode(yes: boolean, browser: boolean): DemoLoginMode {
  if (yes) return 'yes';
  const desktop = Boolean(process.env['DISPLAY'] || process.env['WAYLAND_DISPLAY']);
  return browser && desktop && onPath('xdg-open') ? 'browser' : 'device';
}

function openInBrowser(url: string): void {
  try {
    const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    child.on('error', () => undefined);
    child.unref();
  } catch {
    // The URL is printed as well.
  }
}

export interface DemoSignInOptions {
  mode: DemoLoginMode;
  settings: OidcClientSettings;
  /** The demo user's credentials (used by `yes` only). */
  credentials: IdpCredentials;
  daemon: DemoDaemon;
  signal: AbortSignal;
  /** Prints a line for the user. */
  say: (line: string) => void;
}

/** Signs in and hands the tokens to the daemon. */
export async function signIn(options: DemoSignInOptions): Promise<void> {
  const { settings, signal, say } = options;
  // The demo IdP speaks plain HTTP on 127.0.0.1 (RFC 8252 section 8.3 allows loopback).
  const idpOptions = { allowInsecureHttpIssuer: true, signal };
  let grant: TokenGrant;
  if (options.mode === 'device') {
    const login = await startDeviceCodeLogin(settings, idpOptions);
    say(`open ${login.verificationUri} and enter the code ${login.userCode}`);
    if (login.verificationUriComplete) say(`(or open ${login.verificationUriComplete})`);
    grant = await login.complete();
  } else {
    const login = await startBrowserLogin(settings, idpOptions);
    if (options.mode === 'browser') {
      say(`sign in in your browser: ${login.authorizationUrl}`);
      openInBrowser(login.authorizationUrl);
    } else {
      try {
        const callback = await driveAuthorization(new URL(login.authorizationUrl), options.credentials, {
          isClientRedirect: (next) => next.origin === new URL(login.redirectUri).origin,
        });
        // The browser's last step: the redirect to the login's loopback listener, which redeems the code.
        const answer = await fetch(callback, { signal });
        await answer.arrayBuffer();
      } catch (error) {
        login.cancel();
        if (signal.aborted) throw signal.reason;
        throw new CardlinkError(
          'ERR_LOGIN_DENIED',
          `the demo could not sign in at the demo identity provider: ${error instanceof Error ? error.message : String(error)}`,
          { issuer: settings.issuer },
        );
      }
    }
    grant = await login.complete();
  }
  await options.daemon.withControl((client) =>
    client.request('hand-over-token', {
      accessToken: grant.accessToken,
      ...(grant.refreshToken ? { refreshToken: grant.refreshToken } : {}),
      expiresAt: grant.expiresAt,
      issuer: settings.issuer,
      clientId: settings.clientId,
    }),
  );
}
