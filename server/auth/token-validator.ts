/**
 * Access-token validation (RFC 9068 JWT access tokens, verified with jose).
 *
 * A token is accepted when, in this order:
 * 1. it is a compact JWS of at most MAX_ACCESS_TOKEN_BYTES whose header `alg` is on the allow-list
 *    (RS256, PS256, ES256, ES384, EdDSA; never `none` or HS*: checked before any key is looked at, so
 *    an HMAC "signed" with a public key never reaches a verifier);
 * 2. its `iss` is exactly one of the configured issuers (an untrusted issuer is never contacted);
 * 3. the issuer publishes a key for its `kid` and `alg` (issuer-keys.ts: refetch on unknown kid,
 *    rate-limited);
 * 4. the signature verifies, `aud` contains this server's audience, `exp` is present and not past and
 *    `nbf` (if present) not ahead, both with a small clock tolerance, and `sub` is a non-empty string;
 * 5. `exp`, and `iat` and `nbf` when present, are whole seconds that fit the protocol's u32 times
 *    (AUTH_OK, RESUME_OK and TOKEN_RENEWED carry the expiry): a token the IdP signed with a time the
 *    session could not report is refused here, not half-way through opening a session.
 *
 * We validate the access token, never the ID token: only the access token is meant for us (its `aud`
 * is the card server); an ID token's `aud` is the client.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { MAX_ACCESS_TOKEN_BYTES, U32_MAX } from '../../protocol/wire/limits.js';
import { TokenRejectedError } from './errors.js';
import {
  ALLOWED_TOKEN_ALGORITHMS,
  isAcceptableIdpUrl,
  IssuerKeys,
  type AllowedTokenAlgorithm,
} from './issuer-keys.js';
import { MAX_NAME_CLAIM_LENGTH, NAME_CLAIMS, type TrustedIssuer, type ValidatedToken } from './types.js';

/** Clock skew tolerated on `exp` and `nbf`, in seconds. */
export const DEFAULT_CLOCK_TOLERANCE_SECONDS = 30;
/** Least time between two JWKS fetches of one issuer (unknown kid or stale cache), in ms. */
export const DEFAULT_JWKS_REFETCH_INTERVAL_MS = 10_000;
/** Age after which an issuer's keys are refetched on next use, in ms. */
export const DEFAULT_JWKS_MAX_AGE_MS = 10 * 60_000;
/** Time allowed for one request to an IdP, in ms. */
export const DEFAULT_IDP_FETCH_TIMEOUT_MS = 5_000;
/** Longest `sub` accepted, in characters. */
export const MAX_SUBJECT_LENGTH = 255;

export interface TokenValidatorOptions {
  issuers: readonly TrustedIssuer[];
  /** This card server's audience (its resource indicator); `aud` must contain it. */
  audience: string;
  clockToleranceSeconds?: number;
  jwksRefetchIntervalMs?: number;
  jwksMaxAgeMs?: number;
  fetchTimeoutMs?: number;
  /** A subset of ALLOWED_TOKEN_ALGORITHMS (default: all of them). */
  algorithms?: readonly AllowedTokenAlgorithm[];
}

export interface TokenValidator {
  /** The user and expiry of a valid token; TokenRejectedError or IdpUnavailableError otherwise. */
  validate(token: string): Promise<ValidatedToken>;
  /** Fetches (discovery and JWKS) made so far per issuer, for tests and metrics. */
  fetchCount(issuer: string): number;
}

