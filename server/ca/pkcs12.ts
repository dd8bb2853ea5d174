/**
 * Reading a PKCS#12 file (RFC 7292, "PFX"): its MAC checked, its bags decrypted, its private keys
 * (PKCS#8 DER) and certificates (DER) handed back. What to do with them (one key, the certificate
 * that matches it, the slot) is `server/admin/import-pkcs12.ts`'s job.
 *
 * The ASN.1 structures come from the @peculiar family (asn1-pfx, asn1-pkcs8, asn1-cms, asn1-x509);
 * the few parameter structures it has no class for (PBES2, PBKDF2, PKCS#12 PBE parameters, CMS
 * EncryptedData) are declared below with its schema decorators, applied as functions (the project
 * compiles without `experimentalDecorators`). The cryptography is node:crypto.
 *
 * Supported, which covers what OpenSSL 3 writes by default and with `-legacy`-era 3DES:
 *   - integrity: the password MAC of RFC 7292 section 5 / Appendix B (HMAC with SHA-1, SHA-224,
 *     SHA-256, SHA-384 or SHA-512, key from the PKCS#12 KDF, ID 3);
 *   - privacy: PBES2 (RFC 8018 section 6.2) with PBKDF2 and AES-128/192/256-CBC, and
 *     pbeWithSHAAnd3-KeyTripleDES-CBC (RFC 7292 Appendix C, key and IV from the PKCS#12 KDF).
 * Refused with ERR_PKCS12_UNSUPPORTED: RC2 and RC4 PBEs (`openssl pkcs12 -export -legacy`, and
 * OpenSSL 1.1's default for certificates), public-key privacy (EnvelopedData), PBMAC1.
 *
 * A wrong password and an altered file look the same to the MAC (ERR_PKCS12_PASSWORD): which of
 * the two happened cannot be told apart, by design of an HMAC. A file without a MAC is refused
 * unless the caller allows it (`allowNoMac`).
 *
 * Limits (ERR_PKCS12_INVALID naming the constant): the file's size, its ContentInfos and bags, the
 * iterations of one derivation (lower for the 3DES PBE, whose KDF runs in JavaScript), and the
 * key-derivation work of the whole file. They bound the CPU a crafted file can take.
 */
import {
  createDecipheriv,
  createHash,
  createHmac,
  pbkdf2Sync,
  timingSafeEqual,
  type BinaryLike,
} from 'node:crypto';
import { ContentInfo, EncryptedContentInfo } from '@peculiar/asn1-cms';
import {
  AuthenticatedSafe,
  CertBag,
  id_certBag,
  id_keyBag,
  id_pbeWithSHAAnd128BitRC4,
  id_pbeWithSHAAnd40BitRC4,
  id_pbeWithSHAAnd128BitRC2_CBC,
  id_pbewithSHAAnd40BitRC2_CBC,
  id_pbeWithSHAAnd2_KeyTripleDES_CBC,
  id_pbeWithSHAAnd3_KeyTripleDES_CBC,
  id_pkcs8ShroudedKeyBag,
  id_SafeContents,
  id_x509Certificate,
  MacData,
  SafeContents,
} from '@peculiar/asn1-pfx';
import { EncryptedPrivateKeyInfo } from '@peculiar/asn1-pkcs8';
import { AsnConvert, AsnProp, AsnPropTypes, OctetString } from '@peculiar/asn1-schema';
import { AlgorithmIdentifier } from '@peculiar/asn1-x509';
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';

/** Largest PKCS#12 file read, in bytes: a key, its certificate and a chain fit in far less. */
export const MAX_PKCS12_BYTES = 1024 * 1024;

/**
 * Most iterations accepted for one key derivation (the MAC's, a PBES2 one). OpenSSL 3 writes 2048;
 * the bound keeps a crafted file from holding the process for minutes.
 */
export const MAX_PKCS12_ITERATIONS = 1_000_000;

