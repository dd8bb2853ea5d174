/**
 * What the logins share: checking the client settings, discovering the IdP with openid-client, and
 * turning whatever openid-client (or the network) throws into a CardlinkError with a stable code.
 *
 * No message or context built here contains a token, a code or a code verifier: OAuth errors
 * contribute their `error` code and (truncated) `error_description` only, and the library's own
 * error objects, which can carry response bodies, are never attached as a cause.
 */
import * as oidc from 'openid-client';
import { CardlinkError } from '../../protocol/errors.js';
import {
  DEFAULT_OIDC_SCOPE,
  type IdpRequestOptions,
  type OidcClientSettings,
} from './oidc-client-settings.js';

/** Timeout of each single request to the IdP (discovery, device authorization, token), in seconds. */
export const IDP_REQUEST_TIMEOUT_SECONDS = 30;

/** Longest `error_description` from the IdP that is copied into an error's context, in characters. */
export const MAX_ERROR_DESCRIPTION_CHARS = 200;

/** Hosts on which an `http://` issuer may be allowed (allowInsecureHttpIssuer). */
const LOOPBACK_HOSTS: ReadonlySet<string> = new Set(['127.0.0.1', 'localhost', '[::1]']);

/** What the login was doing when it failed (goes into the error's context). */
export type LoginStage =
  | 'discovery'
  | 'device-authorization'
  | 'device-token'
  | 'authorization'
  | 'token'
  | 'refresh'
  | 'revocation';

/** The settings, checked, with the defaults filled in. */
export interface ResolvedSettings {
  readonly issuer: string;
  readonly issuerUrl: URL;
  readonly clientId: string;
  readonly resource: string | undefined;
  readonly scope: string;
  readonly insecure: boolean;
}

const configInvalid = (message: string, setting: string) =>
  new CardlinkError('ERR_CONFIG_INVALID', message, { setting });

export function resolveSettings(settings: OidcClientSettings, options: IdpRequestOptions): ResolvedSettings {
  let issuerUrl: URL;
  try {
    issuerUrl = new URL(settings.issuer);
  } catch {
    throw configInvalid('The OpenID issuer is not a URL.', 'issuer');
  }
  if (issuerUrl.username || issuerUrl.password)
    throw configInvalid('The OpenID issuer URL must not contain credentials.', 'issuer');
  if (issuerUrl.search || issuerUrl.hash)
    throw configInvalid(`The OpenID issuer ${settings.issuer} must not have a query or fragment.`, 'issuer');
  let insecure = false;
  if (issuerUrl.protocol === 'http:') {
    if (!options.allowInsecureHttpIssuer)
      throw configInvalid(`The OpenID issuer ${settings.issuer} is not https.`, 'issuer');
    if (!LOOPBACK_HOSTS.has(issuerUrl.hostname))
      throw configInvalid(
        `The OpenID issuer ${settings.issuer} is http but not on the loopback interface; only loopback issuers may be http.`,
        'issuer',
      );
    insecure = true;
  } else if (issuerUrl.protocol !== 'https:') {
    throw configInvalid(`The OpenID issuer ${settings.issuer} is neither https nor http.`, 'issuer');
  }
  if (!settings.clientId) throw configInvalid('The OpenID client id is empty.', 'clientId');
  if (settings.resource !== undefined) {
    // RFC 8707 section 2: an absolute URI without a fragment.
    let resource: URL;
    try {
      resource = new URL(settings.resource);
    } catch {
      throw configInvalid('The resource indicator is not an absolute URI.', 'resource');
    }
    if (resource.hash) throw configInvalid('The resource indicator must not have a fragment.', 'resource');
  }
  const scope = (settings.scope ?? DEFAULT_OIDC_SCOPE).trim();
  if (!scope) throw configInvalid('The OpenID scope is empty.', 'scope');
  return {
    issuer: settings.issuer,
    issuerUrl,
    clientId: settings.clientId,
    resource: settings.resource,
    scope,
    insecure,
  };
}

/** Whether a URL the IdP handed us (verification URI, endpoints) may be used under these settings. */
export function acceptableIdpUrl(value: string, settings: ResolvedSettings): boolean {
  try {
    const url = new URL(value);
    return url.protocol === 'https:' || (settings.insecure && url.protocol === 'http:');
  } catch {
    return false;
  }
}

/** A fetch for openid-client that also stops when `signal` aborts. */
function fetchWithSignal(signal: AbortSignal): oidc.CustomFetch {
  return (url, init) =>
    fetch(url, {
      ...(init as RequestInit),
      signal: init.signal ? AbortSignal.any([init.signal, signal]) : signal,
    });
}

