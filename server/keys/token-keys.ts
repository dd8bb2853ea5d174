/**
 * Signing key pairs that live inside the KEK provider's PKCS#11 token (an HSM) and never leave it:
 * generated there with C_GenerateKeyPair, sensitive and not extractable, used through C_Sign. The
 * issuing CA keeps its key here when the administrator asks for it (`cardlink admin ca init
 * --key-in-hsm`, server/ca/token-signer.ts), so the CA's private key is never in server memory,
 * not even for the length of one signature. Only the PKCS#11 provider offers this
 * (`KekProvider.tokenKeys`); a key file provider has no token to keep keys in.
 */
import type { KeyObject } from 'node:crypto';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';

/** Bytes of the random CKA_ID given to each key pair (with the label, it names exactly one pair). */
export const TOKEN_KEY_ID_BYTES = 16;

/** Where a key pair is on the token, as the database records it: its CKA_LABEL and CKA_ID. */
export interface TokenKeyRef {
  readonly label: string;
  readonly id: Buffer;
}

export interface TokenKeyPair {
  readonly ref: TokenKeyRef;
  /** The public half, read from the token's public key object. */
  readonly publicKey: KeyObject;
}

export interface TokenKeyStore {
  /**
   * Generates a key pair inside the token, labelled `<the provider's label prefix>-<name>`, with a
   * fresh random CKA_ID: the private key CKA_SENSITIVE, not CKA_EXTRACTABLE, CKA_SIGN only; both
   * halves token objects.
   */
  generate(name: string, algorithm: KeyAlgorithm): Promise<TokenKeyPair>;
  /**
   * One private-key operation, as PKCS#11 defines it: EC (CKM_ECDSA) signs `input`, a hash, and
   * returns r || s, each the size of the curve; RSA (CKM_RSA_PKCS) pads `input`, a DigestInfo, and
   * returns the modulus-sized signature.
   */
  sign(ref: TokenKeyRef, algorithm: KeyAlgorithm, input: Uint8Array): Promise<Buffer>;
  /** Destroys both halves (a CA whose creation failed leaves no key behind). */
  destroy(ref: TokenKeyRef): Promise<void>;
}