function checkOptions(options: TokenValidatorOptions): void {
  const fail = (message: string) => {
    throw new RangeError(`token validator: ${message}`);
  };
  if (typeof options.audience !== 'string' || options.audience.length === 0) fail('audience is required');
  const seen = new Set<string>();
  for (const i of options.issuers) {
    if (!isAcceptableIdpUrl(i.issuer))
      fail(`issuer ${i.issuer} must be an https URL (http only on loopback)`);
    if (i.jwksUri !== undefined && !isAcceptableIdpUrl(i.jwksUri))
      fail(`jwksUri of ${i.issuer} must be https`);
    if (typeof i.tenant !== 'string' || i.tenant.length === 0) fail(`issuer ${i.issuer} needs a tenant`);
    if (seen.has(i.issuer)) fail(`issuer ${i.issuer} is configured twice`);
    seen.add(i.issuer);
  }
  for (const a of options.algorithms ?? []) {
    if (!(ALLOWED_TOKEN_ALGORITHMS as readonly string[]).includes(a)) fail(`algorithm ${a} is not allowed`);
  }
  for (const [name, value] of [
    ['clockToleranceSeconds', options.clockToleranceSeconds],
    ['jwksRefetchIntervalMs', options.jwksRefetchIntervalMs],
    ['jwksMaxAgeMs', options.jwksMaxAgeMs],
    ['fetchTimeoutMs', options.fetchTimeoutMs],
  ] as const) {
    if (value !== undefined && (!Number.isFinite(value) || value < 0)) fail(`${name} must be a number >= 0`);
  }
}

export function createTokenValidator(options: TokenValidatorOptions): TokenValidator {
  checkOptions(options);
  const algorithms: readonly string[] = options.algorithms ?? ALLOWED_TOKEN_ALGORITHMS;
  const clockTolerance = options.clockToleranceSeconds ?? DEFAULT_CLOCK_TOLERANCE_SECONDS;
  const issuers = new Map<string, IssuerKeys>();
  for (const trusted of options.issuers) {
    issuers.set(
      trusted.issuer,
      new IssuerKeys(trusted, {
        refetchIntervalMs: options.jwksRefetchIntervalMs ?? DEFAULT_JWKS_REFETCH_INTERVAL_MS,
        maxAgeMs: options.jwksMaxAgeMs ?? DEFAULT_JWKS_MAX_AGE_MS,
        fetchTimeoutMs: options.fetchTimeoutMs ?? DEFAULT_IDP_FETCH_TIMEOUT_MS,
      }),
    );
  }

  async function validate(token: string): Promise<ValidatedToken> {
    if (
      typeof token !== 'string' ||
      token.length === 0 ||
      Buffer.byteLength(token) > MAX_ACCESS_TOKEN_BYTES
    ) {
      throw new TokenRejectedError('malformed', `an access token is 1..${MAX_ACCESS_TOKEN_BYTES} bytes`);
    }
    let header: { alg?: unknown; kid?: unknown };
    let unverified: JWTPayload;
    try {
      if (token.split('.').length !== 3) throw new Error('not a compact JWS');
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch (e) {
      throw new TokenRejectedError(
        'malformed',
        'the access token is not a JWT in compact form',
        {},
        { cause: e },
      );
    }
    const alg = header.alg;
    if (typeof alg !== 'string' || !algorithms.includes(alg)) {
      throw new TokenRejectedError('disallowed_alg', "the token's algorithm is not allowed", {
        alg: typeof alg === 'string' ? alg.slice(0, 20) : typeof alg,
      });
    }
    if (header.kid !== undefined && typeof header.kid !== 'string') {
      throw new TokenRejectedError('malformed', "the token's kid is not a string");
    }
    const iss = unverified.iss;
    const keys = typeof iss === 'string' ? issuers.get(iss) : undefined;
    if (!keys) throw new TokenRejectedError('wrong_issuer', "the token's issuer is not trusted");

    const candidates = await keys.candidates(alg as AllowedTokenAlgorithm, header.kid);
    let payload: JWTPayload | undefined;
    let lastSignatureError: unknown;
    for (const key of candidates) {
      try {
        payload = await verifyWith(token, key, keys.trusted);
        break;
      } catch (e) {
        if (e instanceof joseErrors.JWSSignatureVerificationFailed) {
          lastSignatureError = e;
          continue;
        }
        throw mapJoseError(e, keys.trusted.issuer);
      }
    }
    if (!payload) {
      throw new TokenRejectedError(
        'bad_signature',
        "the token's signature does not verify",
        {
          issuer: keys.trusted.issuer,
        },
        { cause: lastSignatureError },
      );
    }
    const sub = payload.sub;
    if (typeof sub !== 'string' || sub.length === 0 || sub.length > MAX_SUBJECT_LENGTH) {
      throw new TokenRejectedError('invalid_claim', 'the token has no usable sub', { claim: 'sub' });
    }
    checkTimeClaims(payload);
    const authTime = payload.auth_time;
    return {
      issuer: keys.trusted.issuer,
      subject: sub,
      tenant: keys.trusted.tenant,
      expiresAt: new Date(payload.exp! * 1000),
      ...(typeof authTime === 'number' ? { authTime: new Date(authTime * 1000) } : {}),
      tokenHash: new Uint8Array(createHash('sha256').update(token).digest()),
      claims: nameClaims(payload),
    };
  }

  async function verifyWith(token: string, key: KeyObject, trusted: TrustedIssuer): Promise<JWTPayload> {
    const { payload } = await jwtVerify(token, key, {
      algorithms: [...algorithms],
      issuer: trusted.issuer,
      audience: options.audience,
      clockTolerance,
      requiredClaims: ['exp', 'sub'],
      ...(trusted.requireAtJwtType ? { typ: 'at+jwt' } : {}),
    });
    return payload;
  }

  return {
    validate,
    fetchCount: (issuer) => issuers.get(issuer)?.fetches ?? 0,
  };
}

/**
 * Refuses `exp`, `iat` or `nbf` that is not a whole number of seconds from 0 to U32_MAX (RFC 7519
 * allows fractions; no IdP we know writes them, and the protocol carries whole u32 seconds).
 */
function checkTimeClaims(payload: JWTPayload): void {
  for (const claim of ['exp', 'iat', 'nbf', 'auth_time'] as const) {
    const value = payload[claim];
    if (value === undefined && claim !== 'exp') continue;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > U32_MAX) {
      throw new TokenRejectedError(
        'invalid_claim',
        `the token's ${claim} is not a whole number of seconds from 1970 to 2106`,
        { claim },
      );
    }
  }
}

