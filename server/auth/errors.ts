/**
 * Typed errors of authentication. Callers match on `code` and `reason`; messages and contexts hold
 * no token, only facts such as the issuer or the key id.
 */
import { CardlinkError } from '../../protocol/errors.js';

/** Why an access token was refused. */
export type TokenRejectReason =
  /** Not a compact JWS with JSON header and claims, or too long. */
  | 'malformed'
  /** `alg` outside the allow-list (`none`, HS*, ES512, ...). */
  | 'disallowed_alg'
  /** `iss` is not a configured issuer. */
  | 'wrong_issuer'
  /** `aud` does not contain this server's audience. */
  | 'wrong_audience'
  /** No key of the issuer has the token's `kid` (after a refetch, when one was allowed). */
  | 'unknown_kid'
  /** The signature does not verify with the issuer's key. */
  | 'bad_signature'
  /** `exp` has passed (beyond the clock tolerance). */
  | 'expired'
  /** `nbf` is in the future (beyond the clock tolerance). */
  | 'not_yet_valid'
  /**
   * A required claim is missing or has the wrong type (`sub`, `exp`), a time claim (`exp`, `iat`,
   * `nbf`) is not whole seconds within u32, or `typ` is wrong.
   */
  | 'invalid_claim';

export class TokenRejectedError extends CardlinkError {
  readonly reason: TokenRejectReason;
  constructor(
    reason: TokenRejectReason,
    message: string,
    context: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown },
  ) {
    super('ERR_AUTH_TOKEN_INVALID', message, { reason, ...context }, options);
    this.name = 'TokenRejectedError';
    this.reason = reason;
  }
}

/** The issuer's discovery document or keys could not be fetched: retry later, the token may be fine. */
export class IdpUnavailableError extends CardlinkError {
  constructor(
    message: string,
    context: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown },
  ) {
    super('ERR_IDP_UNAVAILABLE', message, context, options);
    this.name = 'IdpUnavailableError';
  }
}

/** Why a device proof was refused. */
export type DeviceProofRejectReason =
  /** Not a DER SubjectPublicKeyInfo of an ECDSA P-256 key in canonical (uncompressed) form. */
  | 'bad_key'
  /** Not 64 bytes, or does not verify over the expected transcript. */
  | 'bad_signature'
  /** Nonce, hash, URL or version unusable (a caller's mistake). */
  | 'bad_input';

export class DeviceProofError extends CardlinkError {
  readonly reason: DeviceProofRejectReason;
  constructor(reason: DeviceProofRejectReason, message: string, options?: { cause?: unknown }) {
    super('ERR_DEVICE_PROOF_INVALID', message, { reason }, options);
    this.name = 'DeviceProofError';
    this.reason = reason;
  }
}

/**
 * Too many failed sign-ins from this source address (or device proofs for this user): the attempt
 * is refused before any token is looked at. `retryAfterSeconds` says when to try again.
 */
export class AuthThrottledError extends CardlinkError {
  constructor(
    readonly retryAfterSeconds: number,
    readonly scope: 'address' | 'user',
  ) {
    super(
      'ERR_AUTH_THROTTLED',
      `too many failed sign-ins ${scope === 'address' ? 'from this address' : 'for this user'}; try again in ${retryAfterSeconds} s`,
      { scope, retryAfterSeconds },
    );
    this.name = 'AuthThrottledError';
  }
}
