import { createHash, createPublicKey, randomBytes, X509Certificate, type KeyObject } from 'node:crypto';
import { concatBytes, parseTlvAt, parseTlvList } from '../../codec/ber-tlv.js';
import type { KeyAlgorithm } from '../card-state.js';
import { CardStateError } from '../crypto/errors.js';
import { CURVES, RSA_MODULUS_BITS, isEcAlgorithm, keyAlgorithmOf } from '../crypto/key-algorithms.js';
import {
  derBitString,
  derBoolean,
  derExplicit,
  derNamedBitString,
  derNull,
  derOctetString,
  derOid,
  derSequence,
  derSet,
  derSmallInteger,
  derTime,
  derUnsignedInteger,
  derUtf8String,
} from './der.js';

/**
 * Self-signed X.509 v3 certificates (RFC 5280) for a slot's key, signed through a callback so the
 * private key never leaves the key store:
 * - RSA: the callback gets the modulus-sized EMSA-PKCS1-v1_5 block (RFC 8017 section 9.2) built
 *   here, and returns the raw private-key operation on it (KeySlotStore.sign).
 * - EC: the callback gets the SHA-256 (P-256) or SHA-384 (P-384) hash of the TBSCertificate and
 *   returns a DER ECDSA signature (KeySlotStore.sign).
 * The result is checked against the public key before it is returned.
 */

/** Receives the block or hash to sign, returns the signature as the key store produces it. */
export type CertificateSigner = (input: Uint8Array) => Promise<Uint8Array>;

/** Validity of a certificate when the caller gives none (one year, as Yubico's tools use). */
export const DEFAULT_CERTIFICATE_VALIDITY_DAYS = 365;
/** Longest validity accepted, a sanity bound against typos (about 30 years). */
export const MAX_CERTIFICATE_VALIDITY_DAYS = 11000;
/** Longest common name, RFC 5280 Appendix A (ub-common-name). */
export const MAX_COMMON_NAME_LENGTH = 64;
/** Serial number size: 16 random bytes, positive; RFC 5280 section 4.1.2.2 allows up to 20. */
export const CERTIFICATE_SERIAL_BYTES = 16;

/** Object identifiers used in the certificate. */
const OID = {
  /** RFC 8017 Appendix C / RFC 4055 section 5. */
  sha256WithRSAEncryption: '1.2.840.113549.1.1.11',
  /** RFC 5758 section 3.2. */
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  ecdsaWithSha384: '1.2.840.10045.4.3.3',
  /** RFC 5280 section 4.1.2.4 / X.520 id-at-commonName. */
  commonName: '2.5.4.3',
  /** RFC 5280 section 4.2.1.9. */
  basicConstraints: '2.5.29.19',
  /** RFC 5280 section 4.2.1.3. */
  keyUsage: '2.5.29.15',
  /** RFC 5280 section 4.2.1.2. */
  subjectKeyIdentifier: '2.5.29.14',
} as const;

/** DigestInfo prefix for SHA-256, RFC 8017 section 9.2 note 1. */
const SHA256_DIGEST_INFO_PREFIX = Uint8Array.from(
  Buffer.from('3031300d060960864801650304020105000420', 'hex'),
);

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
  if (slot === 0x9c) return [KEY_USAGE.digitalSignature, KEY_USAGE.nonRepudiation];
  if (slot === 0x9d || (slot >= 0x82 && slot <= 0x95)) {
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
  let publicKey: KeyObject;
  try {
    publicKey = createPublicKey({ key: Buffer.from(options.publicKeySpki), format: 'der', type: 'spki' });
  } catch {
    throw new CardStateError('KEY_INVALID', 'not a SubjectPublicKeyInfo', { slot: options.slot });
  }
  const algorithm = keyAlgorithmOf(publicKey);
  const notBefore = new Date(Math.floor((options.notBefore ?? new Date()).getTime() / 1000) * 1000);
  const notAfter = new Date(notBefore.getTime() + validityDays * 86_400_000);

  const signatureAlgorithm = signatureAlgorithmFor(algorithm);
  const name = derSequence(derSet(derSequence(derOid(OID.commonName), derUtf8String(cn))));
  const serial = randomBytes(CERTIFICATE_SERIAL_BYTES);
  serial[0] = (serial[0]! & 0x7f) | 0x40; // positive, and exactly 16 bytes long in DER
  const extensions = derSequence(
    extension(OID.basicConstraints, true, derSequence()), // cA FALSE (the DEFAULT, so omitted)
    extension(OID.keyUsage, true, derNamedBitString(keyUsageForSlot(options.slot, algorithm))),
    extension(OID.subjectKeyIdentifier, false, derOctetString(subjectKeyIdentifier(options.publicKeySpki))),
  );
  const tbs = derSequence(
    derExplicit(0, derSmallInteger(2)), // v3
    derUnsignedInteger(serial),
    signatureAlgorithm,
    name,
    derSequence(derTime(notBefore), derTime(notAfter)),
    name,
    options.publicKeySpki,
    derExplicit(3, extensions),
  );

  const signature = await options.sign(signingInput(algorithm, tbs));
  const der = derSequence(tbs, signatureAlgorithm, derBitString(signature));

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

function signatureAlgorithmFor(algorithm: KeyAlgorithm): Uint8Array {
  if (algorithm === 'ECCP256') return derSequence(derOid(OID.ecdsaWithSha256));
  if (algorithm === 'ECCP384') return derSequence(derOid(OID.ecdsaWithSha384));
  return derSequence(derOid(OID.sha256WithRSAEncryption), derNull());
}

/** What the key store signs: the padded block for RSA, the hash for EC. */
function signingInput(algorithm: KeyAlgorithm, tbs: Uint8Array): Uint8Array {
  if (isEcAlgorithm(algorithm)) {
    return new Uint8Array(createHash(CURVES[algorithm].hash).update(tbs).digest());
  }
  const digestInfo = concatBytes([SHA256_DIGEST_INFO_PREFIX, createHash('sha256').update(tbs).digest()]);
  return emsaPkcs1v15(digestInfo, RSA_MODULUS_BITS[algorithm] / 8);
}

/** EMSA-PKCS1-v1_5 (RFC 8017 section 9.2 step 5): 00 01 FF..FF 00 || DigestInfo, `k` bytes. */
export function emsaPkcs1v15(digestInfo: Uint8Array, k: number): Uint8Array {
  if (digestInfo.length > k - 11)
    throw new CardStateError('INPUT_LENGTH', 'DigestInfo too long for the modulus');
  const em = new Uint8Array(k).fill(0xff);
  em[0] = 0x00;
  em[1] = 0x01;
  em[k - digestInfo.length - 1] = 0x00;
  em.set(digestInfo, k - digestInfo.length);
  return em;
}

function extension(oid: string, critical: boolean, value: Uint8Array): Uint8Array {
  return critical
    ? derSequence(derOid(oid), derBoolean(true), derOctetString(value))
    : derSequence(derOid(oid), derOctetString(value)); // critical FALSE is the DEFAULT, omitted in DER
}

/** RFC 5280 section 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's value. */
function subjectKeyIdentifier(spki: Uint8Array): Uint8Array {
  // SPKI = SEQUENCE { AlgorithmIdentifier, BIT STRING }; already checked by createPublicKey.
  const [, bitString] = parseTlvList(parseTlvAt(spki).tlv.value);
  if (!bitString) throw new CardStateError('KEY_INVALID', 'SubjectPublicKeyInfo without a key');
  // skip the BIT STRING's unused-bits byte
  return new Uint8Array(createHash('sha1').update(bitString.value.subarray(1)).digest());
}
