/**
 * Browser sign-in: Authorization Code with PKCE (RFC 7636, S256) and a loopback redirect
 * (RFC 8252 section 7.3), for the tray and for a daemon that can open a browser.
 *
 * A one-shot HTTP listener on 127.0.0.1 (never another interface) and a random port (or the fixed
 * `redirectPort` for identity providers that register exact redirect URIs) receives the
 * redirect at `http://127.0.0.1:<port>/callback`. It accepts exactly one callback: its `state` must
 * match and its `iss` name the IdP (RFC 9207; else the login fails, so a forged or stale redirect
 * cannot be retried against it), the code
 * is exchanged (with the code verifier, the nonce check and the resource indicator), and the browser
 * gets a small page that says whether it worked. The listener closes after that callback, on
 * `cancel()`, when the caller's signal aborts, or when the timeout passes.
 */
import { timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as oidc from 'openid-client';
import { CardlinkError } from '../../protocol/errors.js';
import {
  cancelledError,
  discoverIdp,
  loginError,
  resolveSettings,
  resourceParameters,
  untilAborted,
} from './idp-client.js';
import type { IdpRequestOptions, OidcClientSettings } from './oidc-client-settings.js';
import { tokenGrantFrom, type TokenGrant } from './token-grant.js';

export type { TokenGrant } from './token-grant.js';

/** How long the listener waits for the browser's redirect unless the caller says otherwise (5 min). */
export const BROWSER_LOGIN_TIMEOUT_MS = 5 * 60 * 1000;

/** Interface the redirect listener binds to: loopback only (RFC 8252 section 7.3 and 8.3). */
export const LOOPBACK_CALLBACK_HOST = '127.0.0.1';

/** Path of the redirect URI on the listener. */
export const CALLBACK_PATH = '/callback';

export interface BrowserLoginOptions extends IdpRequestOptions {
  /** Milliseconds to wait for the redirect before the login fails with ERR_LOGIN_EXPIRED. */
  timeoutMs?: number;
  /**
   * A fixed loopback port for the redirect (`login.redirectPort`), for an IdP that registered the
   * exact redirect URI; undefined or 0: a random free port (RFC 8252 section 7.3). A port in use
   * fails with ERR_PORT_IN_USE.
   */
  redirectPort?: number;
  /**
   * A fresh sign-in, for the set-PIN (docs/personalization.md): `prompt=login` and `max_age=0`
   * (OpenID Connect Core 3.1.2.1) make the IdP ask for the credentials again even with a live
   * session, and put the time of that sign-in in `auth_time`, which the card server checks. No
   * refresh token is asked for (`offline_access` is dropped): the token is used once.
   */
  fresh?: boolean;
  /** Where the browser goes after a successful sign-in (a 303), instead of the "signed in" page. */
  afterSignInUrl?: string;
}

export interface BrowserLogin {
  /** Open this in the user's browser. */
  readonly authorizationUrl: string;
  /** The loopback redirect URI, `http://127.0.0.1:<port>/callback`. */
  readonly redirectUri: string;
  /**
   * Resolves with the tokens once the browser has come back with a valid code. Rejects with
   * ERR_LOGIN_DENIED (the user or the IdP refused, or the callback's state was wrong),
   * ERR_LOGIN_EXPIRED (timeout), ERR_LOGIN_CANCELLED (cancel() or the signal), ERR_IDP_UNAVAILABLE.
   */
  complete(): Promise<TokenGrant>;
  /** Stops waiting: closes the listener; complete() rejects with ERR_LOGIN_CANCELLED. */
  cancel(): void;
}

/** Response headers of every page the listener serves. */
const PAGE_HEADERS = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  Connection: 'close',
} as const;

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