/** OpenID Connect discovery of the issuer; the configuration is that of a public client (no secret). */
export async function discoverIdp(
  settings: ResolvedSettings,
  signal?: AbortSignal,
): Promise<oidc.Configuration> {
  const options: oidc.DiscoveryRequestOptions = { timeout: IDP_REQUEST_TIMEOUT_SECONDS };
  // allowInsecureRequests is "deprecated" only as a warning sign; resolveSettings admits it for loopback only.
  if (settings.insecure) options.execute = [oidc.allowInsecureRequests];
  if (signal) options[oidc.customFetch] = fetchWithSignal(signal);
  try {
    signal?.throwIfAborted();
    return await oidc.discovery(
      settings.issuerUrl,
      settings.clientId,
      { token_endpoint_auth_method: 'none' },
      oidc.None(),
      options,
    );
  } catch (error) {
    throw loginError(error, settings, 'discovery', signal);
  }
}

/** Token endpoint parameters every grant sends: the resource indicator (RFC 8707 section 2.2). */
export function resourceParameters(settings: ResolvedSettings): Record<string, string> {
  return settings.resource !== undefined ? { resource: settings.resource } : {};
}

/** `work`, or the signal's reason as soon as it aborts (openid-client notices aborts only between steps). */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** The login's own cancellation. */
export function cancelledError(settings: ResolvedSettings, stage: LoginStage): CardlinkError {
  return new CardlinkError('ERR_LOGIN_CANCELLED', 'The sign-in was cancelled.', {
    issuer: settings.issuer,
    stage,
  });
}

function description(value: unknown): Record<string, string> {
  if (typeof value !== 'string' || value === '') return {};
  // eslint-disable-next-line no-control-regex
  const clean = value.replace(/[\u0000-\u001f\u007f]/g, ' ').slice(0, MAX_ERROR_DESCRIPTION_CHARS);
  return { description: clean };
}

/** An OAuth 2.0 error code (token endpoint or authorization response) as a CardlinkError. */
export function oauthError(
  error: string,
  errorDescription: unknown,
  settings: ResolvedSettings,
  stage: LoginStage,
  status?: number,
): CardlinkError {
  const context = {
    issuer: settings.issuer,
    stage,
    oauthError: error,
    ...(status !== undefined ? { status } : {}),
    ...description(errorDescription),
  };
  switch (error) {
    case 'access_denied':
    case 'login_required':
    case 'consent_required':
    case 'interaction_required':
    case 'account_selection_required':
      return new CardlinkError(
        'ERR_LOGIN_DENIED',
        `The sign-in at ${settings.issuer} was denied (${error}).`,
        context,
      );
    case 'expired_token':
      return new CardlinkError(
        'ERR_LOGIN_EXPIRED',
        `The sign-in at ${settings.issuer} expired before it was finished; start it again.`,
        context,
      );
    case 'invalid_grant':
      // The device code, authorization code or refresh token is no longer valid (expired, used, revoked).
      return new CardlinkError(
        'ERR_LOGIN_EXPIRED',
        `${settings.issuer} no longer accepts this grant (invalid_grant); sign in again.`,
        context,
      );
    case 'invalid_client':
    case 'unauthorized_client':
    case 'invalid_scope':
    case 'invalid_target':
    case 'invalid_request':
    case 'unsupported_grant_type':
    case 'unsupported_response_type':
      return new CardlinkError(
        'ERR_CONFIG_INVALID',
        `${settings.issuer} refused the request (${error}); check the client id, scope and resource settings.`,
        context,
      );
    case 'server_error':
    case 'temporarily_unavailable':
      return new CardlinkError(
        'ERR_IDP_UNAVAILABLE',
        `The OpenID Provider ${settings.issuer} is unavailable (${error}).`,
        { ...context, transient: true },
      );
    default:
      if (status !== undefined && status >= 500)
        return new CardlinkError(
          'ERR_IDP_UNAVAILABLE',
          `The OpenID Provider ${settings.issuer} is unavailable (${error}).`,
          { ...context, transient: true },
        );
      return new CardlinkError(
        'ERR_LOGIN_DENIED',
        `The sign-in at ${settings.issuer} failed (${error}).`,
        context,
      );
  }
}

