/**
 * Settings of the daemon's OpenID Connect client: a public native client (RFC 8252) that signs the
 * user in at the organisation's OpenID Provider and gets access tokens for the card server.
 */

/** Scope requested unless the settings name another: an ID token, a refresh token and the card server. */
export const DEFAULT_OIDC_SCOPE = 'openid offline_access cards';

export interface OidcClientSettings {
  /** Issuer identifier of the OpenID Provider (URL; discovery is at `<issuer>/.well-known/openid-configuration`). */
  issuer: string;
  /** Client identifier of cardlink's native client at the IdP (public client: no secret). */
  clientId: string;
  /** Resource indicator (RFC 8707) of the card server, i.e. the audience of the access tokens. */
  resource?: string;
  /** Space-separated scope (default DEFAULT_OIDC_SCOPE). */
  scope?: string;
}

/** Options shared by every request the login makes to the IdP. */
export interface IdpRequestOptions {
  /**
   * Allow an `http://` issuer. Only for issuers on the loopback interface (127.0.0.1, localhost, [::1]),
   * i.e. tests and local development; any other http issuer is refused.
   */
  allowInsecureHttpIssuer?: boolean;
  /** Aborts the login (discovery, requests, polling); the login then fails with ERR_LOGIN_CANCELLED. */
  signal?: AbortSignal;
}