function page(res: ServerResponse, status: number, title: string, text: string, extra: object = {}): void {
  const body =
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>cardlink: ${escapeHtml(title)}</title>` +
    `</head><body><h1>${escapeHtml(title)}</h1><p>${escapeHtml(text)}</p></body></html>\n`;
  res.writeHead(status, { ...PAGE_HEADERS, ...extra, 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

async function listenOnLoopback(server: Server, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: LOOPBACK_CALLBACK_HOST, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return (server.address() as AddressInfo).port;
}

/** Starts a browser login: discovery, the loopback listener and the authorization URL. */
export async function startBrowserLogin(
  settings: OidcClientSettings,
  options: BrowserLoginOptions = {},
): Promise<BrowserLogin> {
  const resolved = resolveSettings(settings, options);
  const timeoutMs = options.timeoutMs ?? BROWSER_LOGIN_TIMEOUT_MS;
  if (!(timeoutMs > 0))
    throw new CardlinkError('ERR_CONFIG_INVALID', 'The browser login timeout must be positive.', {
      setting: 'timeoutMs',
    });

  // One signal for everything the login does: aborted by the caller, by cancel() or by the timeout,
  // with the resulting CardlinkError as its reason.
  const control = new AbortController();
  const signal = options.signal ? AbortSignal.any([options.signal, control.signal]) : control.signal;

  const config = await discoverIdp(resolved, signal);
  const methods = config.serverMetadata().code_challenge_methods_supported;
  if (Array.isArray(methods) && !methods.includes('S256')) {
    throw new CardlinkError(
      'ERR_CONFIG_INVALID',
      `${resolved.issuer} does not support PKCE with S256 (RFC 7636), which the browser login requires.`,
      { issuer: resolved.issuer, setting: 'issuer' },
    );
  }

  const codeVerifier = oidc.randomPKCECodeVerifier();
  const codeChallenge = await oidc.calculatePKCECodeChallenge(codeVerifier);
  const state = oidc.randomState();
  const scopes = resolved.scope.split(/\s+/).filter((s) => !(options.fresh && s === 'offline_access'));
  // A nonce binds the ID token to this request (OpenID Connect Core 3.1.2.1); only with `openid`.
  const nonce = scopes.includes('openid') ? oidc.randomNonce() : undefined;

  let done = false;
  let callbackSeen = false;
  let settle!: { resolve: (grant: TokenGrant) => void; reject: (error: CardlinkError) => void };
  const outcome = new Promise<TokenGrant>((resolve, reject) => {
    settle = { resolve, reject };
  });
  // complete() may never be called (e.g. after cancel()): the rejection must not go unhandled.
  outcome.catch(() => undefined);

  const server = createServer((req, res) => {
    void handle(req, res).catch(() => {
      if (!res.headersSent) page(res, 500, 'Sign-in failed', 'An unexpected error occurred.');
    });
  });
  const port = await listenOnLoopback(server, options.redirectPort ?? 0).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE')
      throw new CardlinkError(
        'ERR_PORT_IN_USE',
        `The sign-in's redirect port ${options.redirectPort} (login.redirectPort) on ${LOOPBACK_CALLBACK_HOST} is in use; ` +
          'close the program that holds it or finish the other sign-in first.',
        { host: LOOPBACK_CALLBACK_HOST, port: options.redirectPort ?? 0, setting: 'login.redirectPort' },
        { cause: error },
      );
    throw new CardlinkError(
      'ERR_INTERNAL',
      'Could not listen on the loopback interface for the sign-in redirect.',
      { host: LOOPBACK_CALLBACK_HOST },
      { cause: error },
    );
  });
  const host = `${LOOPBACK_CALLBACK_HOST}:${port}`;
  const redirectUri = `http://${host}${CALLBACK_PATH}`;

  function finish(result: { grant: TokenGrant } | { error: CardlinkError }): void {
    if (done) return;
    done = true;
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', onCallerAbort);
    server.close();
    server.closeIdleConnections();
    if ('grant' in result) settle.resolve(result.grant);
    else {
      if (!control.signal.aborted) control.abort(result.error);
      settle.reject(result.error);
    }
  }
  const fail = (error: CardlinkError) => finish({ error });

  const timer = setTimeout(
    () =>
      fail(
        new CardlinkError(
          'ERR_LOGIN_EXPIRED',
          `The browser sign-in at ${resolved.issuer} was not finished within ${Math.round(timeoutMs / 1000)} s.`,
          { issuer: resolved.issuer, stage: 'authorization', timeoutMs },
        ),
      ),
    timeoutMs,
  );
  const onCallerAbort = () => fail(cancelledError(resolved, 'authorization'));
  if (options.signal?.aborted) onCallerAbort();
  else options.signal?.addEventListener('abort', onCallerAbort, { once: true });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    // Only requests addressed to this listener by its own name (no DNS rebinding).
    if (req.headers.host !== host) return page(res, 400, 'Wrong address', 'This address is not served here.');
    const url = new URL(req.url ?? '/', `http://${host}`);
    if (url.pathname !== CALLBACK_PATH) return page(res, 404, 'Not found', 'Nothing here.');
    if (req.method !== 'GET')
      return page(res, 405, 'Method not allowed', 'Only GET is accepted.', { Allow: 'GET' });
    if (callbackSeen || done)
      return page(res, 409, 'Sign-in already finished', 'This sign-in is over. You can close this window.');
    callbackSeen = true;

    const received = url.searchParams.get('state');
    if (received === null || !sameSecret(received, state)) {
      page(
        res,
        400,
        'Sign-in refused',
        'This sign-in response does not belong to the sign-in that cardlink started. Start the sign-in again.',
      );
      return fail(
        new CardlinkError(
          'ERR_LOGIN_DENIED',
          'The browser came back with a sign-in response for another request (wrong state): refused. Start the sign-in again.',
          { issuer: resolved.issuer, stage: 'authorization', reason: 'state-mismatch' },
        ),
      );
    }

    // RFC 9207: the response names its issuer; one that names another is a mix-up (an
    // attacker's IdP answering for ours), refused before the code goes anywhere.
    const issued = url.searchParams.get('iss');
    const expectedIssuer = config.serverMetadata().issuer;
    const issRequired = config.serverMetadata().authorization_response_iss_parameter_supported === true;
    if ((issued !== null || issRequired) && issued !== expectedIssuer) {
      page(
        res,
        400,
        'Sign-in refused',
        'This sign-in response comes from another identity provider than the one cardlink asked. Start the sign-in again.',
      );
      return fail(
        new CardlinkError(
          'ERR_LOGIN_DENIED',
          'The browser came back with a sign-in response from another issuer (wrong iss): refused. Start the sign-in again.',
          { issuer: resolved.issuer, stage: 'authorization', reason: 'issuer-mismatch' },
        ),
      );
    }

    let grant: TokenGrant;
    try {
      const response = await untilAborted(
        oidc.authorizationCodeGrant(
          config,
          new URL(`${CALLBACK_PATH}${url.search}`, `http://${host}`),
          {
            pkceCodeVerifier: codeVerifier,
            expectedState: state,
            ...(nonce !== undefined ? { expectedNonce: nonce } : {}),
          },
          resourceParameters(resolved),
        ),
        signal,
      );
      grant = tokenGrantFrom(response);
    } catch (caught) {
      const error = loginError(caught, resolved, stageOf(caught), signal);
      page(res, error.code === 'ERR_IDP_UNAVAILABLE' ? 502 : 400, 'Sign-in failed', error.message);
      return fail(error);
    }
    if (done) {
      // Cancelled or timed out while the code was being exchanged: the tokens are dropped.
      return page(res, 409, 'Sign-in cancelled', 'This sign-in was cancelled. You can close this window.');
    }
    if (options.afterSignInUrl) {
      res.writeHead(303, { ...PAGE_HEADERS, Location: options.afterSignInUrl, 'Content-Length': 0 });
      res.end();
    } else page(res, 200, 'Signed in to cardlink', 'You can close this window.');
    finish({ grant });
  }

  let authorizationUrl: string;
  try {
    authorizationUrl = oidc.buildAuthorizationUrl(config, {
      redirect_uri: redirectUri,
      response_type: 'code',
      scope: scopes.join(' '),
      state,
      ...(nonce !== undefined ? { nonce } : {}),
      code_challenge: codeChallenge,
      code_challenge_method: 'S256',
      // OpenID Connect Core 11: a refresh token for offline access needs prompt=consent.
      ...(scopes.includes('offline_access') ? { prompt: 'consent' } : {}),
      ...(options.fresh ? { prompt: 'login', max_age: '0' } : {}),
      ...resourceParameters(resolved),
    }).href;
  } catch (error) {
    const failure = loginError(error, resolved, 'authorization');
    fail(failure);
    throw failure;
  }

  return {
    authorizationUrl,
    redirectUri,
    complete: () => outcome,
    cancel: () => fail(cancelledError(resolved, 'authorization')),
  };
}

/** An error in the authorization response itself, or one from the token request. */
function stageOf(error: unknown): 'authorization' | 'token' {
  return error instanceof oidc.AuthorizationResponseError ? 'authorization' : 'token';
}
