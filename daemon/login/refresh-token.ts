/**
 * Refreshing the access token with the refresh token of an earlier login (RFC 6749 section 6),
 * for the card server's resource (RFC 8707 section 2.2).
 */
import * as oidc from 'openid-client';
import { discoverIdp, loginError, resolveSettings, resourceParameters, untilAborted } from './idp-client.js';
import type { IdpRequestOptions, OidcClientSettings } from './oidc-client-settings.js';
import { tokenGrantFrom, type TokenGrant } from './token-grant.js';

export type { TokenGrant } from './token-grant.js';

export type RefreshOptions = IdpRequestOptions;

/**
 * A new access token. The IdP may rotate the refresh token; if it returns none, the old one is kept.
 * Rejects with ERR_LOGIN_EXPIRED when the refresh token is no longer valid (sign in again),
 * ERR_IDP_UNAVAILABLE, ERR_LOGIN_CANCELLED or ERR_CONFIG_INVALID.
 */
export async function refreshAccessToken(
  settings: OidcClientSettings,
  refreshToken: string,
  options: RefreshOptions = {},
): Promise<TokenGrant> {
  const resolved = resolveSettings(settings, options);
  const { signal } = options;
  const config = await discoverIdp(resolved, signal);
  try {
    const response = await untilAborted(
      oidc.refreshTokenGrant(config, refreshToken, resourceParameters(resolved)),
      signal,
    );
    const grant = tokenGrantFrom(response);
    return { ...grant, refreshToken: grant.refreshToken ?? refreshToken };
  } catch (error) {
    throw loginError(error, resolved, 'refresh', signal);
  }
}
