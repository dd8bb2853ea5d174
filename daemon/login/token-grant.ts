/**
 * The tokens a login or a refresh yields, in the form the daemon keeps them.
 */
import { decodeJwt } from 'jose';
import type { TokenEndpointResponse, TokenEndpointResponseHelpers } from 'openid-client';

export interface TokenGrant {
  /** Bearer access token for the card server (an RFC 9068 JWT at most IdPs). */
  accessToken: string;
  /** Refresh token, when the IdP issued one (scope `offline_access`). */
  refreshToken?: string;
  /** When the access token expires (unix seconds). */
  expiresAt: number;
  /** The ID token, when the scope included `openid`. */
  idToken?: string;
  /** `sub` of the ID token's claims, when there is an ID token. */
  subject?: string;
}

/**
 * Lifetime assumed for an access token whose response carries no `expires_in` and which is not a
 * JWT with `exp`, in seconds: short, so that the daemon refreshes early rather than late.
 */
export const ASSUMED_ACCESS_TOKEN_LIFETIME_SECONDS = 300;

/** The token endpoint's response (already validated by openid-client) as a TokenGrant. */
export function tokenGrantFrom(
  response: TokenEndpointResponse & TokenEndpointResponseHelpers,
  nowMs: number = Date.now(),
): TokenGrant {
  const now = Math.floor(nowMs / 1000);
  const grant: TokenGrant = {
    accessToken: response.access_token,
    expiresAt: now + lifetimeOf(response.expiresIn(), lifetimeFromJwt(response.access_token, now)),
  };
  if (typeof response.refresh_token === 'string') grant.refreshToken = response.refresh_token;
  if (typeof response.id_token === 'string') grant.idToken = response.id_token;
  const subject = response.claims()?.sub;
  if (typeof subject === 'string') grant.subject = subject;
  return grant;
}

/**
 * The earlier of `expires_in` and the JWT's `exp` (what the card server enforces, to the second),
 * or the assumed lifetime when there is neither.
 */
function lifetimeOf(expiresIn: number | undefined, fromJwt: number | undefined): number {
  const known = [expiresIn, fromJwt].filter((v): v is number => v !== undefined);
  return known.length ? Math.min(...known) : ASSUMED_ACCESS_TOKEN_LIFETIME_SECONDS;
}

/** Seconds until the `exp` of a JWT access token (unverified: only a hint), if it is one. */
function lifetimeFromJwt(accessToken: string, now: number): number | undefined {
  try {
    const { exp } = decodeJwt(accessToken);
    if (typeof exp === 'number' && Number.isFinite(exp)) return Math.max(0, Math.floor(exp) - now);
  } catch {
    // Not a JWT: opaque tokens are fine.
  }
  return undefined;
}