/**
 * Most iterations accepted for pbeWithSHAAnd3-KeyTripleDES-CBC, lower than MAX_PKCS12_ITERATIONS:
 * its key and IV come from the PKCS#12 KDF, which runs here as a loop of JavaScript hash calls
 * (three hash chains per bag, about 4 s at 1 000 000 iterations). OpenSSL writes 2048.
 */
export const MAX_PKCS12_3DES_ITERATIONS = 100_000;

/**
 * Most key-derivation work for one file, in hash iterations: each derivation (the MAC, every PBE of
 * a ContentInfo or a key bag) counts its iterations times the hash outputs it needs (3DES: 2 for
 * the key, 1 for the IV). Without it a file of many bags, each within the per-derivation limits,
 * could still block the event loop for minutes, with any password when it has no MAC. A file
 * from `openssl pkcs12 -export` needs 3 x 2048.
 */
export const MAX_PKCS12_KDF_WORK = 4_000_000;

/**
 * Most ContentInfos in the AuthenticatedSafe (OpenSSL writes 2: the certificates, the key). Each
 * may be encrypted with its own derivation, so a small cap keeps a file from asking for many.
 */
export const MAX_PKCS12_CONTENT_INFOS = 16;

/** Deepest nesting of safeContentsBag bags followed (RFC 7292 allows nesting; files rarely do). */
export const MAX_SAFE_CONTENTS_DEPTH = 4;

/** Most bags read from one file, all SafeContents together. */
export const MAX_PKCS12_BAGS = 64;

/** Why a PKCS#12 file is refused (`code`), with non-secret facts in `context`. */
export class Pkcs12Error extends CardlinkError {
  constructor(
    code: Extract<CardlinkErrorCode, 'ERR_PKCS12_PASSWORD' | 'ERR_PKCS12_INVALID' | 'ERR_PKCS12_UNSUPPORTED'>,
    message: string,
    context: Record<string, string | number | boolean> = {},
  ) {
    super(code, message, context);
    this.name = 'Pkcs12Error';
  }
}

/** What a PKCS#12 file holds, decrypted. Zero `privateKeys` after use. */
export interface Pkcs12Contents {
  /** PKCS#8 PrivateKeyInfo, DER, one per key bag. */
  readonly privateKeys: Buffer[];
  /** X.509 certificates, DER, one per certificate bag. */
  readonly certificates: Uint8Array[];
  /** The MAC's digest (`sha256`, ...), or `none` for a file without one. */
  readonly mac: string;
  /** Every encryption met (`PBES2/aes-256-cbc`, `pbeWithSHAAnd3-KeyTripleDES-CBC`), for the audit entry. */
  readonly encryption: readonly string[];
}

// --- OIDs -----------------------------------------------------------------------------------

/** PKCS#7 / CMS content types (RFC 5652 sections 4 and 8). */
const ID_DATA = '1.2.840.113549.1.7.1';
const ID_ENCRYPTED_DATA = '1.2.840.113549.1.7.6';
/** RFC 8018 Appendix A.4 and A.2. */
const ID_PBES2 = '1.2.840.113549.1.5.13';
const ID_PBKDF2 = '1.2.840.113549.1.5.12';
/** RFC 9579 (PBMAC1 in PKCS#12), refused. */
const ID_PBMAC1 = '1.2.840.113549.1.5.14';

/** A hash: node:crypto name, output bytes `u` and block bytes `v` (the PKCS#12 KDF's names). */
interface Digest {
  readonly name: string;
  readonly u: number;
  readonly v: number;
}
/** Hash OIDs (NIST CSOR, RFC 3279). */
const SHA1_OID = '1.3.14.3.2.26';
const DIGESTS: ReadonlyMap<string, Digest> = new Map([
  [SHA1_OID, { name: 'sha1', u: 20, v: 64 }],
  ['2.16.840.1.101.3.4.2.4', { name: 'sha224', u: 28, v: 64 }],
  ['2.16.840.1.101.3.4.2.1', { name: 'sha256', u: 32, v: 64 }],
  ['2.16.840.1.101.3.4.2.2', { name: 'sha384', u: 48, v: 128 }],
  ['2.16.840.1.101.3.4.2.3', { name: 'sha512', u: 64, v: 128 }],
]);

