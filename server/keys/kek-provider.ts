/**
 * Where the card server's root secrets live: key-encryption keys (KEKs) and the PIN verifier key.
 *
 * The database never holds a usable secret. Each private key and management key is sealed under
 * its own data key (`sealing.ts`); the data key is wrapped by a KEK that only the provider can use;
 * PIN and PUK verifiers are HMACs under a key only the provider can use (`pin-verifier.ts`). A
 * stolen database therefore yields neither keys nor PINs (not even by brute force over the
 * 10^6..10^8 PIN space) without the provider.
 *
 * Both kinds of key are versioned. `rotate()` adds a KEK version that new wraps use; old versions
 * still unwrap until `retire()` removes them (after `rewrapAll`, `rewrap.ts`). PIN keys rotate
 * separately (`rotatePinKey`): a verifier can only move to a new PIN key when the PIN is presented,
 * so old PIN key versions stay until no verifier uses them.
 *
 * Implementations: a local key file (`key-file-provider.ts`, the default) and PKCS#11
 * (`pkcs11-provider.ts`, keys generated non-extractable inside an HSM).
 */
import { CardlinkError } from '../../protocol/errors.js';
import type { TokenKeyStore } from './token-keys.js';

/** A data key wrapped by one KEK version. */
export interface WrappedDataKey {
  readonly kekVersion: number;
  readonly wrapped: Buffer;
}

export interface KekProvider {
  /** `keyfile` or `pkcs11`, for logs and `cardlink server status`. */
  readonly kind: string;
  /** The KEK version new wraps use. */
  readonly currentVersion: number;
  /** Every KEK version that can still unwrap, ascending. */
  readonly versions: readonly number[];
  /** Wraps a data key under the current KEK with AES-256-GCM; `aad` must be given again to unwrap. */
  wrap(dataKey: Uint8Array, aad: Uint8Array): Promise<WrappedDataKey>;
  /** Unwraps; throws `SealedKeyInvalidError` when the wrapped key or the AAD was altered. */
  unwrap(wrapped: WrappedDataKey, aad: Uint8Array): Promise<Buffer>;
  /** Adds a KEK version and makes it current. Returns the new version. */
  rotate(): Promise<number>;
  /** Destroys an old KEK version (never the current one). Check `kekVersionsInUse` first. */
  retire(version: number): Promise<void>;

  /** The PIN key version new verifiers use. */
  readonly pinKeyVersion: number;
  readonly pinKeyVersions: readonly number[];
  /** HMAC-SHA-256 of `data` under the PIN key of `version` (default: current). */
  hmac(data: Uint8Array, version?: number): Promise<{ version: number; mac: Buffer }>;
  rotatePinKey(): Promise<number>;
  retirePinKey(version: number): Promise<void>;

  /**
   * Signing key pairs kept inside the provider's token (token-keys.ts): only a provider with a
   * token (PKCS#11) has them; the key file provider leaves this undefined.
   */
  readonly tokenKeys?: TokenKeyStore;

  close(): Promise<void>;
}

/** Bytes in a KEK, a data key and a PIN key: 256 bits. */
export const KEY_BYTES = 32;
/** AES-GCM nonce bytes (NIST SP 800-38D, 8.2.2: 96-bit random IVs). */
export const GCM_IV_BYTES = 12;
/** AES-GCM tag bytes (128-bit tags). */
export const GCM_TAG_BYTES = 16;

/**
 * Prefixed to the caller's AAD for every KEK wrap, in both providers: a KEK never produces a
 * ciphertext that verifies in another context.
 */
export const KEK_WRAP_DOMAIN = Buffer.from('cardlink/kek-wrap/v1\0', 'latin1');

/** The provider failed or was misused (unknown version, retiring the current key, HSM error). */
export class KeyProviderError extends CardlinkError {
  constructor(
    message: string,
    context: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown },
  ) {
    super('ERR_KEY_PROVIDER', message, context, options);
    this.name = 'KeyProviderError';
  }
}

/** A sealed blob or wrapped key did not authenticate: altered, moved, or the wrong AAD. */
export class SealedKeyInvalidError extends CardlinkError {
  constructor(message: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_SEALED_KEY_INVALID', message, context);
    this.name = 'SealedKeyInvalidError';
  }
}

/**
 * What both providers keep the same way: their KEKs and PIN keys by version number (key bytes in
 * the key file provider, object handles in the PKCS#11 one), and the versions KekProvider reports
 * from them. The highest version is the current one.
 */
export abstract class VersionedKeys<K> {
  protected keks = new Map<number, K>();
  protected pinKeys = new Map<number, K>();

  get currentVersion(): number {
    return Math.max(...this.keks.keys());
  }

  get versions(): readonly number[] {
    return [...this.keks.keys()].sort((a, b) => a - b);
  }

  get pinKeyVersion(): number {
    return Math.max(...this.pinKeys.keys());
  }

  get pinKeyVersions(): readonly number[] {
    return [...this.pinKeys.keys()].sort((a, b) => a - b);
  }
}

/** Refuses to retire the current version or a version that does not exist. */
export function checkRetirable(
  what: 'KEK' | 'PIN key',
  version: number,
  current: number,
  known: readonly number[],
): void {
  if (version === current) throw new KeyProviderError(`cannot retire the current ${what}`, { version });
  if (!known.includes(version)) throw new KeyProviderError(`no such ${what} version`, { version });
}
