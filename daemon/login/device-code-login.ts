/**
 * Headless sign-in with the OAuth 2.0 Device Authorization Grant (RFC 8628): the daemon shows a
 * verification URI and a user code, the user finishes the sign-in in a browser on any device, and
 * the daemon polls the token endpoint until then.
 *
 * Polling honours the IdP's `interval` (default 5 s, RFC 8628 section 3.2), adds 5 s on `slow_down`
 * and backs off exponentially while the IdP is unreachable (section 3.5); it stops when the device
 * code expires (`expires_in`), when the IdP answers `access_denied` / `expired_token`, or at once
 * when the caller's signal aborts (no timer or request is left behind).
 */
import { setTimeout as sleep } from 'node:timers/promises';
import * as oidc from 'openid-client';
import { CardlinkError } from '../../protocol/errors.js';
import {
  acceptableIdpUrl,
  discoverIdp,
  loginError,
  resolveSettings,
  resourceParameters,
  untilAborted,
} from './idp-client.js';
import type { IdpRequestOptions, OidcClientSettings } from './oidc-client-settings.js';
import { tokenGrantFrom, type TokenGrant } from './token-grant.js';

export type { TokenGrant } from './token-grant.js';

export interface DeviceCodeLoginOptions extends IdpRequestOptions {
  /**
   * A fresh sign-in, for `cardlink pin set` (docs/personalization.md): `prompt=login` and
   * `max_age=0` go with the device authorization request as with the browser's (OpenID Connect
   * Core 3.1.2.1; RFC 8628 section 3.1 lets an IdP take further parameters, and oidc-provider takes
   * these), and no refresh token is asked for. An IdP that ignores them may sign the user in from
   * its session: the card server then refuses the sign-in as not fresh, in words.
   */
  fresh?: boolean;
}

/** RFC 8628 section 3.4: the device code grant type. */
const DEVICE_CODE_GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:device_code';
/** RFC 8628 section 3.2: polling interval when the IdP names none, in seconds. */
export const DEFAULT_POLL_INTERVAL_SECONDS = 5;
/** Shortest polling interval, whatever the IdP says, in seconds (no busy loop against a broken IdP). */
export const MIN_POLL_INTERVAL_SECONDS = 1;
/** RFC 8628 section 3.5: seconds added to the interval on each `slow_down`. */
export const SLOW_DOWN_INCREMENT_SECONDS = 5;
/** Longest interval the backoff reaches while the IdP is unreachable, in seconds. */
export const MAX_POLL_INTERVAL_SECONDS = 60;

export interface DeviceCodeLogin {
  /** Where the user signs in (show it, with the user code). */
  readonly verificationUri: string;
  /** The verification URI with the user code filled in (for a QR code or a link), if the IdP gives one. */
  readonly verificationUriComplete?: string;
  /** The code the user enters at the verification URI. */
  readonly userCode: string;
  /** Seconds the user has, from the start of the login, before the codes expire. */
  readonly expiresIn: number;
  /**
   * Polls the IdP until the user has finished; resolves with the tokens. Rejects with
   * ERR_LOGIN_DENIED (the user or the IdP refused), ERR_LOGIN_EXPIRED (the codes expired),
   * ERR_LOGIN_CANCELLED (the signal aborted) or ERR_IDP_UNAVAILABLE. Calling it again returns the same promise.
   */
  complete(): Promise<TokenGrant>;
}

/** Starts a device login: discovery and the device authorization request (with the resource indicator). */
export async function startDeviceCodeLogin(
  settings: OidcClientSettings,
  options: DeviceCodeLoginOptions = {},
): Promise<DeviceCodeLogin> {
  const resolved = resolveSettings(settings, options);
  const { signal } = options;
  const config = await discoverIdp(resolved, signal);
  const scope = options.fresh
    ? resolved.scope
        .split(/\s+/)
        .filter((s) => s !== 'offline_access')
        .join(' ')
    : resolved.scope;
  const parameters = {
    scope,
    ...resourceParameters(resolved),
    ...(options.fresh ? { prompt: 'login', max_age: '0' } : {}),
  };

  let authorization: oidc.DeviceAuthorizationResponse;
  try {
    authorization = await untilAborted(oidc.initiateDeviceAuthorization(config, parameters), signal);
  } catch (error) {
    throw loginError(error, resolved, 'device-authorization', signal);
  }
  const startedAt = Date.now();
  const { user_code: userCode, verification_uri: verificationUri, expires_in: expiresIn } = authorization;
  if (!acceptableIdpUrl(verificationUri, resolved) || !(expiresIn > 0)) {
    throw new CardlinkError(
      'ERR_IDP_UNAVAILABLE',
      `The OpenID Provider ${resolved.issuer} gave an unusable device authorization response.`,
      { issuer: resolved.issuer, stage: 'device-authorization' },
    );
  }
  const complete = authorization.verification_uri_complete;

  async function poll(): Promise<TokenGrant> {
    // The codes' lifetime ends the polling: abort with the expiry as the reason.
    const expiry = new AbortController();
    const timer = setTimeout(
      () =>
        expiry.abort(
          new CardlinkError(
            'ERR_LOGIN_EXPIRED',
            `The device sign-in at ${resolved.issuer} expired after ${expiresIn} s before it was finished; start it again.`,
            { issuer: resolved.issuer, stage: 'device-token', expiresIn, userCode },
          ),
        ),
      Math.max(0, startedAt + expiresIn * 1000 - Date.now()),
    );
    const pollSignal = signal ? AbortSignal.any([signal, expiry.signal]) : expiry.signal;
    const parameters = { device_code: authorization.device_code, ...resourceParameters(resolved) };
    let interval = Math.max(
      authorization.interval ?? DEFAULT_POLL_INTERVAL_SECONDS,
      MIN_POLL_INTERVAL_SECONDS,
    );
    try {
      for (;;) {
        await sleep(interval * 1000, undefined, { signal: pollSignal });
        try {
          const response = await untilAborted(
            oidc.genericGrantRequest(config, DEVICE_CODE_GRANT_TYPE, parameters),
            pollSignal,
          );
          return tokenGrantFrom(response);
        } catch (error) {
          if (error instanceof oidc.ResponseBodyError && error.error === 'authorization_pending') continue;
          if (error instanceof oidc.ResponseBodyError && error.error === 'slow_down') {
            interval += SLOW_DOWN_INCREMENT_SECONDS;
            continue;
          }
          const failure = loginError(error, resolved, 'device-token', pollSignal);
          if (failure.context['transient'] !== true) throw failure;
          // Unreachable for now: keep trying, less often, until the codes expire.
          interval = Math.min(interval * 2, MAX_POLL_INTERVAL_SECONDS);
        }
      }
    } catch (error) {
      throw loginError(error, resolved, 'device-token', pollSignal);
    } finally {
      clearTimeout(timer);
    }
  }

  let completion: Promise<TokenGrant> | undefined;
  return {
    verificationUri,
    ...(typeof complete === 'string' && acceptableIdpUrl(complete, resolved)
      ? { verificationUriComplete: complete }
      : {}),
    userCode,
    expiresIn,
    complete: () => (completion ??= poll()),
  };
}
