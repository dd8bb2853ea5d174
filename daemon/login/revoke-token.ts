/**
 * Revoking a refresh token at the IdP (RFC 7009) when the user signs out, so a copy of it (a
 * backup of the keyring, a stolen disk) is worth nothing afterwards. Only where the IdP advertises
 * a `revocation_endpoint` in its discovery document; an IdP without one lets the token run to its
 * own expiry, which the caller reports.
 */
import * as oidc from 'openid-client';
import { discoverIdp, loginError, resolveSettings, untilAborted } from './idp-client.js';
import type { IdpRequestOptions, OidcClientSettings } from './oidc-client-settings.js';

/** What became of the token: revoked at the IdP, or the IdP offers no revocation. */
export type RevocationResult = 'revoked' | 'not-supported';

/**
 * Revokes `refreshToken` (token_type_hint refresh_token, RFC 7009 section 2.1). The IdP answers 200
 * also for a token it no longer knows (section 2.2), so a second sign-out is not an error. Rejects
 * with ERR_IDP_UNAVAILABLE (unreachable, 5xx), ERR_CONFIG_INVALID (the IdP refused the client) or
 * ERR_LOGIN_CANCELLED.
 */
export async function revokeRefreshToken(
  settings: OidcClientSettings,
  refreshToken: string,
  options: IdpRequestOptions = {},
): Promise<RevocationResult> {
  const resolved = resolveSettings(settings, options);
  const { signal } = options;
  const config = await discoverIdp(resolved, signal);
  if (typeof config.serverMetadata().revocation_endpoint !== 'string') return 'not-supported';
  try {
    await untilAborted(
      oidc.tokenRevocation(config, refreshToken, { token_type_hint: 'refresh_token' }),
      signal,
    );
    return 'revoked';
  } catch (error) {
    throw loginError(error, resolved, 'revocation', signal);
  }
}
