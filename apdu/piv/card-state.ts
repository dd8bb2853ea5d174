/**
 * The seam between the PIV card application (pure logic, no I/O) and where a card's state lives.
 *
 * The card calls these interfaces for everything that persists or needs a secret. The in-memory
 * implementation (`memory-card-state.ts`) serves local cards and tests; the card server provides
 * database-backed, sealed implementations. All methods are async so a store can be remote.
 *
 * Rules every implementation keeps:
 * - A PIN/PUK try is consumed atomically *before* the comparison and restored on success.
 * - Secrets (PIN, PUK, management key, private keys) never leave the store in errors or logs.
 * - Each mutating call is all-or-nothing.
 */

/** SP 800-78-5 Table 6-2 algorithm identifiers supported by cardlink. */
export type KeyAlgorithm = 'RSA2048' | 'RSA3072' | 'ECCP256' | 'ECCP384';
/** Management (card administration) key algorithms, SP 800-78-5 Table 6-1. */
export type ManagementKeyAlgorithm = '3DES' | 'AES128' | 'AES192' | 'AES256';
/** When a slot's private key needs the PIN (the Yubico PIN policy model). */
export type PinPolicy = 'never' | 'once' | 'always';
export type KeyOrigin = 'generated' | 'imported';
export type ReferenceKind = 'pin' | 'puk';

export interface RetryStatus {
  /** Tries left; 0 means blocked. */
  readonly remaining: number;
  readonly limit: number;
}

export type VerifyOutcome =
  | { readonly ok: true }
  /** Wrong value (or already blocked: remaining 0, nothing compared). */
  | { readonly ok: false; readonly remaining: number };

/** PIN and PUK (SP 800-73-4 Part 2 section 3.2.1, key references 80 and 81). */
export interface ReferenceDataStore {
  status(kind: ReferenceKind): Promise<RetryStatus>;
  /** Consumes a try, compares, restores the counter on success. */
  verify(kind: ReferenceKind, candidate: Uint8Array): Promise<VerifyOutcome>;
  /** CHANGE REFERENCE DATA: verifies `current` as `verify` does, then sets `next`. */
  change(kind: ReferenceKind, current: Uint8Array, next: Uint8Array): Promise<VerifyOutcome>;
  /** RESET RETRY COUNTER: verifies the PUK, then sets the PIN and restores its counter. */
  unblockPin(puk: Uint8Array, newPin: Uint8Array): Promise<VerifyOutcome>;
}

export interface SlotKeyInfo {
  readonly algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo, DER. */
  readonly publicKeySpki: Uint8Array;
  readonly pinPolicy: PinPolicy;
  readonly origin: KeyOrigin;
}

/** Private keys by slot number (9A, 9C, 9D, 9E, 82..95). Private keys never leave the store. */
export interface KeySlotStore {
  info(slot: number): Promise<SlotKeyInfo | undefined>;
  generate(slot: number, algorithm: KeyAlgorithm, pinPolicy: PinPolicy): Promise<SlotKeyInfo>;
  /** Imports a private key given as PKCS#8 DER. */
  importKey(
    slot: number,
    algorithm: KeyAlgorithm,
    pkcs8: Uint8Array,
    pinPolicy: PinPolicy,
  ): Promise<SlotKeyInfo>;
  /**
   * RSA: the raw private-key operation on a modulus-sized block (the host pads).
   * EC: ECDSA over `input` taken as the already hashed message (truncated per SEC 1 if longer
   * than the curve), signature returned DER-encoded (SEQUENCE of r, s).
   */
  sign(slot: number, input: Uint8Array): Promise<Uint8Array>;
  /** ECDH: the shared secret (x coordinate) with the peer's uncompressed point. */
  deriveSharedSecret(slot: number, peerPoint: Uint8Array): Promise<Uint8Array>;
}

/** The card management key (key reference 9B). */
export interface ManagementKeyStore {
  algorithm(): Promise<ManagementKeyAlgorithm>;
  /** Block cipher (ECB, no padding) with the management key, for the challenge-response. */
  encryptBlock(block: Uint8Array): Promise<Uint8Array>;
  decryptBlock(block: Uint8Array): Promise<Uint8Array>;
  replace(algorithm: ManagementKeyAlgorithm, key: Uint8Array): Promise<void>;
}

/** Data objects by BER-TLV tag (`0x5FC102` CHUID, ...); values are the content of tag 53. */
export interface DataObjectStore {
  get(tag: number): Promise<Uint8Array | undefined>;
  /** Stores, or deletes when `value` is empty. */
  put(tag: number, value: Uint8Array): Promise<void>;
}

/** Facts fixed when the card is created. */
export interface CardIdentity {
  /** 32-bit serial, reported by the Yubico GET SERIAL extension. */
  readonly serial: number;
  /** 16-byte card GUID, used in the CHUID. */
  readonly guid: Uint8Array;
}

export interface PivCardState {
  readonly identity: CardIdentity;
  readonly references: ReferenceDataStore;
  readonly keys: KeySlotStore;
  readonly managementKey: ManagementKeyStore;
  readonly objects: DataObjectStore;
}