/** PBKDF2 PRFs (RFC 8018 Appendix B.1) and their hashes; hmacWithSHA1 is the default when absent. */
const HMAC_WITH_SHA1 = '1.2.840.113549.2.7';
const PBKDF2_PRFS: ReadonlyMap<string, Digest> = new Map([
  [HMAC_WITH_SHA1, DIGESTS.get(SHA1_OID)!],
  ['1.2.840.113549.2.8', DIGESTS.get('2.16.840.1.101.3.4.2.4')!],
  ['1.2.840.113549.2.9', DIGESTS.get('2.16.840.1.101.3.4.2.1')!],
  ['1.2.840.113549.2.10', DIGESTS.get('2.16.840.1.101.3.4.2.2')!],
  ['1.2.840.113549.2.11', DIGESTS.get('2.16.840.1.101.3.4.2.3')!],
]);

/** PBES2 encryption schemes (NIST CSOR): node:crypto cipher and key bytes. */
const PBES2_CIPHERS: ReadonlyMap<string, { name: string; keyBytes: number }> = new Map([
  ['2.16.840.1.101.3.4.1.2', { name: 'aes-128-cbc', keyBytes: 16 }],
  ['2.16.840.1.101.3.4.1.22', { name: 'aes-192-cbc', keyBytes: 24 }],
  ['2.16.840.1.101.3.4.1.42', { name: 'aes-256-cbc', keyBytes: 32 }],
]);

/** RFC 7292 Appendix C: the PKCS#12 PBEs that are refused, by name for the message. */
const LEGACY_PBES: ReadonlyMap<string, string> = new Map([
  [id_pbeWithSHAAnd128BitRC4, 'pbeWithSHAAnd128BitRC4'],
  [id_pbeWithSHAAnd40BitRC4, 'pbeWithSHAAnd40BitRC4'],
  [id_pbeWithSHAAnd128BitRC2_CBC, 'pbeWithSHAAnd128BitRC2-CBC'],
  [id_pbewithSHAAnd40BitRC2_CBC, 'pbewithSHAAnd40BitRC2-CBC'],
  [id_pbeWithSHAAnd2_KeyTripleDES_CBC, 'pbeWithSHAAnd2-KeyTripleDES-CBC'],
]);

/** RFC 7292 Appendix B.3: the PKCS#12 KDF's purpose byte. */
const KDF_ID = { key: 1, iv: 2, mac: 3 } as const;

// --- Structures the @peculiar family has no class for ------------------------------------------

/**
 * RFC 7292 section 4: `PFX ::= SEQUENCE { version INTEGER, authSafe ContentInfo, macData MacData
 * OPTIONAL }`. Declared here rather than taken from asn1-pfx: its PFX class initialises `macData`
 * to an empty MacData, so after parsing a file without a MAC cannot be told from one with a MAC.
 */
class Pfx {
  version = 0;
  authSafe = new ContentInfo();
  macData?: MacData;
}
AsnProp({ type: AsnPropTypes.Integer })(Pfx.prototype, 'version');
AsnProp({ type: ContentInfo })(Pfx.prototype, 'authSafe');
AsnProp({ type: MacData, optional: true })(Pfx.prototype, 'macData');

/** RFC 8018 Appendix A.4: `PBES2-params ::= SEQUENCE { keyDerivationFunc, encryptionScheme }`. */
class Pbes2Params {
  keyDerivationFunc = new AlgorithmIdentifier();
  encryptionScheme = new AlgorithmIdentifier();
}
AsnProp({ type: AlgorithmIdentifier })(Pbes2Params.prototype, 'keyDerivationFunc');
AsnProp({ type: AlgorithmIdentifier })(Pbes2Params.prototype, 'encryptionScheme');

