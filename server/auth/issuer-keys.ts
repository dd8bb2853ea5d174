/**
 * The signing keys of one trusted issuer: OpenID Connect discovery, then its JWKS, cached.
 *
 * Key rotation at the IdP needs no administrator here: a token whose `kid` is not in the cache
 * triggers a refetch. Refetches (for an unknown `kid` or a cache older than `maxAgeMs`) happen at
 * most once per `refetchIntervalMs` per issuer, so tokens with made-up `kid`s cannot turn the server
 * into a load generator against the IdP. Concurrent lookups share one fetch.
 *
 * Why not jose's createRemoteJWKSet: its cooldown is 30 s by default, and a key used within the
 * cooldown after the previous fetch is refused until it passes. Our own cache makes the interval a
 * documented setting (10 s by default), keeps serving the last good key set when the IdP is down,
 * bounds response sizes, refuses redirects, and tells "IdP unreachable" apart from "unknown kid".
 */
import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto';
import { IdpUnavailableError, TokenRejectedError } from './errors.js';
import type { TrustedIssuer } from './types.js';

/** Algorithms an access token may be signed with. Never `none`, never HMAC (HS*). */
export const ALLOWED_TOKEN_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA'] as const;
export type AllowedTokenAlgorithm = (typeof ALLOWED_TOKEN_ALGORITHMS)[number];

/** Smallest RSA modulus accepted, in bits (RFC 7518 section 3.3). */
export const MIN_RSA_MODULUS_BITS = 2048;
/** Largest discovery document or JWKS read, in bytes. */
export const MAX_IDP_RESPONSE_BYTES = 512 * 1024;
/** Most keys read from one JWKS. */
export const MAX_JWKS_KEYS = 100;

export interface IssuerKeysOptions {
  /** Least time between two fetches of this issuer's keys, in ms. */
  refetchIntervalMs: number;
  /** Age after which the cached keys are refetched on next use, in ms. */
  maxAgeMs: number;
  /** Time allowed for one HTTP request to the IdP, in ms. */
  fetchTimeoutMs: number;
}

interface CachedKey {
  kid: string | undefined;
  /** The JWK's `alg`, when it names one. */
  alg: string | undefined;
  key: KeyObject;
}

/** True when `url` is https, or http on a loopback address (a local IdP, tests). */
export function isAcceptableIdpUrl(url: string): boolean {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return false;
  }
  if (parsed.username || parsed.password) return false;
  if (parsed.protocol === 'https:') return true;
  const host = parsed.hostname;
  return (
    parsed.protocol === 'http:' &&
    (host === 'localhost' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host))
  );
}

/** Whether `key` can verify signatures of algorithm `alg`. */
export function keyFitsAlgorithm(key: KeyObject, alg: AllowedTokenAlgorithm): boolean {
  const type = key.asymmetricKeyType;
  const details = key.asymmetricKeyDetails ?? {};
  switch (alg) {
    case 'RS256':
      return type === 'rsa' && (details.modulusLength ?? 0) >= MIN_RSA_MODULUS_BITS;
    case 'PS256':
      return (type === 'rsa' || type === 'rsa-pss') && (details.modulusLength ?? 0) >= MIN_RSA_MODULUS_BITS;
    case 'ES256':
      return type === 'ec' && details.namedCurve === 'prime256v1';
    case 'ES384':
      return type === 'ec' && details.namedCurve === 'secp384r1';
    case 'EdDSA':
      return type === 'ed25519' || type === 'ed448';
  }
}

export class IssuerKeys {
  private keys: CachedKey[] | undefined;
  private jwksUri: string | undefined;
  private loadedAt = 0;
  private lastAttemptAt = Number.NEGATIVE_INFINITY;
  private lastError: unknown;
  private inflight: Promise<void> | undefined;
  /** Fetches made (discovery and JWKS), for tests and metrics. */
  fetches = 0;

  constructor(
    readonly trusted: TrustedIssuer,
    private readonly options: IssuerKeysOptions,
  ) {
    this.jwksUri = trusted.jwksUri;
  }

  /**
   * The keys that may have signed a token with this `alg` and `kid`; several only when the token
   * has no `kid`. Throws `unknown_kid` when there are none even after a refetch (or when a refetch
   * is not allowed yet), and IdpUnavailableError when the issuer's keys were never fetched.
   */
  async candidates(alg: AllowedTokenAlgorithm, kid: string | undefined): Promise<KeyObject[]> {
    if (this.keys === undefined || Date.now() - this.loadedAt > this.options.maxAgeMs) await this.refresh();
    let found = this.select(alg, kid);
    if (found.length === 0) {
      const refreshed = await this.refresh();
      found = this.select(alg, kid);
      if (found.length === 0 && refreshed === 'failed') {
        throw new IdpUnavailableError(
          "the issuer's keys could not be fetched",
          { issuer: this.trusted.issuer },
          {
            cause: this.lastError,
          },
        );
      }
    }
    if (found.length === 0) {
      throw new TokenRejectedError(
        'unknown_kid',
        kid === undefined ? `the issuer has no key for ${alg}` : `the issuer has no ${alg} key with this kid`,
        { issuer: this.trusted.issuer, ...(kid === undefined ? {} : { kid: kid.slice(0, 100) }) },
      );
    }
    return found;
  }

