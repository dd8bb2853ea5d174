/**
 * The card server's issuing CA (docs/personalization.md): its key generated inside the server
 * (`initEmbeddedCa`) or an existing intermediate imported by the administrator (`importCa`),
 * sealed under the KEK like a card key (server/keys/sealing.ts, bound to its own location,
 * storage/ca-key-location.ts) and rotated with them (server/keys/rewrap.ts). Everything it signs
 * (its own certificate, card certificates, CRLs) goes through the X.509 toolkit with the same
 * key-store signer a card slot uses (apdu/piv/certificates/card-key-crypto.ts), so the unsealed
 * key is only ever a KeyObject in this process.
 *
 * With the PKCS#11 KEK provider the generated CA's key can instead stay inside the token
 * (`keyInHsm`): generated there, not extractable, every signature one C_Sign (token-signer.ts);
 * the database then records only where the token keeps it.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  X509Certificate as NodeX509,
  type KeyObject,
} from 'node:crypto';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import {
  BasicConstraintsExtension,
  cardSigningKey,
  KeyUsageFlags,
  KeyUsagesExtension,
  MAX_COMMON_NAME_LENGTH,
  Name,
  PemConverter,
  randomSerialNumber,
  SubjectKeyIdentifierExtension,
  X509Certificate,
  X509CertificateGenerator,
  type CardSigningKey,
} from '../../apdu/piv/certificates/index.js';
import { generateKeyPair, keyAlgorithmOf, prepareSigner } from '../../apdu/piv/crypto/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import {
  caKeyLocation,
  countIssuedCertificates,
  DEFAULT_CA_ID,
  findIssuingCa,
  insertIssuingCa,
  type CaKeyPlace,
  type IssuingCaOrigin,
  type IssuingCaRecord,
  type Storage,
} from '../storage/index.js';
import type { TokenKeyStore } from '../keys/token-keys.js';
import { tokenSigningKey } from './token-signer.js';

/** Key of a generated CA when the administrator names none: P-384 (SP 800-78-5 allows it for PIV issuers). */
export const DEFAULT_CA_ALGORITHM: KeyAlgorithm = 'ECCP384';
/** Validity of a generated CA certificate when none is given: ten years. */
export const DEFAULT_CA_VALIDITY_DAYS = 3650;
/** Longest validity of a generated CA certificate, about 30 years. */
export const MAX_CA_VALIDITY_DAYS = 11000;
/** Largest PEM file `importCa` reads (a certificate or a key). */
export const MAX_CA_PEM_BYTES = 64 * 1024;
/** Key version the CA key is sealed with (a CA key is never replaced in place). */
const CA_KEY_VERSION = 0;
/** The CA key pair's name on the token (labelled `<provider prefix>-ca-<CA id>`). */
const caTokenKeyName = (caId: string): string => `ca-${caId}`;

/** No CA, a second one, or an imported one that cannot issue. */
export class CaError extends CardlinkError {
  constructor(
    code: 'ERR_CA_MISSING' | 'ERR_CA_EXISTS' | 'ERR_CA_INVALID',
    message: string,
    context: Record<string, string | number | boolean> = {},
  ) {
    super(code, message, context);
    this.name = 'CaError';
  }
}

/** Where a CA's private key is: sealed under the KEK in the database, or inside the PKCS#11 token. */
export type CaKeyStore = 'sealed' | 'pkcs11';

/** What `cardlink admin ca show` prints. */
export interface CaInfo {
  readonly id: string;
  readonly origin: IssuingCaOrigin;
  readonly keyStore: CaKeyStore;
  /** The key pair's CKA_LABEL when keyStore is pkcs11. */
  readonly keyLabel?: string;
  readonly subject: string;
  readonly algorithm: KeyAlgorithm;
  readonly notBefore: string;
  readonly notAfter: string;
  /** SHA-256 of the certificate's DER, hex. */
  readonly fingerprint: string;
  readonly crlUrl: string;
  readonly crlNumber: number;
  readonly issued: number;
  readonly revoked: number;
  readonly certificatePem: string;
}

/** An open CA: its certificate and a signer over its unsealed key. */
export interface IssuingCa {
  readonly record: IssuingCaRecord;
  readonly certificate: X509Certificate;
  readonly signer: CardSigningKey;
}

