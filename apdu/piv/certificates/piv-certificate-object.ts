import { concatBytes, encodeTlv, findTlv, parseTlvList } from '../../codec/ber-tlv.js';
import { KEY_REF, isRetiredSlot } from '../constants.js';
import { CardStateError } from '../crypto/errors.js';
import { OBJECT_TAG, retiredCertificateTag } from '../objects/catalogue.js';

/**
 * The PIV certificate data objects (SP 800-73-4 Part 1 Appendix A, the X.509 certificate containers):
 * `70` certificate DER, `71` CertInfo (00 = not compressed), `FE` error detection code (empty).
 * The value here is the content of tag 53, as DataObjectStore keeps it.
 */

/** SP 800-73-4 Part 1 Appendix A: tags inside a certificate object. */
export const CERT_OBJECT_TAG = { certificate: 0x70, certInfo: 0x71, errorDetectionCode: 0xfe } as const;
/** CertInfo byte for an uncompressed certificate (SP 800-73-4 Part 1 Appendix A, note on 0x71). */
export const CERT_INFO_UNCOMPRESSED = 0x00;

/** SP 800-73-4 Part 1 Table 3: certificate object of each key slot. */
const STANDARD_CERT_OBJECTS: ReadonlyMap<number, number> = new Map([
  [KEY_REF.PIV_AUTHENTICATION, OBJECT_TAG.CERT_PIV_AUTHENTICATION],
  [KEY_REF.DIGITAL_SIGNATURE, OBJECT_TAG.CERT_DIGITAL_SIGNATURE],
  [KEY_REF.KEY_MANAGEMENT, OBJECT_TAG.CERT_KEY_MANAGEMENT],
  [KEY_REF.CARD_AUTHENTICATION, OBJECT_TAG.CERT_CARD_AUTHENTICATION],
]);

/** The data object tag holding the certificate of `slot`; undefined for a slot with none. */
export function certificateObjectTag(slot: number): number | undefined {
  const standard = STANDARD_CERT_OBJECTS.get(slot);
  if (standard !== undefined) return standard;
  // Retired key management slots 82..95 map to objects 5FC10D..5FC120.
  if (isRetiredSlot(slot)) return retiredCertificateTag(slot - KEY_REF.RETIRED_FIRST);
  return undefined;
}

/** `70 len <cert DER> 71 01 00 FE 00`. */
export function encodeCertificateObject(certificateDer: Uint8Array): Uint8Array {
  return concatBytes([
    encodeTlv(CERT_OBJECT_TAG.certificate, certificateDer),
    encodeTlv(CERT_OBJECT_TAG.certInfo, Uint8Array.of(CERT_INFO_UNCOMPRESSED)),
    encodeTlv(CERT_OBJECT_TAG.errorDetectionCode, new Uint8Array(0)),
  ]);
}

/** The certificate DER inside a certificate object; refuses compressed or malformed objects. */
export function decodeCertificateObject(value: Uint8Array): Uint8Array {
  const list = parseTlvList(value);
  const cert = findTlv(list, CERT_OBJECT_TAG.certificate);
  if (!cert || cert.value.length === 0) {
    throw new CardStateError('OBJECT_INVALID', 'certificate object without a certificate');
  }
  const info = findTlv(list, CERT_OBJECT_TAG.certInfo);
  if (info && info.value.length > 0 && info.value[0] !== CERT_INFO_UNCOMPRESSED) {
    throw new CardStateError('OBJECT_INVALID', 'compressed certificates are not supported');
  }
  return new Uint8Array(cert.value); // a copy, also when the input is a Buffer (whose slice is a view)
}
