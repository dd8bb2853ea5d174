import { createPublicKey, X509Certificate, type KeyObject } from 'node:crypto';
import type { KeyAlgorithm } from '../card-state.js';
import { KEY_REF, isRetiredSlot } from '../constants.js';
import { CardStateError } from '../crypto/errors.js';
import { isEcAlgorithm, keyAlgorithmOf } from '../crypto/key-algorithms.js';
import { cardSigningKey, type CertificateSigner } from './card-key-crypto.js';
import {
  BasicConstraintsExtension,
  KeyUsagesExtension,
  Name,
  randomSerialNumber,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
} from './x509-toolkit.js';

export type { CertificateSigner } from './card-key-crypto.js';

/**
 * Self-signed X.509 v3 certificates (RFC 5280) for a slot's key, built with the X.509 toolkit
 * (docs/x509.md) and signed through a callback so the private key never leaves the key store
 * (card-key-crypto.ts says what the callback receives). The result is checked against the public
 * key before it is returned.
 */

/** Validity of a certificate when the caller gives none (one year, as Yubico's tools use). */
export const DEFAULT_CERTIFICATE_VALIDITY_DAYS = 365;
/** Longest validity accepted, a sanity bound against typos (about 30 years). */
export const MAX_CERTIFICATE_VALIDITY_DAYS = 11000;
/** Longest common name, RFC 5280 Appendix A (ub-common-name). */
export const MAX_COMMON_NAME_LENGTH = 64;

/** KeyUsage bit numbers, RFC 5280 section 4.2.1.3. */
export const KEY_USAGE = {
  digitalSignature: 0,
  nonRepudiation: 1,
  keyEncipherment: 2,
  dataEncipherment: 3,
  keyAgreement: 4,
} as const;

export interface SelfSignedCertificateOptions {
  /** The PIV slot the key lives in; chooses the key usage. */
  readonly slot: number;
  /** The slot's SubjectPublicKeyInfo (DER), copied into the certificate as it is. */
  readonly publicKeySpki: Uint8Array;
  /** Subject and issuer common name, 1..64 characters. */
  readonly commonName: string;
  readonly sign: CertificateSigner;
  /** Start of validity; now when absent. */
  readonly notBefore?: Date;
  /** Days of validity from notBefore; DEFAULT_CERTIFICATE_VALIDITY_DAYS when absent. */
  readonly validityDays?: number;
}

/**
 * Key usage for a slot's certificate (SP 800-73-4 Part 1 section 3.1 describes the slots' roles):
 * 9A authentication and 9E card authentication sign challenges (digitalSignature); 9C signs
 * documents (digitalSignature + nonRepudiation); 9D and the retired slots 82..95 are key
 * management: keyEncipherment for RSA, keyAgreement for EC.
 */
export function keyUsageForSlot(slot: number, algorithm: KeyAlgorithm): number[] {
  if (slot === KEY_REF.DIGITAL_SIGNATURE) return [KEY_USAGE.digitalSignature, KEY_USAGE.nonRepudiation];
  if (slot === KEY_REF.KEY_MANAGEMENT || isRetiredSlot(slot)) {
    return [isEcAlgorithm(algorithm) ? KEY_USAGE.keyAgreement : KEY_USAGE.keyEncipherment];
  }
  return [KEY_USAGE.digitalSignature];
}

/** Builds, signs and checks a self-signed certificate; returns its DER. */
export async function createSelfSignedCertificate(
  options: SelfSignedCertificateOptions,
): Promise<Uint8Array> {
  const cn = options.commonName;
  if (typeof cn !== 'string' || cn.length === 0 || cn.length > MAX_COMMON_NAME_LENGTH) {
    throw new CardStateError('INPUT_LENGTH', 'common name must be 1..64 characters', {
      length: cn?.length ?? 0,
    });
  }
  const validityDays = options.validityDays ?? DEFAULT_CERTIFICATE_VALIDITY_DAYS;
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > MAX_CERTIFICATE_VALIDITY_DAYS) {
    throw new CardStateError('INPUT_RANGE', 'validity must be 1..11000 days', { validityDays });
  }
  // A copy: the toolkit reads the bytes as an ArrayBuffer, and a Buffer may be a view into a pool.
  const spki = Uint8Array.from(options.publicKeySpki);
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch {
    throw new CardStateError('KEY_INVALID', 'not a SubjectPublicKeyInfo', { slot: options.slot });
  }
  const algorithm = keyAlgorithmOf(publicKey);
  const notBefore = new Date(Math.floor((options.notBefore ?? new Date()).getTime() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + validityDays * 86_400_000);

  // UTF8String, as RFC 5280 section 4.1.2.6 asks of new certificates (a plain string would be parsed as a DN).
  const name = new Name([{ CN: [{ utf8String: cn }] }]);
  const signer = cardSigningKey(publicKey, options.sign);
  const certificate = await X509CertificateGenerator.create(
    {
      serialNumber: randomSerialNumber(),
      subject: name,
      issuer: name,
      notBefore,
      notAfter,
      publicKey: spki,
      signingKey: signer.keys.privateKey,
      signingAlgorithm: signer.signingAlgorithm,
      extensions: [
        new BasicConstraintsExtension(false, undefined, true), // cA FALSE, critical
        new KeyUsagesExtension(keyUsageFlags(keyUsageForSlot(options.slot, algorithm)), true),
        await SubjectKeyIdentifierExtension.create(spki, false, signer.crypto), // RFC 5280 4.2.1.2 method 1
      ],
    },
    signer.crypto,
  );
  const der = new Uint8Array(certificate.rawData);

  let verified = false;
  try {
    verified = new X509Certificate(der).verify(publicKey);
  } catch {
    verified = false;
  }
  if (!verified) {
    throw new CardStateError('KEY_TYPE_MISMATCH', 'certificate signature does not verify with the slot key', {
      slot: options.slot,
      algorithm,
    });
  }
  return der;
}

/** The toolkit's KeyUsageFlags: bit n of RFC 5280's named bit list is the flag 1 << n. */
function keyUsageFlags(bits: readonly number[]): number {
  return bits.reduce((flags, bit) => flags | (1 << bit), 0);
}