  private select(alg: AllowedTokenAlgorithm, kid: string | undefined): KeyObject[] {
    return (this.keys ?? [])
      .filter((k) => (kid === undefined || k.kid === kid) && (k.alg === undefined || k.alg === alg))
      .filter((k) => keyFitsAlgorithm(k.key, alg))
      .map((k) => k.key);
  }

  /**
   * Fetches the keys unless a fetch ran less than `refetchIntervalMs` ago; waits for a fetch already
   * running. Without any keys after that, throws IdpUnavailableError.
   */
  private async refresh(): Promise<'fetched' | 'failed' | 'skipped'> {
    let outcome: 'fetched' | 'failed' | 'skipped' = 'skipped';
    if (this.inflight) {
      await this.inflight;
      outcome = this.lastError === undefined ? 'fetched' : 'failed';
    } else if (Date.now() - this.lastAttemptAt >= this.options.refetchIntervalMs) {
      this.lastAttemptAt = Date.now();
      this.inflight = this.load().finally(() => {
        this.inflight = undefined;
      });
      await this.inflight;
      outcome = this.lastError === undefined ? 'fetched' : 'failed';
    }
    if (this.keys === undefined) {
      throw new IdpUnavailableError(
        "the issuer's keys could not be fetched",
        { issuer: this.trusted.issuer },
        {
          cause: this.lastError,
        },
      );
    }
    return outcome;
  }

  /** Discovery (once) and JWKS; on failure keeps the previous keys and records the error. */
  private async load(): Promise<void> {
    try {
      if (this.jwksUri === undefined) this.jwksUri = await this.discover();
      const jwks = await this.fetchJson(this.jwksUri, 'JWKS');
      this.keys = parseJwks(jwks, this.trusted.issuer);
      this.loadedAt = Date.now();
      this.lastError = undefined;
    } catch (e) {
      this.lastError = e;
    }
  }

  private async discover(): Promise<string> {
    const base = this.trusted.issuer.replace(/\/+$/, '');
    const doc = await this.fetchJson(`${base}/.well-known/openid-configuration`, 'discovery document');
    if (typeof doc !== 'object' || doc === null)
      throw this.unavailable('discovery document is not an object');
    const { issuer, jwks_uri: jwksUri } = doc as { issuer?: unknown; jwks_uri?: unknown };
    // OpenID Connect Discovery 1.0 section 4.3: the document's issuer must be exactly ours.
    if (issuer !== this.trusted.issuer) throw this.unavailable('discovery document names another issuer');
    if (typeof jwksUri !== 'string' || !isAcceptableIdpUrl(jwksUri)) {
      throw this.unavailable('discovery document has no usable jwks_uri (https, or http on loopback)');
    }
    return jwksUri;
  }

  private unavailable(message: string, cause?: unknown): IdpUnavailableError {
    return new IdpUnavailableError(message, { issuer: this.trusted.issuer }, { cause });
  }

  private async fetchJson(url: string, what: string): Promise<unknown> {
    this.fetches++;
    let response: Response;
    try {
      response = await fetch(url, {
        headers: { accept: 'application/json' },
        redirect: 'error',
        signal: AbortSignal.timeout(this.options.fetchTimeoutMs),
      });
    } catch (e) {
      throw this.unavailable(`${what} could not be fetched`, e);
    }
    if (!response.ok) {
      await response.body?.cancel();
      throw this.unavailable(`${what} answered HTTP ${response.status}`);
    }
    const declared = Number(response.headers.get('content-length') ?? '0');
    if (declared > MAX_IDP_RESPONSE_BYTES) {
      await response.body?.cancel();
      throw this.unavailable(`${what} larger than ${MAX_IDP_RESPONSE_BYTES} bytes`);
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      for await (const chunk of response.body ?? []) {
        size += chunk.length;
        if (size > MAX_IDP_RESPONSE_BYTES) {
          await response.body?.cancel();
          throw this.unavailable(`${what} larger than ${MAX_IDP_RESPONSE_BYTES} bytes`);
        }
        chunks.push(chunk);
      }
      return JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      if (e instanceof IdpUnavailableError) throw e;
      throw this.unavailable(`${what} is not JSON`, e);
    }
  }
}

/** The usable public signing keys of a JWKS; symmetric, encryption-only and unparsable keys are skipped. */
function parseJwks(jwks: unknown, issuer: string): CachedKey[] {
  const keys = (jwks as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(keys)) throw new IdpUnavailableError('JWKS has no keys array', { issuer });
  if (keys.length > MAX_JWKS_KEYS)
    throw new IdpUnavailableError(`JWKS has more than ${MAX_JWKS_KEYS} keys`, { issuer });
  const out: CachedKey[] = [];
  for (const jwk of keys as Record<string, unknown>[]) {
    if (typeof jwk !== 'object' || jwk === null || typeof jwk['kty'] !== 'string' || jwk['kty'] === 'oct')
      continue;
    if (jwk['use'] !== undefined && jwk['use'] !== 'sig') continue;
    if (jwk['key_ops'] !== undefined && !(Array.isArray(jwk['key_ops']) && jwk['key_ops'].includes('verify')))
      continue;
    const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
    let key: KeyObject;
    try {
      key = createPublicKey({ key: pub as JsonWebKey, format: 'jwk' });
    } catch {
      continue;
    }
    out.push({
      kid: typeof jwk['kid'] === 'string' ? jwk['kid'] : undefined,
      alg: typeof jwk['alg'] === 'string' ? jwk['alg'] : undefined,
      key,
    });
  }
  return out;
}
