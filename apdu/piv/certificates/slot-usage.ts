import type { KeyAlgorithm } from '../card-state.js';
import { KEY_REF, isRetiredSlot } from '../constants.js';
import { isEcAlgorithm } from '../crypto/key-algorithms.js';
import { KEY_USAGE, keyUsageForSlot } from './self-signed.js';

/**
 * What a CA-issued certificate of each PIV slot is for: the extended key usages relying parties
 * look for, by slot role (SP 800-73-4 Part 1 section 3.1). Card profiles may override them per
 * slot (server/admin/profile.ts); these are the defaults of docs/personalization.md.
 */

/** Extended key usage OIDs a card certificate carries. */
export const EXTENDED_KEY_USAGE = {
  /** RFC 5280 section 4.2.1.12, id-kp-clientAuth: TLS client authentication. */
  clientAuth: '1.3.6.1.5.5.7.3.2',
  /** RFC 5280 section 4.2.1.12, id-kp-emailProtection: S/MIME. */
  emailProtection: '1.3.6.1.5.5.7.3.4',
  /** Microsoft szOID_KP_SMARTCARD_LOGON: Windows smart-card logon (with the UPN SAN). */
  smartcardLogon: '1.3.6.1.4.1.311.20.2.2',
  /** FIPS 201-3 / SP 800-78, id-PIV-cardAuth: the card authentication certificate (9E). */
  pivCardAuth: '2.16.840.1.101.3.6.8',
  /** RFC 4556 section 3.2.2, id-pkinit-KPClientAuth: Kerberos PKINIT client. */
  pkinitClientAuth: '1.3.6.1.5.2.3.4',
} as const;
export type ExtendedKeyUsageName = keyof typeof EXTENDED_KEY_USAGE;

/** Microsoft's User Principal Name otherName (szOID_NT_PRINCIPAL_NAME) in subjectAltName. */
export const UPN_OTHER_NAME_OID = '1.3.6.1.4.1.311.20.2.3';

/** KeyUsage bit names a template may list (RFC 5280 section 4.2.1.3); keyCertSign/cRLSign are the CA's. */
export const KEY_USAGE_NAMES = Object.keys(KEY_USAGE) as (keyof typeof KEY_USAGE)[];
export type KeyUsageName = keyof typeof KEY_USAGE;

/** The SANs a slot's certificate carries by default, by claim. */
export type SanKind = 'email' | 'upn';

export interface SlotCertificateUsage {
  readonly keyUsage: readonly KeyUsageName[];
  readonly extendedKeyUsage: readonly ExtendedKeyUsageName[];
  readonly san: readonly SanKind[];
}

/**
 * Default usages by slot: 9A PIV authentication (TLS client, Windows logon: UPN + email),
 * 9C digital signature (S/MIME signing), 9D key management (S/MIME encryption; keyAgreement for
 * EC keys), 9E card authentication (no person's name: the card's serial only), retired slots
 * like 9D.
 */
export function defaultSlotUsage(slot: number, algorithm: KeyAlgorithm): SlotCertificateUsage {
  const keyUsage = keyUsageForSlot(slot, algorithm).map((bit) =>
    KEY_USAGE_NAMES.find((name) => KEY_USAGE[name] === bit)!,
  );
  if (slot === KEY_REF.PIV_AUTHENTICATION)
    return { keyUsage, extendedKeyUsage: ['clientAuth', 'smartcardLogon'], san: ['email', 'upn'] };
  if (slot === KEY_REF.DIGITAL_SIGNATURE)
    return { keyUsage, extendedKeyUsage: ['emailProtection'], san: ['email'] };
  if (slot === KEY_REF.KEY_MANAGEMENT || isRetiredSlot(slot))
    return {
      keyUsage: [isEcAlgorithm(algorithm) ? 'keyAgreement' : 'keyEncipherment'],
      extendedKeyUsage: ['emailProtection'],
      san: ['email'],
    };
  return { keyUsage, extendedKeyUsage: ['pivCardAuth'], san: [] };
}