export interface InitCaOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  /** The CRL distribution point of every certificate it will issue (an http(s) URL the server serves). */
  readonly crlUrl: string;
  readonly commonName?: string;
  readonly algorithm?: KeyAlgorithm;
  readonly validityDays?: number;
  /**
   * Generate the key inside the KEK provider's PKCS#11 token and keep it there (ERR_CA_INVALID
   * when the provider has no token) instead of sealing it into the database.
   */
  readonly keyInHsm?: boolean;
  readonly actor: string;
  readonly now?: Date;
}

/**
 * Generates the embedded CA: a key made here and sealed, or made inside the PKCS#11 token
 * (`keyInHsm`), and a self-signed CA certificate, stored.
 */
export async function initEmbeddedCa(options: InitCaOptions): Promise<CaInfo> {
  const { storage, kek } = options;
  const tokenKeys = options.keyInHsm ? tokenKeysOf(kek) : undefined;
  await refuseSecondCa(storage);
  const crlUrl = checkCrlUrl(options.crlUrl);
  const algorithm = options.algorithm ?? DEFAULT_CA_ALGORITHM;
  const commonName = options.commonName ?? 'cardlink issuing CA';
  if (commonName.length === 0 || commonName.length > MAX_COMMON_NAME_LENGTH || hasControl(commonName))
    throw new CaError('ERR_CA_INVALID', 'the CA name must be 1..64 characters without control characters');
  const validityDays = options.validityDays ?? DEFAULT_CA_VALIDITY_DAYS;
  if (!Number.isInteger(validityDays) || validityDays < 1 || validityDays > MAX_CA_VALIDITY_DAYS)
    throw new CaError('ERR_CA_INVALID', `CA validity must be 1..${MAX_CA_VALIDITY_DAYS} days`, {
      validityDays,
    });

  const notBefore = wholeSeconds(options.now ?? new Date());
  const certificateOf = (signer: CardSigningKey, publicKeySpki: Uint8Array) =>
    selfSignedCaCertificate(signer, publicKeySpki, commonName, notBefore, validityDays);
  if (tokenKeys) {
    await initInToken(storage, tokenKeys, { algorithm, crlUrl, actor: options.actor }, certificateOf);
    return showCa(storage);
  }
  const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
  const certificate = await certificateOf(signerFor(privateKey), Uint8Array.from(publicKeySpki));
  await store(storage, kek, {
    certificate,
    privateKey,
    origin: 'generated',
    crlUrl,
    actor: options.actor,
  });
  return showCa(storage);
}

/**
 * The CA key pair generated inside the token, the certificate signed there, the CA stored; the
 * key pair destroyed again when a later step fails (no key left behind for a CA that is not).
 */
async function initInToken(
  storage: Storage,
  tokenKeys: TokenKeyStore,
  ca: { algorithm: KeyAlgorithm; crlUrl: string; actor: string },
  certificateOf: (signer: CardSigningKey, publicKeySpki: Uint8Array) => Promise<Uint8Array>,
): Promise<void> {
  const pair = await tokenKeys.generate(caTokenKeyName(DEFAULT_CA_ID), ca.algorithm);
  try {
    const spki = new Uint8Array(pair.publicKey.export({ type: 'spki', format: 'der' }));
    const certificate = await certificateOf(tokenSigningKey(tokenKeys, pair.ref, pair.publicKey), spki);
    await insertCa(storage, {
      certificate,
      key: { token: pair.ref },
      origin: 'generated',
      crlUrl: ca.crlUrl,
      actor: ca.actor,
    });
  } catch (error) {
    await tokenKeys.destroy(pair.ref).catch(() => undefined);
    throw error;
  }
}

async function selfSignedCaCertificate(
  signer: CardSigningKey,
  publicKeySpki: Uint8Array,
  commonName: string,
  notBefore: Date,
  validityDays: number,
): Promise<Uint8Array> {
  const name = new Name([{ CN: [{ utf8String: commonName }] }]);
  const certificate = await X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerialNumber(),
      name,
      notBefore,
      notAfter: new Date(notBefore.getTime() + validityDays * 86_400_000),
      keys: signer.keys,
      signingAlgorithm: signer.signingAlgorithm,
      extensions: [
        // A CA of end-entity certificates only: path length 0 (RFC 5280 section 4.2.1.9).
        new BasicConstraintsExtension(true, 0, true),
        new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
        await SubjectKeyIdentifierExtension.create(publicKeySpki, false, signer.crypto),
      ],
    },
    signer.crypto,
  );
  return new Uint8Array(certificate.rawData);
}