/**
 * RFC 8018 Appendix A.2: `PBKDF2-params ::= SEQUENCE { salt CHOICE { specified OCTET STRING, ... },
 * iterationCount INTEGER, keyLength INTEGER OPTIONAL, prf AlgorithmIdentifier DEFAULT hmacWithSHA1 }`.
 * Only the `specified` salt is read (the other choice is reserved).
 */
class Pbkdf2Params {
  salt = new OctetString();
  iterationCount = 0;
  keyLength?: number;
  prf?: AlgorithmIdentifier;
}
AsnProp({ type: OctetString })(Pbkdf2Params.prototype, 'salt');
AsnProp({ type: AsnPropTypes.Integer })(Pbkdf2Params.prototype, 'iterationCount');
AsnProp({ type: AsnPropTypes.Integer, optional: true })(Pbkdf2Params.prototype, 'keyLength');
AsnProp({ type: AlgorithmIdentifier, optional: true })(Pbkdf2Params.prototype, 'prf');

/** RFC 7292 Appendix C: `pkcs-12PbeParams ::= SEQUENCE { salt OCTET STRING, iterations INTEGER }`. */
class Pkcs12PbeParams {
  salt = new OctetString();
  iterations = 0;
}
AsnProp({ type: OctetString })(Pkcs12PbeParams.prototype, 'salt');
AsnProp({ type: AsnPropTypes.Integer })(Pkcs12PbeParams.prototype, 'iterations');

/**
 * RFC 5652 section 8: `EncryptedData ::= SEQUENCE { version CMSVersion, encryptedContentInfo
 * EncryptedContentInfo, unprotectedAttrs [1] IMPLICIT UnprotectedAttributes OPTIONAL }`. The
 * attributes are not read (PKCS#12 files carry none; ANY keeps them from failing the parse).
 */
class CmsEncryptedData {
  version = 0;
  encryptedContentInfo = new EncryptedContentInfo();
  unprotectedAttrs?: ArrayBuffer;
}
AsnProp({ type: AsnPropTypes.Integer })(CmsEncryptedData.prototype, 'version');
AsnProp({ type: EncryptedContentInfo })(CmsEncryptedData.prototype, 'encryptedContentInfo');
AsnProp({ type: AsnPropTypes.Any, context: 1, implicit: true, optional: true })(
  CmsEncryptedData.prototype,
  'unprotectedAttrs',
);

// --- Reading --------------------------------------------------------------------------------

export interface ReadPkcs12Options {
  /**
   * Read a file without a MAC. Refused by default: without a MAC nothing checks the password or
   * that the file is unaltered (a plain keyBag then imports with any password at all), and every
   * derivation of the file runs whatever password is given.
   */
  readonly allowNoMac?: boolean;
}

/**
 * Checks the MAC of `der` with `password` and returns the file's keys and certificates.
 *
 * Order: the structure is parsed and every limit that can be checked without the password is
 * checked first (ContentInfos, the MAC's and the ContentInfos' key-derivation work), so a crafted
 * file is refused before any derivation runs; then the MAC; then the contents are decrypted, the
 * shrouded key bags inside them charged to the same work budget as they are met.
 */
