/**
 * Archived key management keys (`archived_keys`, migration 5; server/archival/): each row holds a
 * CMS EnvelopedData of one 9D key's PKCS#8, encrypted to the recovery certificate. The server
 * cannot open it; only the offline recovery agent can. Rows are written in the transaction that
 * stores the key, follow the key when renewal retires it, and are NOT deleted with the card
 * (docs/security-model.md, "Key archival").
 */
import { randomUUID } from 'node:crypto';
import { asBuffer, nowIso } from './cards.js';
import type { Queryable, Tx } from './storage.js';

export interface NewArchivedKey {
  readonly cardId: string;
  readonly slot: number;
  readonly publicKeySha256: string;
  readonly certificateSerial?: string | undefined;
  readonly certificateSha256?: string | undefined;
  readonly recipientSha256: string;
  readonly envelope: Uint8Array;
}

export interface ArchivedKeyRecord {
  readonly id: string;
  readonly cardId: string;
  /** Where the key is now; undefined when a later enrollment replaced it (it is on the card no more). */
  readonly slot: number | undefined;
  readonly publicKeySha256: string;
  readonly certificateSerial: string | undefined;
  readonly certificateSha256: string | undefined;
  readonly recipientSha256: string;
  readonly envelope: Buffer;
  readonly createdAt: string;
}

/** Stores one archive in `tx` (the transaction that stores the key itself). Returns its id. */
export async function putArchivedKey(tx: Tx, archive: NewArchivedKey): Promise<string> {
  const id = randomUUID();
  await tx.db
    .insertInto('archived_keys')
    .values({
      id,
      card_id: archive.cardId,
      slot: archive.slot,
      public_key_sha256: archive.publicKeySha256,
      certificate_serial: archive.certificateSerial ?? null,
      certificate_sha256: archive.certificateSha256 ?? null,
      recipient_sha256: archive.recipientSha256,
      envelope: asBuffer(archive.envelope),
      created_at: nowIso(),
    })
    .execute();
  return id;
}

/**
 * Renewal moved the key with this public key from `fromSlot` to `toSlot` (a retired slot): its
 * archives say so. Returns how many rows moved.
 */
export async function moveArchivedKeys(
  tx: Tx,
  cardId: string,
  publicKeySha256: string,
  fromSlot: number,
  toSlot: number,
): Promise<number> {
  const moved = await tx.db
    .updateTable('archived_keys')
    .set({ slot: toSlot })
    .where('card_id', '=', cardId)
    .where('public_key_sha256', '=', publicKeySha256)
    .where('slot', '=', fromSlot)
    .executeTakeFirst();
  return Number(moved.numUpdatedRows);
}

/**
 * A new key replaced the one in `slot` without retiring it (enrollment): the archives of every
 * other key there are on the card no more. Returns how many.
 */
export async function detachArchivedKeys(
  tx: Tx,
  cardId: string,
  slot: number,
  keptPublicKeySha256: string,
): Promise<number> {
  const detached = await tx.db
    .updateTable('archived_keys')
    .set({ slot: null })
    .where('card_id', '=', cardId)
    .where('slot', '=', slot)
    .where('public_key_sha256', '!=', keptPublicKeySha256)
    .executeTakeFirst();
  return Number(detached.numUpdatedRows);
}

/** Every archive of the card (also of an erased card), oldest first. */
export async function listArchivedKeys(q: Queryable, cardId: string): Promise<ArchivedKeyRecord[]> {
  const rows = await q.db
    .selectFrom('archived_keys')
    .selectAll()
    .where('card_id', '=', cardId)
    .orderBy('created_at')
    .orderBy('id')
    .execute();
  return rows.map((r) => ({
    id: r.id,
    cardId: r.card_id,
    slot: r.slot === null ? undefined : Number(r.slot),
    publicKeySha256: r.public_key_sha256,
    certificateSerial: r.certificate_serial ?? undefined,
    certificateSha256: r.certificate_sha256 ?? undefined,
    recipientSha256: r.recipient_sha256,
    envelope: r.envelope,
    createdAt: r.created_at,
  }));
}
