/**
 * Key archival of key management (9D) keys (docs/personalization.md, "Key archival and
 * recovery"). When a card's profile has `archiveKeyManagementKey`, every 9D key the server makes
 * or certifies (create-card, enroll, renew) is archived: its PKCS#8 in a CMS EnvelopedData for
 * the recovery certificate (key-envelope.ts), stored in the SAME transaction as the key, so a
 * card never holds a 9D key its organisation cannot recover. The envelope is built before the
 * transaction (it is CPU work), the row is written inside it.
 *
 * Only 9D: decryption keys are what an organisation must be able to recover (old mail); signing
 * and authentication keys are never archived, so nobody else can ever sign as the user.
 */
import { createHash } from 'node:crypto';
import { X509Certificate } from '../../apdu/piv/certificates/index.js';
import { KEY_REF } from '../../apdu/piv/index.js';
import { normaliseSerial } from '../ca/issue-certificate.js';
import { putArchivedKey, type Tx } from '../storage/index.js';
import { envelopeFor } from './key-envelope.js';
import { loadRecoveryCertificate, type RecoveryCertificate } from './recovery-certificate.js';

/** The only slot whose keys are archived. */
export const ARCHIVED_SLOT = KEY_REF.KEY_MANAGEMENT;

/** An archive ready to be stored: no key in it, only the envelope the server cannot open. */
export interface PreparedArchive {
  readonly slot: number;
  readonly publicKeySha256: string;
  readonly certificateSerial?: string;
  readonly certificateSha256?: string;
  readonly recipientSha256: string;
  readonly envelope: Uint8Array;
}

/**
 * The recovery certificate when the profile requires archival and the run makes or certifies a
 * 9D key, else undefined. Called BEFORE any key is made or certificate issued, so a missing or
 * unusable certificate refuses the whole operation with nothing written (ERR_KEY_ARCHIVAL).
 */
export async function recoveryCertificateFor(
  required: boolean,
  slots: readonly number[],
  file: string | undefined,
  now?: Date,
): Promise<RecoveryCertificate | undefined> {
  if (!required || !slots.includes(ARCHIVED_SLOT)) return undefined;
  return loadRecoveryCertificate(file, now);
}

export function prepareArchive(
  recipient: RecoveryCertificate,
  key: {
    readonly slot: number;
    readonly pkcs8: Uint8Array;
    readonly publicKeySpki: Uint8Array;
    readonly certificate?: Uint8Array | undefined;
  },
): PreparedArchive {
  const certificate = key.certificate;
  return {
    slot: key.slot,
    publicKeySha256: publicKeySha256(key.publicKeySpki),
    ...(certificate
      ? {
          certificateSerial: normaliseSerial(new X509Certificate(certificate).serialNumber),
          certificateSha256: createHash('sha256').update(certificate).digest('hex'),
        }
      : {}),
    recipientSha256: recipient.sha256,
    envelope: envelopeFor(recipient, key.pkcs8),
  };
}

/** Stores the archive inside `tx`, the transaction that stores the key. */
export function storeArchive(tx: Tx, cardId: string, archive: PreparedArchive): Promise<string> {
  return putArchivedKey(tx, { cardId, ...archive });
}

/** SHA-256 of a SubjectPublicKeyInfo, hex: how an archive finds its key after renewal moves it. */
export function publicKeySha256(spki: Uint8Array): string {
  return createHash('sha256').update(spki).digest('hex');
}