export function readPkcs12(
  der: Uint8Array,
  password: string,
  options: ReadPkcs12Options = {},
): Pkcs12Contents {
  if (der.length > MAX_PKCS12_BYTES)
    throw new Pkcs12Error('ERR_PKCS12_INVALID', 'the PKCS#12 file is too large', {
      bytes: der.length,
      limit: MAX_PKCS12_BYTES,
    });
  const pfx = parse(der, Pfx, 'PFX');
  if (pfx.version !== 3)
    throw new Pkcs12Error('ERR_PKCS12_INVALID', 'not a PKCS#12 v3 file', { version: pfx.version });
  if (pfx.authSafe.contentType !== ID_DATA)
    throw new Pkcs12Error(
      'ERR_PKCS12_UNSUPPORTED',
      'PKCS#12 files protected by a public key are not supported',
      {
        contentType: pfx.authSafe.contentType,
      },
    );
  const authSafeBytes = octets(pfx.authSafe.content, 'authSafe');
  const infos = parse(authSafeBytes, AuthenticatedSafe, 'AuthenticatedSafe');
  if (infos.length > MAX_PKCS12_CONTENT_INFOS)
    throw new Pkcs12Error(
      'ERR_PKCS12_INVALID',
      `too many ContentInfos in the PKCS#12 file (MAX_PKCS12_CONTENT_INFOS: ${MAX_PKCS12_CONTENT_INFOS})`,
      { reason: 'content-infos', contentInfos: infos.length, limit: MAX_PKCS12_CONTENT_INFOS },
    );
  if (!pfx.macData && !options.allowNoMac)
    throw new Pkcs12Error(
      'ERR_PKCS12_INVALID',
      'the PKCS#12 file has no MAC: nothing checks its password or that it is unaltered ' +
        '(export it again with a MAC, or allow it explicitly: --allow-no-mac)',
      { reason: 'no-mac' },
    );

  const budget = new KdfBudget();
  const encryption = new Set<string>();
  const { macData } = pfx;
  const macDigest = macData ? macDigestOf(macData, budget) : undefined;
  const contents = infos.map((info) => contentOf(info, budget, encryption));
  const mac = macData && macDigest ? verifyMac(macData, macDigest, authSafeBytes, password) : 'none';

  const privateKeys: Buffer[] = [];
  const certificates: Uint8Array[] = [];
  let bags = 0;
  const readSafeContents = (bytes: Uint8Array, depth: number) => {
    if (depth > MAX_SAFE_CONTENTS_DEPTH)
      throw new Pkcs12Error('ERR_PKCS12_INVALID', 'PKCS#12 bags nested too deeply', {
        limit: MAX_SAFE_CONTENTS_DEPTH,
      });
    for (const bag of parse(bytes, SafeContents, 'SafeContents')) {
      if (++bags > MAX_PKCS12_BAGS)
        throw new Pkcs12Error('ERR_PKCS12_INVALID', 'too many bags in the PKCS#12 file', {
          limit: MAX_PKCS12_BAGS,
        });
      const value = new Uint8Array(bag.bagValue);
      switch (bag.bagId) {
        case id_keyBag:
          privateKeys.push(Buffer.from(value)); // PrivateKeyInfo as it is
          break;
        case id_pkcs8ShroudedKeyBag: {
          const info = parse(value, EncryptedPrivateKeyInfo, 'EncryptedPrivateKeyInfo');
          const pbe = pbeOf(info.encryptionAlgorithm, budget, encryption);
          privateKeys.push(pbe(new Uint8Array(info.encryptedData.buffer), password));
          break;
        }
        case id_certBag: {
          const cert = parse(value, CertBag, 'CertBag');
          // Other certificate types (SDSI) carry nothing a PIV slot can hold.
          if (cert.certId === id_x509Certificate) certificates.push(octets(cert.certValue, 'certValue'));
          break;
        }
        case id_SafeContents:
          readSafeContents(value, depth + 1);
          break;
        default:
          break; // CRL and secret bags: nothing a slot holds
      }
    }
  };

  try {
    for (const content of contents) readSafeContents(content(password), 0);
  } catch (error) {
    for (const key of privateKeys) key.fill(0);
    throw error;
  }
  return { privateKeys, certificates, mac, encryption: [...encryption] };
}

/**
 * The key-derivation work of one file (MAX_PKCS12_KDF_WORK), charged BEFORE each derivation runs:
 * a derivation over the budget is refused without being run.
 */
class KdfBudget {
  private spent = 0;

  /** `iterations` (already within its own limit) times the hash outputs the derivation needs. */
  charge(iterations: number, hashOutputs: number, what: string): void {
    this.spent += iterations * hashOutputs;
    if (this.spent > MAX_PKCS12_KDF_WORK)
      throw new Pkcs12Error(
        'ERR_PKCS12_INVALID',
        `the PKCS#12 file asks for more key-derivation work than allowed (MAX_PKCS12_KDF_WORK: ` +
          `${MAX_PKCS12_KDF_WORK} hash iterations for the MAC and every encryption together)`,
        { reason: 'kdf-work', work: this.spent, limit: MAX_PKCS12_KDF_WORK, at: what },
      );
  }
}