export interface ImportCaOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  /** The intermediate's certificate, PEM (the first certificate of the text is taken). */
  readonly certificatePem: string;
  /** Its private key, PKCS#8 or traditional PEM, unencrypted. */
  readonly keyPem: string;
  readonly crlUrl: string;
  readonly actor: string;
  readonly now?: Date;
}

/**
 * Imports an existing CA: the certificate must be a CA certificate (basicConstraints cA, key
 * usage keyCertSign and cRLSign when key usage is present), valid now, and match the key.
 */
export async function importCa(options: ImportCaOptions): Promise<CaInfo> {
  const { storage, kek } = options;
  await refuseSecondCa(storage);
  const crlUrl = checkCrlUrl(options.crlUrl);
  let cert: NodeX509;
  let privateKey: KeyObject;
  try {
    cert = new NodeX509(options.certificatePem);
  } catch {
    throw new CaError('ERR_CA_INVALID', 'the certificate file holds no PEM certificate');
  }
  try {
    privateKey = createPrivateKey(options.keyPem);
  } catch {
    throw new CaError('ERR_CA_INVALID', 'the key file holds no unencrypted PEM private key');
  }
  if (!cert.ca)
    throw new CaError('ERR_CA_INVALID', 'the certificate is not a CA certificate (basicConstraints cA)');
  if (!cert.checkPrivateKey(privateKey))
    throw new CaError('ERR_CA_INVALID', 'the key does not match the certificate');
  const now = options.now ?? new Date();
  if (new Date(cert.validFrom) > now || new Date(cert.validTo) <= now)
    throw new CaError('ERR_CA_INVALID', 'the certificate is not valid now', { validTo: cert.validTo });
  const parsed = new X509Certificate(cert.raw);
  const ku = parsed.getExtension(KeyUsagesExtension);
  if (ku && (!(ku.usages & KeyUsageFlags.keyCertSign) || !(ku.usages & KeyUsageFlags.cRLSign)))
    throw new CaError('ERR_CA_INVALID', 'the certificate may not sign certificates and CRLs (key usage)');
  let algorithm: KeyAlgorithm;
  try {
    algorithm = keyAlgorithmOf(createPublicKey(privateKey));
  } catch {
    throw new CaError('ERR_CA_INVALID', 'the key is not RSA 2048/3072 or EC P-256/P-384');
  }
  await store(storage, kek, {
    certificate: new Uint8Array(cert.raw),
    privateKey,
    origin: 'imported',
    crlUrl,
    actor: options.actor,
    algorithm,
  });
  return showCa(storage);
}

/** The CA as the administrator sees it; ERR_CA_MISSING when there is none. */
export async function showCa(storage: Storage, id = DEFAULT_CA_ID): Promise<CaInfo> {
  const record = await findIssuingCa(storage, id);
  if (!record) throw missing();
  const cert = new X509Certificate(record.certificate);
  const counts = await countIssuedCertificates(storage, id);
  return {
    id: record.id,
    origin: record.origin,
    ...('token' in record.key
      ? { keyStore: 'pkcs11', keyLabel: record.key.token.label }
      : { keyStore: 'sealed' }),
    subject: cert.subject,
    algorithm: keyAlgorithmOf(
      createPublicKey({ key: Buffer.from(cert.publicKey.rawData), format: 'der', type: 'spki' }),
    ),
    notBefore: cert.notBefore.toISOString(),
    notAfter: cert.notAfter.toISOString(),
    fingerprint: createHash('sha256').update(record.certificate).digest('hex'),
    crlUrl: record.crlUrl,
    crlNumber: record.crlNumber,
    issued: counts.issued,
    revoked: counts.revoked,
    certificatePem: cert.toString('pem'),
  };
}

/**
 * Opens the CA: unseals its key into a signer, or, when the key is in the PKCS#11 token, a signer
 * that signs there. ERR_CA_MISSING when there is none.
 */
export async function openIssuingCa(
  storage: Storage,
  kek: KekProvider,
  id = DEFAULT_CA_ID,
): Promise<IssuingCa> {
  const record = await findIssuingCa(storage, id);
  if (!record) throw missing();
  const certificate = new X509Certificate(record.certificate);
  if ('token' in record.key) {
    const publicKey = createPublicKey({
      key: Buffer.from(certificate.publicKey.rawData),
      format: 'der',
      type: 'spki',
    });
    return {
      record,
      certificate,
      signer: tokenSigningKey(tokenKeysOf(kek, true), record.key.token, publicKey),
    };
  }
  const pkcs8 = await unsealSecret(kek, record.key.sealed, caKeyLocation(id));
  try {
    const privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    return { record, certificate, signer: signerFor(privateKey) };
  } finally {
    pkcs8.fill(0);
  }
}

