/**
 * `cardlink admin import-p12`: an existing key and its certificate, from a PKCS#12 file, into one
 * slot of a card (docs/personalization.md, "Import a PKCS#12"). The usual reason is a key made
 * elsewhere that must keep working: an S/MIME decryption key whose old mail must still open
 * (into 9D, or a retired slot 82..95), or a certificate from a CA cardlink does not drive.
 *
 * Before any transaction: when the card's profile has `archiveKeyManagementKey` and the slot is 9D,
 * the recovery certificate is loaded (a missing or unusable one refuses the import with nothing
 * written, ERR_KEY_ARCHIVAL, as at enrollment); the file is read (server/ca/pkcs12.ts: MAC,
 * decryption; a file without a MAC only when `allowNoMac`), it must hold
 * exactly one private key, of an algorithm the card advertises, and a certificate for that key
 * (same public key; a signature made with the key verifies with the certificate). Other
 * certificates (a CA chain) are counted and left out: a PIV slot holds one certificate.
 *
 * Then ONE transaction, as at enrollment (enroll.ts): the card is fenced for a change
 * (`lockCardForChange`: a session holding the card reloads it and pushes CARD_CHANGED, so the
 * reader shows the new certificate at once), the key is sealed under the KEK for this slot like
 * every card key, the certificate goes into the slot's PIV certificate object, a CA certificate
 * the slot had from the embedded CA is revoked as superseded (its key is gone), a retired slot
 * updates the Key History object, archives that named the slot's previous key are detached (slot
 * null: "replaced"), a 9D key is archived when the profile requires it (server/archival/), and the
 * audit entry names the slot and the certificate (serial, subject, issuer, SHA-256), never key
 * material. The imported certificate is not registered at the embedded CA: it did not issue it.
 * Any failure leaves the card as it was.
 *
 * After the commit, a CRL is signed when a certificate was revoked. Its failure (HSM busy, KEK
 * error) does not fail the import, which happened: it is returned as `crlError`, and
 * `cardlink admin ca crl` signs the CRL later. Failing would invite a retry that imports again.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign,
  verify,
  type KeyObject,
} from 'node:crypto';
import {
  certificateObjectTag,
  encodeCertificateObject,
  X509Certificate,
} from '../../apdu/piv/certificates/index.js';
import { CardStateError, CURVES, isEcAlgorithm, keyAlgorithmOf } from '../../apdu/piv/crypto/index.js';
import {
  ADVERTISED_ALGORITHMS,
  defaultPinPolicy,
  isKeySlot,
  isRetiredSlot,
  KEY_REF,
  MAX_DATA_OBJECT_BYTES,
  type KeyAlgorithm,
} from '../../apdu/piv/index.js';
import {
  encodeKeyHistory,
  keyHistoryOnCardCount,
  OBJECT_TAG,
  retiredCertificateTag,
} from '../../apdu/piv/objects/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import {
  ARCHIVED_SLOT,
  prepareArchive,
  publicKeySha256,
  recoveryCertificateFor,
  storeArchive,
} from '../archival/key-archive.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { issueCrlAfterCommit, type CrlError } from '../ca/crl.js';
import { certificateSha256 } from '../ca/issue-certificate.js';
import { Pkcs12Error, readPkcs12 } from '../ca/pkcs12.js';
import { STORED_TOUCH_POLICY } from '../cards/key-store.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { sealSecret } from '../keys/sealing.js';
import {
  detachArchivedKeys,
  findCardKey,
  getCard,
  getCardObject,
  listCardKeys,
  lockCardForChange,
  putCardKey,
  putCardObject,
  revokeCardCertificates,
  type FencedCard,
  type Storage,
} from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { parseCardProfile } from './profile.js';

export interface ImportPkcs12Options {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly cardId: string;
  /** 9A, 9C, 9D, 9E or 82..95. */
  readonly slot: number;
  /** The PKCS#12 file, DER. */
  readonly pkcs12: Uint8Array;
  /** Its password (never logged, never in an error). */
  readonly password: string;
  /**
   * Accept a file without a MAC (server/ca/pkcs12.ts ReadPkcs12Options): nothing then checks the
   * password or the file's integrity. Off by default.
   */
  readonly allowNoMac?: boolean;
  /**
   * The recovery certificate file (server setting `keyArchival.recoveryCertificate`): needed when
   * the card's profile has `archiveKeyManagementKey` and the slot is 9D.
   */
  readonly recoveryCertificate?: string | undefined;
  readonly actor?: string;
  /** The clock the recovery certificate's validity is checked against (tests). */
  readonly now?: Date;
}