/** The reason for a jose verification error; signature failures are handled by the caller. */
function mapJoseError(e: unknown, issuer: string): Error {
  const context = { issuer };
  if (e instanceof joseErrors.JWTExpired) {
    return new TokenRejectedError('expired', 'the token has expired', context, { cause: e });
  }
  if (e instanceof joseErrors.JWTClaimValidationFailed) {
    const claim = e.claim;
    if (claim === 'nbf')
      return new TokenRejectedError('not_yet_valid', 'the token is not valid yet', context, { cause: e });
    if (claim === 'aud') {
      return new TokenRejectedError('wrong_audience', 'the token is not meant for this server', context, {
        cause: e,
      });
    }
    if (claim === 'iss')
      return new TokenRejectedError('wrong_issuer', "the token's issuer is not trusted", context, {
        cause: e,
      });
    return new TokenRejectedError(
      'invalid_claim',
      `the token's ${claim} claim is invalid`,
      { ...context, claim },
      { cause: e },
    );
  }
  if (e instanceof joseErrors.JOSEAlgNotAllowed) {
    return new TokenRejectedError('disallowed_alg', "the token's algorithm is not allowed", context, {
      cause: e,
    });
  }
  if (e instanceof joseErrors.JOSEError) {
    return new TokenRejectedError(
      'malformed',
      'the token is malformed',
      { ...context, jose: e.code },
      { cause: e },
    );
  }
  return e instanceof Error ? e : new Error(String(e));
}

/** The token's name claims (`NAME_CLAIMS`) that are short strings; the rest are left out. */
function nameClaims(payload: JWTPayload): Readonly<Record<string, string>> {
  const kept: Record<string, string> = {};
  for (const claim of NAME_CLAIMS) {
    const value = payload[claim];
    if (typeof value === 'string' && value.length > 0 && value.length <= MAX_NAME_CLAIM_LENGTH)
      kept[claim] = value;
  }
  return Object.freeze(kept);
}
