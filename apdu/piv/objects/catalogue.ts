/**
 * The PIV data objects (containers) a card answers GET DATA and PUT DATA for, with their read
 * access rule. SP 800-73-4 Part 1 Table 3 ("Object identifiers of the PIV data objects") and
 * Part 1 Appendix A (access rules); one Yubico extension object.
 *
 * Writing any container needs the management key (SP 800-73-4 Part 1 Table 3: "PIV Card
 * Application Administrator" for every container).
 */

/** Who may read a container. */
export type ReadAccess = 'always' | 'pin';

/**
 * How the value travels: most objects as `53 len value`; the Discovery object (`7E`) and the
 * BIT group template (`7F61`) as their own tag (SP 800-73-4 Part 1 Table 3, note on 7E/7F61).
 */
export type ObjectEnvelope = 0x53 | 0x7e | 0x7f61;

export interface DataObjectSpec {
  readonly tag: number;
  readonly name: string;
  readonly read: ReadAccess;
  readonly envelope: ObjectEnvelope;
}

/** SP 800-73-4 Part 1 Table 3 tags, by name. */
export const OBJECT_TAG = {
  CARD_CAPABILITY_CONTAINER: 0x5fc107,
  CHUID: 0x5fc102,
  CERT_PIV_AUTHENTICATION: 0x5fc105,
  CARDHOLDER_FINGERPRINTS: 0x5fc103,
  SECURITY_OBJECT: 0x5fc106,
  CARDHOLDER_FACIAL_IMAGE: 0x5fc108,
  CERT_CARD_AUTHENTICATION: 0x5fc101,
  CERT_DIGITAL_SIGNATURE: 0x5fc10a,
  CERT_KEY_MANAGEMENT: 0x5fc10b,
  PRINTED_INFORMATION: 0x5fc109,
  DISCOVERY: 0x7e,
  KEY_HISTORY: 0x5fc10c,
  /** Retired X.509 Certificate for Key Management 1 (slot 82) .. 20 (slot 95): 5FC10D..5FC120. */
  RETIRED_CERT_FIRST: 0x5fc10d,
  RETIRED_CERT_LAST: 0x5fc120,
  CARDHOLDER_IRIS_IMAGES: 0x5fc121,
  BIOMETRIC_INFORMATION_TEMPLATES_GROUP: 0x7f61,
  SECURE_MESSAGING_CERT_SIGNER: 0x5fc122,
  PAIRING_CODE_REFERENCE_DATA: 0x5fc123,
  /** Yubico extension: "admin data" (yubico-piv-tool keeps PIN-protected management key flags here). */
  YK_ADMIN_DATA: 0x5fff00,
} as const;

const standard = (tag: number, name: string, read: ReadAccess = 'always'): DataObjectSpec => ({
  tag,
  name,
  read,
  envelope: 0x53,
});

const SPECS: readonly DataObjectSpec[] = Object.freeze([
  standard(OBJECT_TAG.CARD_CAPABILITY_CONTAINER, 'Card Capability Container'),
  standard(OBJECT_TAG.CHUID, 'Card Holder Unique Identifier'),
  standard(OBJECT_TAG.CERT_PIV_AUTHENTICATION, 'X.509 Certificate for PIV Authentication'),
  standard(OBJECT_TAG.CARDHOLDER_FINGERPRINTS, 'Cardholder Fingerprints', 'pin'),
  standard(OBJECT_TAG.SECURITY_OBJECT, 'Security Object'),
  standard(OBJECT_TAG.CARDHOLDER_FACIAL_IMAGE, 'Cardholder Facial Image', 'pin'),
  standard(OBJECT_TAG.CERT_CARD_AUTHENTICATION, 'X.509 Certificate for Card Authentication'),
  standard(OBJECT_TAG.CERT_DIGITAL_SIGNATURE, 'X.509 Certificate for Digital Signature'),
  standard(OBJECT_TAG.CERT_KEY_MANAGEMENT, 'X.509 Certificate for Key Management'),
  standard(OBJECT_TAG.PRINTED_INFORMATION, 'Printed Information', 'pin'),
  { tag: OBJECT_TAG.DISCOVERY, name: 'Discovery Object', read: 'always', envelope: 0x7e },
  standard(OBJECT_TAG.KEY_HISTORY, 'Key History Object'),
  ...Array.from({ length: OBJECT_TAG.RETIRED_CERT_LAST - OBJECT_TAG.RETIRED_CERT_FIRST + 1 }, (_, i) =>
    standard(OBJECT_TAG.RETIRED_CERT_FIRST + i, `Retired X.509 Certificate for Key Management ${i + 1}`),
  ),
  standard(OBJECT_TAG.CARDHOLDER_IRIS_IMAGES, 'Cardholder Iris Images', 'pin'),
  {
    tag: OBJECT_TAG.BIOMETRIC_INFORMATION_TEMPLATES_GROUP,
    name: 'Biometric Information Templates Group Template',
    read: 'always',
    envelope: 0x7f61,
  },
  standard(OBJECT_TAG.SECURE_MESSAGING_CERT_SIGNER, 'Secure Messaging Certificate Signer'),
  standard(OBJECT_TAG.PAIRING_CODE_REFERENCE_DATA, 'Pairing Code Reference Data Container', 'pin'),
  standard(OBJECT_TAG.YK_ADMIN_DATA, 'Yubico Admin Data'),
]);

const BY_TAG: ReadonlyMap<number, DataObjectSpec> = new Map(SPECS.map((s) => [s.tag, s]));

/** Every container the card knows, in SP 800-73-4 Table 3 order. */
export const DATA_OBJECTS: readonly DataObjectSpec[] = SPECS;

/** The container with `tag`, or undefined when PIV defines none. */
export function dataObjectSpec(tag: number): DataObjectSpec | undefined {
  return BY_TAG.get(tag);
}

/**
 * Largest value (the content of 53 / 7E / 7F61) PUT DATA stores. SP 800-73-4 Part 1 Appendix A
 * caps the largest container (facial image) at 12704 bytes; this leaves room for its envelope and
 * also holds RSA-3072 certificates (about 1.5 KB, over SP 800-73-4's 1905-byte certificate
 * container estimate made for RSA-2048), and it fits one command chain (16 KiB).
 */
export const MAX_DATA_OBJECT_VALUE_BYTES = 12_710;

/** The retired certificate container of retired key `index` (0 = slot 82). */
export function retiredCertificateTag(index: number): number {
  return OBJECT_TAG.RETIRED_CERT_FIRST + index;
}

/** True for 5FC10D..5FC120. */
export function isRetiredCertificateTag(tag: number): boolean {
  return tag >= OBJECT_TAG.RETIRED_CERT_FIRST && tag <= OBJECT_TAG.RETIRED_CERT_LAST;
}
