/**
 * The recovery certificate (server setting `keyArchival.recoveryCertificate`): the Key Recovery
 * Agent's RSA certificate whose private key is kept offline. Archived keys are encrypted to it
 * (key-envelope.ts), so the card server can archive keys but never recover one by itself.
 *
 * Why a file named in the server's configuration rather than a row in the database: whoever can
 * write the database (but not the server's host) must not be able to swap in a certificate of
 * their own and receive every key archived afterwards. The file is read and checked each time a
 * key is archived, so an expired certificate stops archival (and with it the enrollment of cards
 * that require it) the day it expires, not at the next restart.
 */
import { createHash, X509Certificate as NodeCertificate } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { KeyUsageFlags, KeyUsagesExtension, X509Certificate } from '../../apdu/piv/certificates/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import type { EnvelopeRecipient } from './key-envelope.js';

/** The setting that names the file, as errors name it. */
export const RECOVERY_CERTIFICATE_SETTING = 'keyArchival.recoveryCertificate';
/** Smallest RSA modulus accepted for the recovery key, in bits (NIST SP 800-57 Part 1, 112-bit strength). */
export const MIN_RECOVERY_RSA_BITS = 2048;
/** Largest recovery certificate file read, in bytes. */
export const MAX_RECOVERY_CERTIFICATE_BYTES = 64 * 1024;

/**
 * Archival that cannot happen: the profile requires it and no recovery certificate is configured,
 * or the configured one cannot be used. Nothing was written.
 */
export class KeyArchivalError extends CardlinkError {
  constructor(message: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_KEY_ARCHIVAL', message, { setting: RECOVERY_CERTIFICATE_SETTING, ...context });
    this.name = 'KeyArchivalError';
  }
}

export interface RecoveryCertificate extends EnvelopeRecipient {
  /** SHA-256 of the certificate's DER, hex: recorded with each archive. */
  readonly sha256: string;
  readonly subject: string;
  readonly notAfter: Date;
}

/**
 * Reads and checks the recovery certificate `file` (PEM or DER). `file` undefined means the
 * setting is absent: that is an error here, because it is only called when archival is required.
 */
export async function loadRecoveryCertificate(
  file: string | undefined,
  now: Date = new Date(),
): Promise<RecoveryCertificate> {
  if (file === undefined)
    throw new KeyArchivalError(
      `the card profile requires key archival (archiveKeyManagementKey) but no recovery certificate is configured (set "${RECOVERY_CERTIFICATE_SETTING}" in the server config; docs/server-config.md)`,
    );
  const refuse = (problem: string, context: Record<string, string | number> = {}) =>
    new KeyArchivalError(`${file}: setting "${RECOVERY_CERTIFICATE_SETTING}": ${problem}`, {
      file,
      ...context,
    });
  let bytes: Buffer;
  try {
    const info = await stat(file);
    if (!info.isFile() || info.size > MAX_RECOVERY_CERTIFICATE_BYTES)
      throw refuse('is not a regular file of at most 64 KiB');
    bytes = await readFile(file);
  } catch (error) {
    if (error instanceof KeyArchivalError) throw error;
    throw refuse('cannot be read', { errno: (error as NodeJS.ErrnoException).code ?? 'unknown' });
  }
  let certificate: NodeCertificate;
  try {
    certificate = new NodeCertificate(bytes);
  } catch {
    throw refuse('is not an X.509 certificate (PEM or DER)');
  }
  const publicKey = certificate.publicKey;
  // Plain rsaEncryption only: an RSA-PSS key may not encrypt (RFC 4055 section 1.2).
  if (publicKey.asymmetricKeyType !== 'rsa')
    throw refuse(`must hold an RSA key (it holds ${publicKey.asymmetricKeyType ?? 'an unknown key'})`);
  const bits = publicKey.asymmetricKeyDetails?.modulusLength ?? 0;
  if (bits < MIN_RECOVERY_RSA_BITS)
    throw refuse(`its RSA key must have at least ${MIN_RECOVERY_RSA_BITS} bits (it has ${bits})`, { bits });
  const notBefore = new Date(certificate.validFrom);
  const notAfter = new Date(certificate.validTo);
  if (now < notBefore) throw refuse(`is not valid before ${notBefore.toISOString()}`);
  if (now > notAfter) throw refuse(`expired ${notAfter.toISOString()}`);
  const der = new Uint8Array(certificate.raw);
  // Key usage, when present, must allow key encipherment (RFC 5280 4.2.1.3; RFC 8551 for S/MIME).
  const usage = new X509Certificate(der).getExtension(KeyUsagesExtension);
  if (usage && !(usage.usages & KeyUsageFlags.keyEncipherment))
    throw refuse('its key usage does not allow keyEncipherment');
  return {
    der,
    publicKey,
    sha256: createHash('sha256').update(der).digest('hex'),
    subject: certificate.subject.replace(/\n/g, ', '),
    notAfter,
  };
}