/** Decrypts one ciphertext with `password`; the derivation's parameters were read and charged. */
type Pbe = (ciphertext: Uint8Array, password: string) => Buffer;

/**
 * One ContentInfo of the AuthenticatedSafe, its encryption's parameters read and its work charged
 * now; the function returns its SafeContents bytes.
 */
function contentOf(
  info: ContentInfo,
  budget: KdfBudget,
  encryption: Set<string>,
): (password: string) => Uint8Array {
  if (info.contentType === ID_DATA) {
    const bytes = octets(info.content, 'SafeContents');
    return () => bytes;
  }
  if (info.contentType === ID_ENCRYPTED_DATA) {
    const data = parse(new Uint8Array(info.content), CmsEncryptedData, 'EncryptedData');
    const content = data.encryptedContentInfo.encryptedContent;
    const bytes = content?.value
      ? new Uint8Array(content.value.buffer)
      : concat((content?.constructedValue ?? []).map((o) => new Uint8Array(o.buffer)));
    const pbe = pbeOf(data.encryptedContentInfo.contentEncryptionAlgorithm, budget, encryption);
    return (password) => pbe(bytes, password);
  }
  throw new Pkcs12Error(
    'ERR_PKCS12_UNSUPPORTED',
    'PKCS#12 content encrypted to a public key (EnvelopedData) is not supported',
    { contentType: info.contentType },
  );
}

/** RFC 7292 section 5.2: the MAC's digest, checked to be supported, its derivation charged. */
function macDigestOf(macData: MacData, budget: KdfBudget): Digest {
  const oid = macData.mac.digestAlgorithm.algorithm;
  if (oid === ID_PBMAC1)
    throw new Pkcs12Error(
      'ERR_PKCS12_UNSUPPORTED',
      'the PBMAC1 integrity of this PKCS#12 file is not supported',
      {
        mac: 'PBMAC1',
      },
    );
  const digest = DIGESTS.get(oid);
  if (!digest)
    throw new Pkcs12Error(
      'ERR_PKCS12_UNSUPPORTED',
      'the MAC algorithm of this PKCS#12 file is not supported',
      {
        mac: oid,
      },
    );
  checkIterations(macData.iterations, MAX_PKCS12_ITERATIONS, 'MAX_PKCS12_ITERATIONS');
  budget.charge(macData.iterations, 1, 'mac'); // a key of the hash's own length: one output
  return digest;
}

/** RFC 7292 section 5.2 and Appendix B: the password MAC over the AuthenticatedSafe's octets. */
function verifyMac(macData: MacData, digest: Digest, authSafe: Uint8Array, password: string): string {
  const { mac, macSalt, iterations } = macData;
  const bmp = bmpPassword(password);
  const key = pkcs12Kdf(digest, bmp, new Uint8Array(macSalt.buffer), KDF_ID.mac, iterations, digest.u);
  bmp.fill(0);
  const expected = createHmac(digest.name, key).update(authSafe).digest();
  key.fill(0);
  const given = Buffer.from(mac.digest.buffer);
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    throw new Pkcs12Error(
      'ERR_PKCS12_PASSWORD',
      'the PKCS#12 password is wrong, or the file was altered (its MAC does not match)',
    );
  return digest.name;
}

/**
 * Reads a bag's or content's encryption parameters, checks them against the limits and charges
 * the derivation to `budget`; returns the function that decrypts. `encryption` collects what was met.
 */