export interface ImportedPkcs12 {
  readonly cardId: string;
  readonly cardSerial: number;
  readonly slot: number;
  readonly algorithm: KeyAlgorithm;
  /** The imported certificate: serial (lower-case hex), subject, issuer, expiry, SHA-256 (hex). */
  readonly serial: string;
  readonly subject: string;
  readonly issuer: string;
  readonly notAfter: string;
  readonly certificateSha256: string;
  /** Certificates of the file left out (a CA chain). */
  readonly extraCertificates: number;
  /** The slot held a key before (now replaced). */
  readonly replaced: boolean;
  /** Serials of the embedded CA's certificates for the slot, revoked as superseded. */
  readonly revoked: readonly string[];
  /** The CRL signed after that revocation. */
  readonly crlNumber?: number;
  /**
   * Why that CRL could not be signed (the import is committed nonetheless): run
   * `cardlink admin ca crl`. No secret in it (errors carry none).
   */
  readonly crlError?: CrlError;
  /** The file's MAC digest, or `none` (a file without one, taken with `allowNoMac`). */
  readonly mac: string;
  /** SHA-256 of the recovery certificate the imported 9D key was archived for, when it was. */
  readonly keyArchivedFor?: string;
  /** Archives that named the slot's previous key, now detached from the slot (slot null). */
  readonly archivesDetached: number;
  /** keysWithOnCardCerts of the Key History object, when a retired slot was written. */
  readonly keyHistoryOnCard?: number;
}

/** A key and the certificate for it, checked, ready to be written. */
interface Checked {
  readonly pkcs8: Buffer;
  readonly algorithm: KeyAlgorithm;
  readonly publicKeySpki: Uint8Array;
  readonly certificate: Uint8Array;
  readonly parsed: X509Certificate;
  readonly extraCertificates: number;
  readonly mac: string;
  readonly encryption: readonly string[];
}

/** ERR_USAGE for anything but a PIV key slot (9A, 9C, 9D, 9E, 82..95). */
export function checkImportSlot(slot: number): void {
  if (!isKeySlot(slot))
    throw new CardlinkError('ERR_USAGE', 'not a PIV key slot: give 9A, 9C, 9D, 9E or 82..95', {
      slot: Number.isInteger(slot) ? slot : -1,
    });
}