/** A CA certificate's PEM (what relying parties are given to trust). */
export function caCertificatePem(der: Uint8Array): string {
  return PemConverter.encode(Uint8Array.from(der), 'CERTIFICATE');
}

async function store(
  storage: Storage,
  kek: KekProvider,
  ca: {
    certificate: Uint8Array;
    privateKey: KeyObject;
    origin: IssuingCaOrigin;
    crlUrl: string;
    actor: string;
    algorithm?: KeyAlgorithm;
  },
): Promise<void> {
  const pkcs8 = ca.privateKey.export({ type: 'pkcs8', format: 'der' });
  try {
    const sealed = await sealSecret(kek, pkcs8, caKeyLocation(DEFAULT_CA_ID), CA_KEY_VERSION);
    await insertCa(storage, { ...ca, key: { sealed } });
  } finally {
    pkcs8.fill(0);
  }
}

/** Stores the CA row and audits it, in one transaction; ERR_CA_EXISTS when another came first. */
async function insertCa(
  storage: Storage,
  ca: { certificate: Uint8Array; key: CaKeyPlace; origin: IssuingCaOrigin; crlUrl: string; actor: string },
): Promise<void> {
  await storage.transaction(async (tx) => {
    if (await findIssuingCa(tx, DEFAULT_CA_ID)) throw exists();
    await insertIssuingCa(tx, {
      id: DEFAULT_CA_ID,
      certificate: ca.certificate,
      key: ca.key,
      origin: ca.origin,
      crlUrl: ca.crlUrl,
    });
    await appendAudit(tx, {
      actor: ca.actor,
      eventType: ca.origin === 'generated' ? AUDIT_EVENTS.caCreated : AUDIT_EVENTS.caImported,
      details: {
        caId: DEFAULT_CA_ID,
        certificateSha256: createHash('sha256').update(ca.certificate).digest('hex'),
        crlUrl: ca.crlUrl,
        keyStore: 'token' in ca.key ? 'pkcs11' : 'sealed',
        ...('token' in ca.key ? { keyLabel: ca.key.token.label } : {}),
      },
    });
  });
}

/** The KEK provider's token key store; refuses when the provider has no token. */
function tokenKeysOf(kek: KekProvider, opening = false): TokenKeyStore {
  if (kek.tokenKeys) return kek.tokenKeys;
  throw new CaError(
    'ERR_CA_INVALID',
    opening
      ? "the issuing CA's key is in a PKCS#11 token, and the server's KEK is not (set kek.provider: pkcs11 with that token)"
      : "the CA key can be kept in an HSM only when the server's KEK is in a PKCS#11 token (kek.provider: pkcs11)",
    { kekProvider: kek.kind },
  );
}

function signerFor(privateKey: KeyObject): CardSigningKey {
  const prepared = prepareSigner(privateKey);
  return cardSigningKey(createPublicKey(privateKey), async (input) => prepared.sign(input));
}

async function refuseSecondCa(storage: Storage): Promise<void> {
  if (await findIssuingCa(storage, DEFAULT_CA_ID)) throw exists();
}

function exists(): CaError {
  return new CaError('ERR_CA_EXISTS', 'the card server already has an issuing CA', { caId: DEFAULT_CA_ID });
}

function missing(): CaError {
  return new CaError(
    'ERR_CA_MISSING',
    "the card server has no issuing CA: run 'cardlink admin ca init' or 'ca import'",
  );
}

/** An http or https URL (RFC 5280 section 4.2.1.13: relying parties fetch the CRL from it). */
function checkCrlUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new CaError('ERR_CA_INVALID', 'the CRL URL is not a URL');
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.username || url.password || url.hash)
    throw new CaError('ERR_CA_INVALID', 'the CRL URL must be http(s) without credentials or fragment');
  return url.href;
}

function hasControl(value: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /[\u0000-\u001f\u007f]/.test(value);
}

function wholeSeconds(date: Date): Date {
  return new Date(Math.floor(date.getTime() / 1000) * 1000);
}