/** Library codes that mean "the IdP cannot be used right now" (network, timeouts, broken responses). */
const UNAVAILABLE_CODES: ReadonlySet<string> = new Set([
  'OAUTH_TIMEOUT',
  'OAUTH_RESPONSE_IS_NOT_CONFORM',
  'OAUTH_RESPONSE_IS_NOT_JSON',
  'OAUTH_PARSE_ERROR',
  'OAUTH_INVALID_RESPONSE',
  'OAUTH_INVALID_SERVER_METADATA',
  'OAUTH_JWT_CLAIM_COMPARISON_FAILED',
  'OAUTH_JWT_TIMESTAMP_CHECK_FAILED',
  'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED',
  'OAUTH_KEY_SELECTION_FAILED',
  'OAUTH_WWW_AUTHENTICATE_CHALLENGE',
]);

/** Of those, the ones a retry may cure (timeouts, error pages of a proxy or an IdP restarting). */
const TRANSIENT_CODES: ReadonlySet<string> = new Set(['OAUTH_TIMEOUT', 'OAUTH_RESPONSE_IS_NOT_CONFORM']);

/** The system error code (ECONNREFUSED, ENOTFOUND, ...) somewhere in a cause chain. */
function networkCode(error: unknown): string | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && (/^E(?!RR_)[A-Z_]+$/.test(code) || code.startsWith('UND_ERR_')))
      return code;
  }
  return undefined;
}

/**
 * Anything thrown while talking to the IdP, as a CardlinkError. When `signal` has aborted, the
 * abort is the cause: its reason if that is a CardlinkError (our own expiry), else ERR_LOGIN_CANCELLED.
 * ERR_IDP_UNAVAILABLE errors that a retry may cure (network, timeouts, 5xx) have `context.transient`.
 */
export function loginError(
  error: unknown,
  settings: ResolvedSettings,
  stage: LoginStage,
  signal?: AbortSignal,
): CardlinkError {
  if (signal?.aborted) {
    return signal.reason instanceof CardlinkError ? signal.reason : cancelledError(settings, stage);
  }
  if (error instanceof CardlinkError) return error;
  if (error instanceof oidc.ResponseBodyError)
    return oauthError(error.error, error.error_description, settings, stage, error.status);
  if (error instanceof oidc.AuthorizationResponseError)
    return oauthError(error.error, error.error_description, settings, stage);

  const code = (error as { code?: unknown } | null)?.code;
  const libraryCode = typeof code === 'string' ? code : undefined;
  const base = { issuer: settings.issuer, stage, ...(libraryCode ? { libraryCode } : {}) };

  if (libraryCode?.startsWith('ERR_INVALID_ARG'))
    return new CardlinkError('ERR_INTERNAL', 'The sign-in was called with invalid arguments.', base);
  if (libraryCode === 'OAUTH_HTTP_REQUEST_FORBIDDEN' || libraryCode === 'OAUTH_REQUEST_PROTOCOL_FORBIDDEN')
    return new CardlinkError(
      'ERR_CONFIG_INVALID',
      `${settings.issuer} names an endpoint that is not https.`,
      { ...base, setting: 'issuer' },
    );
  if (libraryCode === 'OAUTH_MISSING_SERVER_METADATA' || libraryCode === 'OAUTH_UNSUPPORTED_OPERATION')
    return new CardlinkError(
      'ERR_CONFIG_INVALID',
      `${settings.issuer} does not offer what this sign-in needs (its metadata lacks an endpoint).`,
      { ...base, setting: 'issuer' },
    );
  if (stage === 'discovery' && libraryCode === 'OAUTH_JSON_ATTRIBUTE_COMPARISON_FAILED')
    return new CardlinkError(
      'ERR_CONFIG_INVALID',
      `The discovery document of ${settings.issuer} names another issuer; check the issuer setting (exact URL, trailing slash).`,
      { ...base, setting: 'issuer' },
    );

  const network = networkCode(error);
  if (error instanceof TypeError || network) {
    // fetch failed: the cause is a system error (address and errno), safe to keep.
    return new CardlinkError(
      'ERR_IDP_UNAVAILABLE',
      `The OpenID Provider ${settings.issuer} is unreachable (${stage}${network ? `: ${network}` : ''}).`,
      { ...base, transient: true, ...(network ? { networkCode: network } : {}) },
      { cause: error },
    );
  }
  if (libraryCode === undefined || UNAVAILABLE_CODES.has(libraryCode)) {
    const what = libraryCode === 'OAUTH_TIMEOUT' ? 'did not answer in time' : 'gave an unusable response';
    return new CardlinkError(
      'ERR_IDP_UNAVAILABLE',
      `The OpenID Provider ${settings.issuer} ${what} (${stage}).`,
      {
        ...base,
        transient: TRANSIENT_CODES.has(libraryCode ?? ''),
      },
    );
  }
  return new CardlinkError(
    'ERR_IDP_UNAVAILABLE',
    `The sign-in at ${settings.issuer} failed (${stage}).`,
    base,
  );
}