export async function importPkcs12(options: ImportPkcs12Options): Promise<ImportedPkcs12> {
  const { storage, kek, cardId, slot } = options;
  const actor = options.actor ?? DEFAULT_ADMIN_ACTOR;
  checkImportSlot(slot);
  const card = await getCard(storage, cardId);
  const profile = parseCardProfile(card.profile, 'stored');
  const profileSlot = profile.slots.find((s) => s.slot === slot);
  const pinPolicy = profileSlot?.pinPolicy ?? defaultPinPolicy(slot);
  const tag = certificateObjectTag(slot)!;
  // Before the file is read (its key derivations are the costly part) and anything is written:
  // archival required without a usable recovery certificate refuses the import.
  const recovery = await recoveryCertificateFor(
    profile.archiveKeyManagementKey,
    [slot],
    options.recoveryCertificate,
    options.now,
  );

  const checked = checkContents(options.pkcs12, options.password, slot, options.allowNoMac ?? false);
  try {
    // Built outside the transaction (CPU work); stored inside it, with the key.
    const archive =
      recovery && slot === ARCHIVED_SLOT
        ? prepareArchive(recovery, {
            slot,
            pkcs8: checked.pkcs8,
            publicKeySpki: checked.publicKeySpki,
            certificate: checked.certificate,
          })
        : undefined;
    let keyHistoryOnCard: number | undefined;
    const { revoked, replaced, archivesDetached } = await storage.transaction(async (tx) => {
      const fenced = await lockCardForChange(tx, cardId);
      const replaced = (await findCardKey(tx, cardId, slot)) !== undefined;
      // The slot's key is destroyed: a certificate the embedded CA gave for it certifies nothing now.
      const revoked = await revokeCardCertificates(tx, cardId, 'superseded', [slot]);
      const sealed = await sealSecret(
        kek,
        checked.pkcs8,
        { tenantId: fenced.tenantId, cardId, slot },
        fenced.version,
      );
      await putCardKey(fenced, {
        slot,
        algorithm: checked.algorithm,
        publicKeySpki: checked.publicKeySpki,
        key: sealed,
        pinPolicy,
        touchPolicy: STORED_TOUCH_POLICY,
        origin: 'imported',
      });
      await putCardObject(fenced, tag, encodeCertificateObject(checked.certificate));
      // Archives of the key this one replaced (9D, or a retired slot an old 9D key had moved to)
      // no longer name a key on the card: `list-archived-keys` shows them as replaced.
      const archivesDetached = await detachArchivedKeys(
        tx,
        cardId,
        slot,
        publicKeySha256(checked.publicKeySpki),
      );
      if (archive) await storeArchive(tx, cardId, archive);
      if (isRetiredSlot(slot)) keyHistoryOnCard = await rewriteKeyHistory(fenced);
      await appendAudit(tx, {
        actor,
        eventType: AUDIT_EVENTS.pkcs12Imported,
        cardId,
        details: {
          slot: `0x${slot.toString(16)}`,
          algorithm: checked.algorithm,
          pinPolicy,
          serial: checked.parsed.serialNumber.toLowerCase(),
          subject: checked.parsed.subject,
          issuer: checked.parsed.issuer,
          notAfter: checked.parsed.notAfter.toISOString(),
          certificateSha256: certificateSha256(checked.certificate),
          publicKeySha256: createHash('sha256').update(checked.publicKeySpki).digest('hex'),
          extraCertificates: checked.extraCertificates,
          mac: checked.mac,
          encryption: checked.encryption,
          replaced,
          superseded: revoked,
          ...(keyHistoryOnCard !== undefined ? { keyHistoryOnCard } : {}),
          ...(archive ? { keyArchivedFor: archive.recipientSha256 } : {}),
          ...(archivesDetached > 0 ? { archivesDetached } : {}),
        },
      });
      if (revoked.length > 0)
        await appendAudit(tx, {
          actor,
          eventType: AUDIT_EVENTS.certificatesRevoked,
          cardId,
          details: { reason: 'superseded', serials: revoked },
        });
      return { revoked, replaced, archivesDetached };
    });
    const crl = revoked.length > 0 ? await issueCrlAfterCommit({ storage, kek, actor }) : undefined;
    return {
      cardId,
      cardSerial: card.serial,
      slot,
      algorithm: checked.algorithm,
      serial: checked.parsed.serialNumber.toLowerCase(),
      subject: checked.parsed.subject,
      issuer: checked.parsed.issuer,
      notAfter: checked.parsed.notAfter.toISOString(),
      certificateSha256: certificateSha256(checked.certificate),
      extraCertificates: checked.extraCertificates,
      replaced,
      revoked,
      ...(crl?.crlNumber !== undefined ? { crlNumber: crl.crlNumber } : {}),
      ...(crl?.crlError ? { crlError: crl.crlError } : {}),
      mac: checked.mac,
      ...(keyHistoryOnCard !== undefined ? { keyHistoryOnCard } : {}),
      ...(archive ? { keyArchivedFor: archive.recipientSha256 } : {}),
      archivesDetached,
    };
  } finally {
    checked.pkcs8.fill(0);
  }
}

/**
 * Reads the file and picks its one key and the certificate for it; every refusal is a
 * Pkcs12Error. The PKCS#8 bytes of the keys not returned are zeroed here.
 */