function pbeOf(algorithm: AlgorithmIdentifier, budget: KdfBudget, encryption: Set<string>): Pbe {
  const oid = algorithm.algorithm;
  const params = algorithm.parameters ? new Uint8Array(algorithm.parameters) : new Uint8Array(0);
  if (oid === ID_PBES2) {
    const pbes2 = parse(params, Pbes2Params, 'PBES2-params');
    if (pbes2.keyDerivationFunc.algorithm !== ID_PBKDF2) unsupportedPbe(pbes2.keyDerivationFunc.algorithm);
    const cipher = PBES2_CIPHERS.get(pbes2.encryptionScheme.algorithm);
    if (!cipher) unsupportedPbe(pbes2.encryptionScheme.algorithm);
    const kdf = parse(
      new Uint8Array(pbes2.keyDerivationFunc.parameters ?? new ArrayBuffer(0)),
      Pbkdf2Params,
      'PBKDF2-params',
    );
    const prf = PBKDF2_PRFS.get(kdf.prf?.algorithm ?? HMAC_WITH_SHA1);
    if (!prf) unsupportedPbe(kdf.prf!.algorithm);
    if (kdf.keyLength !== undefined && kdf.keyLength !== cipher.keyBytes)
      throw new Pkcs12Error('ERR_PKCS12_INVALID', 'PBKDF2 key length does not fit the cipher', {
        keyLength: kdf.keyLength,
      });
    checkIterations(kdf.iterationCount, MAX_PKCS12_ITERATIONS, 'MAX_PKCS12_ITERATIONS');
    // PBKDF2 runs one HMAC chain per output block of the PRF.
    budget.charge(kdf.iterationCount, Math.ceil(cipher.keyBytes / prf.u), `PBES2/${cipher.name}`);
    const iv = octets(pbes2.encryptionScheme.parameters ?? new ArrayBuffer(0), 'PBES2 IV');
    encryption.add(`PBES2/${cipher.name}`);
    return (ciphertext, password) => {
      // RFC 8018 leaves the password's encoding open; OpenSSL (and so every file it writes) uses
      // the password's UTF-8 bytes for PBES2, unlike the BMPString of the PKCS#12 KDF.
      const key = pbkdf2Sync(
        Buffer.from(password, 'utf8'),
        Buffer.from(kdf.salt.buffer),
        kdf.iterationCount,
        cipher.keyBytes,
        prf.name,
      );
      return decipher(cipher.name, key, iv, ciphertext);
    };
  }
  if (oid === id_pbeWithSHAAnd3_KeyTripleDES_CBC) {
    const pbe = parse(params, Pkcs12PbeParams, 'pkcs-12PbeParams');
    checkIterations(pbe.iterations, MAX_PKCS12_3DES_ITERATIONS, 'MAX_PKCS12_3DES_ITERATIONS');
    const sha1 = DIGESTS.get(SHA1_OID)!;
    // Key (24 bytes) and IV (8 bytes), each its own PKCS#12 KDF run: 2 + 1 SHA-1 outputs.
    budget.charge(
      pbe.iterations,
      Math.ceil(24 / sha1.u) + Math.ceil(8 / sha1.u),
      'pbeWithSHAAnd3-KeyTripleDES-CBC',
    );
    encryption.add('pbeWithSHAAnd3-KeyTripleDES-CBC');
    return (ciphertext, password) => {
      const bmp = bmpPassword(password);
      const salt = new Uint8Array(pbe.salt.buffer);
      const key = pkcs12Kdf(sha1, bmp, salt, KDF_ID.key, pbe.iterations, 24);
      const iv = pkcs12Kdf(sha1, bmp, salt, KDF_ID.iv, pbe.iterations, 8);
      bmp.fill(0);
      return decipher('des-ede3-cbc', key, iv, ciphertext);
    };
  }
  return unsupportedPbe(oid);
}

function decipher(name: string, key: Buffer, iv: Uint8Array, ciphertext: Uint8Array): Buffer {
  try {
    const d = createDecipheriv(name, key, iv);
    return Buffer.concat([d.update(ciphertext), d.final()]);
  } catch {
    // Bad padding: the password is wrong (a file without a MAC) or the ciphertext was altered.
    throw new Pkcs12Error(
      'ERR_PKCS12_PASSWORD',
      'the PKCS#12 password is wrong, or the file was altered (a bag does not decrypt)',
    );
  } finally {
    key.fill(0);
  }
}

