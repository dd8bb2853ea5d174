/**
 * What authentication hands to the session layer, and the device registry it expects from storage.
 * A user is (issuer, subject) as the identity provider names them; the tenant comes from the
 * server's configuration of that issuer, never from the token.
 */

/** An identity provider the server trusts (setting `auth.issuers`). */
export interface TrustedIssuer {
  /** The issuer identifier, exactly as in the tokens' `iss` and the discovery document. */
  readonly issuer: string;
  /** The tenant every user of this issuer belongs to. */
  readonly tenant: string;
  /** JWKS URL; when absent it comes from `<issuer>/.well-known/openid-configuration`. */
  readonly jwksUri?: string | undefined;
  /** Require the RFC 9068 header `typ: at+jwt` (off by default: several IdPs write `JWT`). */
  readonly requireAtJwtType?: boolean | undefined;
}

/** A person as the identity provider names them. */
export interface UserRef {
  readonly issuer: string;
  readonly subject: string;
}

/** The result of a valid access token. */
export interface ValidatedToken extends UserRef {
  /** The tenant configured for the issuer. */
  readonly tenant: string;
  /** The token's `exp`. */
  readonly expiresAt: Date;
  /**
   * When the user last signed in at the IdP (RFC 9068 section 2.2.1 `auth_time`), if the token
   * says: what the set-PIN after a fresh sign-in checks (server/cards/pin-by-sign-in.ts).
   */
  readonly authTime?: Date;
  /** SHA-256 of the token (its UTF-8 bytes): what the device proof signs, and safe to log. */
  readonly tokenHash: Uint8Array;
  /**
   * The names certificate templates use, as the validated token carries them (`NAME_CLAIMS`):
   * only string values of at most `MAX_NAME_CLAIM_LENGTH` characters; others are left out.
   */
  readonly claims: Readonly<Record<string, string>>;
}

/** Claims of the access token kept for self-service enrollment's certificate templates. */
export const NAME_CLAIMS = ['email', 'upn', 'name', 'preferred_username'] as const;
/** Longest claim value kept (longer ones are left out, not cut). */
export const MAX_NAME_CLAIM_LENGTH = 256;

/** A device as the registry knows it. */
export interface RegisteredDevice {
  readonly id: string;
  /** Name shown to the user and to other devices (TAKEN_OVER). */
  readonly name: string;
  /** Only approved devices may open cards. */
  readonly status: 'pending' | 'approved';
  /** Base64url SHA-256 of the device key's DER SubjectPublicKeyInfo. */
  readonly thumbprint: string;
}

/**
 * Where devices are kept (implemented over server/storage by the persistence layer). The session
 * layer calls `find` after a valid token and device proof, and `register` for a key it has not seen
 * for this user; registration policy (pending until approved) belongs to the implementation.
 */
export interface DeviceRegistry {
  find(user: UserRef, keyThumbprint: string): Promise<RegisteredDevice | undefined>;
  register(
    user: UserRef & { readonly tenant: string },
    device: { readonly publicKeySpki: Uint8Array; readonly thumbprint: string; readonly name: string },
  ): Promise<RegisteredDevice>;
}
