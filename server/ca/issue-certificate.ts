/**
 * Issuing one card certificate from a certificate request (PKCS#10) and a slot's template
 * (server/admin/certificate-template.ts). The request must carry a valid signature by the key it
 * names (proof of possession: whoever asks holds the private key); the certificate gets the
 * template's subject, SANs, key usage and extended key usage, the CA's key identifier and CRL
 * distribution point, and is checked against the CA's key before it is returned.
 */
import { createHash, createPublicKey, X509Certificate as NodeX509 } from 'node:crypto';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  CRLDistributionPointsExtension,
  ExtendedKeyUsageExtension,
  KEY_USAGE,
  KeyUsagesExtension,
  Name,
  randomSerialNumber,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
  type Extension,
  type Pkcs10CertificateRequest,
} from '../../apdu/piv/certificates/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import {
  fillTemplate,
  type Claims,
  type ResolvedTemplate,
  type SubjectAttribute,
} from '../admin/certificate-template.js';
import type { IssuingCa } from './issuing-ca.js';

/** RFC 5280 section 4.1.2.5: notBefore is set this far in the past against clock skew between hosts. */
export const CERTIFICATE_BACKDATE_SECONDS = 60;

/** A certificate could not be issued: bad request signature, a missing claim, or a failed check. */
export class EnrollmentError extends CardlinkError {
  constructor(message: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_ENROLLMENT', message, context);
    this.name = 'EnrollmentError';
  }
}

export interface IssueRequest {
  readonly request: Pkcs10CertificateRequest;
  readonly template: ResolvedTemplate;
  readonly claims: Claims;
  /** The card's serial, added to the subject as serialNumber (2.5.4.5). */
  readonly cardSerial: number;
  /** For messages: the slot the certificate is for. */
  readonly slot: number;
  readonly now?: Date;
}

export interface IssuedCertificate {
  readonly der: Uint8Array;
  /** Lower-case hex, as the register stores it. */
  readonly serial: string;
  readonly subject: string;
  readonly notAfter: Date;
}

/** Attribute value types (RFC 5280 Appendix A: emailAddress and DC are IA5String, C PrintableString). */
const ATTRIBUTE_STRING: Record<SubjectAttribute, 'utf8String' | 'ia5String' | 'printableString'> = {
  CN: 'utf8String',
  O: 'utf8String',
  OU: 'utf8String',
  L: 'utf8String',
  ST: 'utf8String',
  C: 'printableString',
  DC: 'ia5String',
  E: 'ia5String',
};
/** id-at-serialNumber, X.520. */
const SERIAL_NUMBER_ATTRIBUTE = '2.5.4.5';

export async function issueCertificate(ca: IssuingCa, req: IssueRequest): Promise<IssuedCertificate> {
  const slotHex = req.slot.toString(16).toUpperCase();
  if (!(await req.request.verify()))
    throw new EnrollmentError('the certificate request is not signed by its own key', { slot: slotHex });
  const { subject, sans } = templateNames(req.template, req.claims, req.cardSerial, req.slot);

  const now = req.now ?? new Date();
  const notBefore = new Date(Math.floor(now.getTime() / 1000 - CERTIFICATE_BACKDATE_SECONDS) * 1000);
  const ca509 = ca.certificate;
  // Never beyond the CA certificate (RFC 5280 path validation would refuse the rest of its life).
  const notAfter = new Date(
    Math.min(notBefore.getTime() + req.template.validityDays * 86_400_000, ca509.notAfter.getTime()),
  );
  if (notAfter <= now) throw new EnrollmentError('the CA certificate has expired', { slot: slotHex });

  const spki = new Uint8Array(req.request.publicKey.rawData);
  const signer = ca.signer;
  const caSki = ca509.getExtension(SubjectKeyIdentifierExtension);
  const extensions: Extension[] = [
    new BasicConstraintsExtension(false, undefined, true),
    ...templateUsageExtensions(req.template),
    await SubjectKeyIdentifierExtension.create(spki, false, signer.crypto),
    caSki
      ? new AuthorityKeyIdentifierExtension(caSki.keyId)
      : await AuthorityKeyIdentifierExtension.create(ca509, false, signer.crypto),
    new CRLDistributionPointsExtension([ca.record.crlUrl]),
  ];
  // A subject of only serialNumber would be empty for a relying party that reads CN: SANs then carry the name.
  if (sans.length > 0) extensions.push(new SubjectAlternativeNameExtension(sans));

  const serial = randomSerialNumber();
  const certificate = await X509CertificateGenerator.create(
    {
      serialNumber: serial,
      subject,
      issuer: ca509.subjectName,
      notBefore,
      notAfter,
      publicKey: spki,
      signingKey: signer.keys.privateKey,
      signingAlgorithm: signer.signingAlgorithm,
      extensions,
    },
    signer.crypto,
  );
  const der = new Uint8Array(certificate.rawData);
  const caKey = createPublicKey({ key: Buffer.from(ca509.publicKey.rawData), format: 'der', type: 'spki' });
  if (!new NodeX509(der).verify(caKey))
    throw new EnrollmentError('the issued certificate does not verify with the CA key', { slot: slotHex });
  return {
    der,
    serial: normaliseSerial(serial),
    subject: certificate.subject,
    notAfter,
  };
}

/**
 * The subject (template RDNs filled with the claims, then serialNumber = the card serial) and the
 * SANs of a slot's certificate. A subject claim that is missing throws; a SAN's is left out.
 */
export function templateNames(
  template: ResolvedTemplate,
  userClaims: Claims,
  cardSerial: number,
  slot: number,
): { subject: Name; sans: { type: 'email' | 'upn'; value: string }[] } {
  const slotHex = slot.toString(16).toUpperCase();
  const claims: Claims = { ...userClaims, serial: String(cardSerial) };
  const rdns: Record<string, { [k: string]: string }[]>[] = [];
  for (const { attribute, value } of template.subject) {
    const filled = fillTemplate(value, claims);
    if (filled === undefined || filled.length === 0)
      throw new EnrollmentError(`a claim the subject's ${attribute} names is missing`, {
        slot: slotHex,
        attribute,
      });
    rdns.push({ [attribute]: [{ [ATTRIBUTE_STRING[attribute]]: filled }] });
  }
  rdns.push({ [SERIAL_NUMBER_ATTRIBUTE]: [{ printableString: String(cardSerial) }] });
  const sans: { type: 'email' | 'upn'; value: string }[] = [];
  for (const kind of ['email', 'upn'] as const) {
    const pattern = template.san[kind];
    if (pattern === undefined) continue;
    const value = fillTemplate(pattern, claims);
    if (value !== undefined && value.length > 0) sans.push({ type: kind, value });
  }
  return { subject: new Name(rdns), sans };
}

/** Key usage (critical) and extended key usage of the template. */
export function templateUsageExtensions(template: ResolvedTemplate): Extension[] {
  return [
    new KeyUsagesExtension(
      template.keyUsage.reduce((flags, name) => flags | (1 << KEY_USAGE[name]), 0),
      true,
    ),
    new ExtendedKeyUsageExtension([...template.extendedKeyUsage]),
  ];
}

/** Serial hex as OpenSSL and CRL entries show it: lower case, no leading zero bytes. */
export function normaliseSerial(hex: string): string {
  return hex.toLowerCase().replace(/^(00)+(?=..)/, '');
}

/** SHA-256 of DER, hex (audit details name certificates by it). */
export function certificateSha256(der: Uint8Array): string {
  return createHash('sha256').update(der).digest('hex');
}