function unsupportedPbe(oid: string): never {
  const legacy = LEGACY_PBES.get(oid);
  throw new Pkcs12Error(
    'ERR_PKCS12_UNSUPPORTED',
    `the PKCS#12 file is encrypted with ${legacy ?? `an unsupported algorithm (${oid})`}; export it ` +
      'again with the defaults of OpenSSL 3 (`openssl pkcs12 -export` without -legacy: PBES2, ' +
      'PBKDF2, AES-256-CBC) or with `-keypbe AES-256-CBC -certpbe AES-256-CBC`',
    { algorithm: legacy ?? oid },
  );
}

/** An iteration count from 1 to `limit`; the error names the limit's constant. */
function checkIterations(iterations: number, limit: number, limitName: string): void {
  if (!Number.isSafeInteger(iterations) || iterations < 1 || iterations > limit)
    throw new Pkcs12Error(
      'ERR_PKCS12_INVALID',
      `PKCS#12 iteration count out of range (1 to ${limit}, ${limitName})`,
      {
        reason: 'iterations',
        iterations: Number.isSafeInteger(iterations) ? iterations : -1,
        limit,
        limitName,
      },
    );
}

/**
 * RFC 7292 Appendix B.1: the password as a BMPString (UTF-16 big-endian) with two zero bytes at
 * the end, as the PKCS#12 KDF takes it.
 */
function bmpPassword(password: string): Buffer {
  const le = Buffer.from(`${password}\u0000`, 'utf16le');
  for (let i = 0; i < le.length; i += 2) {
    const low = le[i]!;
    le[i] = le[i + 1]!;
    le[i + 1] = low;
  }
  return le;
}

/**
 * RFC 7292 Appendix B.2: the PKCS#12 key derivation. `u` is the hash's output and `v` its block
 * size in bytes; `id` says what the bytes are for (KDF_ID); `n` bytes are returned.
 */
export function pkcs12Kdf(
  digest: { name: string; u: number; v: number },
  password: Uint8Array,
  salt: Uint8Array,
  id: number,
  iterations: number,
  n: number,
): Buffer {
  const { name, u, v } = digest;
  const d = Buffer.alloc(v, id);
  const fill = (src: Uint8Array) => {
    const out = Buffer.alloc(v * Math.ceil(src.length / v));
    for (let i = 0; i < out.length; i++) out[i] = src[i % src.length]!;
    return out;
  };
  const i = Buffer.concat([fill(salt), fill(password)]);
  const blocks: Buffer[] = [];
  for (let produced = 0; produced < n; produced += u) {
    let a = createHash(name).update(d).update(i).digest();
    for (let r = 1; r < iterations; r++) a = createHash(name).update(a).digest();
    blocks.push(a);
    // I_j = (I_j + B + 1) mod 2^(8v) for each v-byte block of I, B being A repeated to v bytes.
    const b = fill(a);
    for (let j = 0; j < i.length; j += v) {
      let carry = 1;
      for (let k = v - 1; k >= 0; k--) {
        const sum = i[j + k]! + b[k]! + carry;
        i[j + k] = sum & 0xff;
        carry = sum >> 8;
      }
    }
  }
  i.fill(0);
  const out = Buffer.concat(blocks).subarray(0, n);
  return Buffer.from(out);
}

/** Parses `bytes` as `type`; anything that does not parse is ERR_PKCS12_INVALID naming the structure. */
function parse<T>(bytes: BinaryLike | ArrayBuffer, type: new () => T, what: string): T {
  try {
    return AsnConvert.parse(bytes as ArrayBuffer, type);
  } catch {
    throw new Pkcs12Error('ERR_PKCS12_INVALID', `not a PKCS#12 file (${what} does not parse)`, {
      structure: what,
    });
  }
}

/** The contents of a DER OCTET STRING. */
function octets(bytes: ArrayBuffer | Uint8Array, what: string): Uint8Array {
  return new Uint8Array(
    parse(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes), OctetString, what).buffer,
  );
}

function concat(parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts));
}