function checkContents(der: Uint8Array, password: string, slot: number, allowNoMac: boolean): Checked {
  const contents = readPkcs12(der, password, { allowNoMac });
  const { privateKeys, certificates } = contents;
  try {
    if (privateKeys.length !== 1)
      throw new Pkcs12Error(
        'ERR_PKCS12_INVALID',
        privateKeys.length === 0
          ? 'the PKCS#12 file holds no private key'
          : 'the PKCS#12 file holds more than one private key: export only the one to import',
        { reason: privateKeys.length === 0 ? 'no-key' : 'several-keys', keys: privateKeys.length },
      );
    let privateKey: KeyObject;
    try {
      privateKey = createPrivateKey({ key: privateKeys[0]!, format: 'der', type: 'pkcs8' });
    } catch {
      throw new Pkcs12Error('ERR_PKCS12_INVALID', "the PKCS#12 file's private key cannot be read", {
        reason: 'key-unreadable',
      });
    }
    const algorithm = pivAlgorithmOf(privateKey, slot);
    const publicKeySpki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });

    let match: { der: Uint8Array; parsed: X509Certificate } | undefined;
    for (const der of certificates) {
      let parsed: X509Certificate;
      try {
        parsed = new X509Certificate(der);
      } catch {
        continue; // a certificate we cannot read is not the key's; it is counted with the extras
      }
      if (Buffer.from(parsed.publicKey.rawData).equals(publicKeySpki)) {
        match = { der, parsed };
        break;
      }
    }
    if (!match)
      throw new Pkcs12Error(
        'ERR_PKCS12_INVALID',
        "the PKCS#12 file holds no certificate for its private key (none has the key's public key)",
        { reason: 'no-matching-certificate', certificates: certificates.length },
      );
    provePossession(privateKey, publicKeySpki, algorithm);
    if (encodeCertificateObject(match.der).length > MAX_DATA_OBJECT_BYTES)
      throw new Pkcs12Error(
        'ERR_PKCS12_INVALID',
        'the certificate is too large for a PIV certificate object',
        {
          reason: 'certificate-too-large',
          bytes: match.der.length,
          limit: MAX_DATA_OBJECT_BYTES,
        },
      );
    return {
      pkcs8: privateKeys[0]!,
      algorithm,
      publicKeySpki: new Uint8Array(publicKeySpki),
      certificate: new Uint8Array(match.der),
      parsed: match.parsed,
      extraCertificates: certificates.length - 1,
      mac: contents.mac,
      encryption: contents.encryption,
    };
  } catch (error) {
    for (const key of privateKeys) key.fill(0);
    throw error;
  }
}

/**
 * The key's PIV algorithm (the one definition: apdu/piv/crypto keyAlgorithmOf), which the card must
 * advertise in its SELECT answer; anything else is ERR_PKCS12_UNSUPPORTED naming what it is.
 */
function pivAlgorithmOf(privateKey: KeyObject, slot: number): KeyAlgorithm {
  let algorithm: KeyAlgorithm;
  try {
    algorithm = keyAlgorithmOf(privateKey);
  } catch (error) {
    if (!(error instanceof CardStateError)) throw error;
    const details = privateKey.asymmetricKeyDetails;
    throw new Pkcs12Error(
      'ERR_PKCS12_UNSUPPORTED',
      `a PIV slot cannot hold this key (${error.message}): RSA 2048 or 3072 with exponent 65537, P-256 or P-384`,
      {
        reason: 'key-algorithm',
        keyType: privateKey.asymmetricKeyType ?? 'unknown',
        ...(details?.modulusLength !== undefined ? { bits: details.modulusLength } : {}),
        ...(details?.namedCurve !== undefined ? { curve: details.namedCurve } : {}),
      },
    );
  }
  if (!ADVERTISED_ALGORITHMS.includes(algorithm))
    throw new Pkcs12Error('ERR_PKCS12_UNSUPPORTED', 'the card does not offer this key algorithm', {
      reason: 'key-algorithm',
      algorithm,
      slot: slot.toString(16).toUpperCase(),
    });
  return algorithm;
}

/**
 * A signature by the private key verifies with the certificate's public key: the SPKI match says
 * the public halves agree, this says the private half belongs to them (a PKCS#8 file carries
 * both, and nothing forces them to agree).
 */
function provePossession(privateKey: KeyObject, certificateSpki: Buffer, algorithm: KeyAlgorithm): void {
  const challenge = randomBytes(32);
  const hash = isEcAlgorithm(algorithm) ? CURVES[algorithm].hash : 'sha256';
  const publicKey = createPublicKey({ key: certificateSpki, format: 'der', type: 'spki' });
  const ok = verify(hash, challenge, publicKey, sign(hash, challenge, privateKey));
  if (!ok)
    throw new Pkcs12Error(
      'ERR_PKCS12_INVALID',
      "the private key does not belong to the certificate's public key",
      {
        reason: 'key-mismatch',
      },
    );
}

/**
 * Key History (5FC10C) after a retired slot was written: keysWithOnCardCerts is the position of
 * the highest retired slot holding a key and a certificate (rules in
 * apdu/piv/objects/key-history.ts), as renewal writes it.
 */
async function rewriteKeyHistory(fenced: FencedCard): Promise<number> {
  const { tx, cardId } = fenced;
  const withCertificates: number[] = [];
  for (const { slot } of await listCardKeys(tx, cardId)) {
    if (!isRetiredSlot(slot)) continue;
    const cert = await getCardObject(tx, cardId, retiredCertificateTag(slot - KEY_REF.RETIRED_FIRST));
    if (cert && cert.length > 0) withCertificates.push(slot);
  }
  const onCard = keyHistoryOnCardCount(withCertificates);
  await putCardObject(fenced, OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(onCard));
  return onCard;
}
