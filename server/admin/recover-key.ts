/**
 * `cardlink admin recover-key` and `list-archived-keys`: hand out an archived key management key
 * (server/archival/key-archive.ts) for recovery, and list what is archived.
 *
 * What is handed out is the archive as stored: a CMS EnvelopedData that only the recovery agent's
 * offline private key opens (`openssl cms -decrypt`). The card server never sees the key in the
 * clear here and needs no KEK for it; the administrator's part is to choose the archive and state
 * why, which the audit log keeps (`key.recovered`) before the blob leaves the database.
 * Archives of erased cards are still there (docs/security-model.md, "Key archival").
 */
import { CardlinkError } from '../../protocol/errors.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { normaliseSerial } from '../ca/issue-certificate.js';
import { listArchivedKeys, type ArchivedKeyRecord, type Storage } from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';

/** Longest recovery reason kept in the audit log, in characters. */
export const MAX_RECOVERY_REASON_LENGTH = 1024;
/** Longest card id accepted (card ids are UUIDs; an erased card's id is still looked up). */
const MAX_CARD_ID_LENGTH = 128;

/** An archive as the administrator sees it (no envelope). */
export interface ArchivedKeySummary {
  readonly archiveId: string;
  readonly cardId: string;
  /** 0x9D, or the retired slot the key moved to at renewal; absent when a later enrollment replaced it. */
  readonly slot?: number;
  readonly certificateSerial?: string;
  readonly certificateSha256?: string;
  readonly publicKeySha256: string;
  /** SHA-256 of the recovery certificate the envelope is encrypted to. */
  readonly recipientSha256: string;
  readonly archivedAt: string;
}

export interface RecoveredKey extends ArchivedKeySummary {
  /** ContentInfo(EnvelopedData), DER: what the recovery agent decrypts. */
  readonly envelope: Uint8Array;
}

export class ArchivedKeyNotFoundError extends CardlinkError {
  constructor(cardId: string, serial?: string) {
    super(
      'ERR_ARCHIVED_KEY_NOT_FOUND',
      serial === undefined
        ? 'the card has no archived key'
        : 'the card has no archived key with this certificate serial or archive id',
      { cardId, ...(serial !== undefined ? { serial } : {}) },
    );
    this.name = 'ArchivedKeyNotFoundError';
  }
}

function summary(r: ArchivedKeyRecord): ArchivedKeySummary {
  return {
    archiveId: r.id,
    cardId: r.cardId,
    ...(r.slot !== undefined ? { slot: r.slot } : {}),
    ...(r.certificateSerial !== undefined ? { certificateSerial: r.certificateSerial } : {}),
    ...(r.certificateSha256 !== undefined ? { certificateSha256: r.certificateSha256 } : {}),
    publicKeySha256: r.publicKeySha256,
    recipientSha256: r.recipientSha256,
    archivedAt: r.createdAt,
  };
}

function checkCardId(cardId: string): string {
  if (typeof cardId !== 'string' || cardId.length === 0 || cardId.length > MAX_CARD_ID_LENGTH)
    throw new CardlinkError('ERR_USAGE', 'a card id is 1 to 128 characters', {});
  return cardId;
}

/** The card's archives, oldest first (also of an erased card); audited as a read. */
export async function listCardArchivedKeys(options: {
  readonly storage: Storage;
  readonly cardId: string;
  readonly actor?: string;
}): Promise<ArchivedKeySummary[]> {
  const cardId = checkCardId(options.cardId);
  const archives = (await listArchivedKeys(options.storage, cardId)).map(summary);
  await options.storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.archivedKeysListed,
      cardId,
      details: { count: archives.length },
    }),
  );
  return archives;
}

export interface RecoverKeyOptions {
  readonly storage: Storage;
  readonly cardId: string;
  /** The certificate serial (hex) of the key to recover; needed when the card has several archives. */
  readonly serial?: string | undefined;
  /**
   * The archive's id (list-archived-keys), for a key archived without a certificate (generated
   * through the card's interface); instead of `serial`.
   */
  readonly archiveId?: string | undefined;
  /** Why (a ticket, a name): required, kept in the audit log. */
  readonly reason: string;
  readonly actor?: string;
}

/**
 * The archive to hand out, after its `key.recovered` audit entry is committed: no envelope
 * leaves without its entry. Refuses an empty reason, an unknown serial, and a choice left open
 * (several archives, no serial).
 */
export async function recoverArchivedKey(options: RecoverKeyOptions): Promise<RecoveredKey> {
  const cardId = checkCardId(options.cardId);
  const reason = typeof options.reason === 'string' ? options.reason.trim() : '';
  if (reason.length === 0)
    throw new CardlinkError('ERR_USAGE', 'a reason is required (--reason "<ticket, requester>")', {});
  if (reason.length > MAX_RECOVERY_REASON_LENGTH)
    throw new CardlinkError(
      'ERR_USAGE',
      `the reason is longer than ${MAX_RECOVERY_REASON_LENGTH} characters`,
      {},
    );
  let serial: string | undefined;
  if (options.serial !== undefined) {
    const given = options.serial.replace(/:/g, '');
    if (!/^(0x)?[0-9a-fA-F]{1,40}$/.test(given))
      throw new CardlinkError(
        'ERR_USAGE',
        'a certificate serial is hex (colons allowed), at most 20 bytes',
        {},
      );
    const hex = given.replace(/^0x/, '');
    serial = normaliseSerial(hex.length % 2 === 1 ? `0${hex}` : hex);
  }

  if (serial !== undefined && options.archiveId !== undefined)
    throw new CardlinkError('ERR_USAGE', 'give a certificate serial or an archive id, not both', {});
  const archives = await listArchivedKeys(options.storage, cardId);
  const matching =
    options.archiveId !== undefined
      ? archives.filter((a) => a.id === options.archiveId)
      : serial === undefined
        ? archives
        : archives.filter((a) => a.certificateSerial === serial);
  if (matching.length === 0) throw new ArchivedKeyNotFoundError(cardId, serial ?? options.archiveId);
  if (matching.length > 1) {
    // The same serial twice cannot happen (serials are unique per CA); several archives can.
    throw new CardlinkError(
      'ERR_USAGE',
      `the card has ${matching.length} archived keys: choose one with --serial or --archive (see list-archived-keys)`,
      { cardId, count: matching.length },
    );
  }
  const chosen = matching[0]!;
  await options.storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: AUDIT_EVENTS.keyRecovered,
      cardId,
      details: {
        archiveId: chosen.id,
        slot: chosen.slot === undefined ? 'replaced' : `0x${chosen.slot.toString(16)}`,
        ...(chosen.certificateSerial !== undefined ? { certificateSerial: chosen.certificateSerial } : {}),
        ...(chosen.certificateSha256 !== undefined ? { certificateSha256: chosen.certificateSha256 } : {}),
        recipientSha256: chosen.recipientSha256,
        reason,
      },
    }),
  );
  return { ...summary(chosen), envelope: new Uint8Array(chosen.envelope) };
}
