/**
 * Cards: creation, reads, deletion (crypto-shred) and the fence every later write goes through.
 *
 * The fence: a session claims a card (`claimCard`, card-sessions.ts) and gets the card's new
 * session epoch. Each of its writes starts with `fenceCard(tx, { cardId, epoch })`, which bumps the
 * card's state version `WHERE session_epoch = epoch`. If another session claimed the card since,
 * nothing matches and `CardTakenOverError` is thrown, so the transaction rolls back. On PostgreSQL
 * the bump also locks the card's row until commit, so a concurrent claim waits for the write and
 * the write never lands after the claim.
 */
import { KEY_REF } from '../../apdu/piv/index.js';
import { GUID_BYTES } from '../../apdu/piv/objects/index.js';
import { compiledQuery } from './compiled-query.js';
import { randomUUID } from 'node:crypto';
import { CardNotFoundError, CardTakenOverError, StorageError } from './errors.js';
import type { CardRow } from './schema.js';
import type { Queryable, Tx } from './storage.js';

/** A secret sealed by `server/keys/sealing.ts`, as stored (the management key, a slot's private key). */
export interface SealedRecord {
  /** AES-256-GCM ciphertext of the secret under a fresh data key. */
  readonly sealed: Buffer;
  /** The data key, wrapped by the KEK of `kekVersion`. */
  readonly wrappedDataKey: Buffer;
  readonly kekVersion: number;
  /** Bound into the seal's AAD: the card's state version when the secret was written. */
  readonly keyVersion: number;
}

/** What a session presents to write: the card and the epoch its claim returned. */
export interface CardFence {
  readonly cardId: string;
  readonly epoch: number;
}

/** Proof that the card's row is fenced (and on PostgreSQL locked) in this transaction. */
export interface FencedCard {
  readonly cardId: string;
  readonly tenantId: string;
  /** The card's state version after this transaction; use it as the key version when sealing. */
  readonly version: number;
  readonly tx: Tx;
}

export interface RetryCounter {
  readonly remaining: number;
  readonly limit: number;
}

export interface CardRecord {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly label: string;
  readonly profile: unknown;
  readonly serial: number;
  readonly guid: Buffer;
  readonly pinRetries: RetryCounter;
  readonly pukRetries: RetryCounter;
  readonly managementKeyAlgorithm: string;
  readonly sessionEpoch: number;
  readonly sessionId: string | null;
  readonly version: number;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface NewCard {
  /** From `newCardId()`: the id is needed to seal the management key before the card exists. */
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly label: string;
  /** Any JSON value; stored as JSON text. */
  readonly profile: unknown;
  /** 32-bit, unique. */
  readonly serial: number;
  /** 16 bytes. */
  readonly guid: Uint8Array;
  readonly pinVerifier: Uint8Array;
  readonly pinRetriesLimit: number;
  /**
   * No PIN known to anyone: the PIN starts blocked (no tries left, its verifier of a random value)
   * until the user sets it after a fresh sign-in (server/cards/pin-by-sign-in.ts).
   */
  readonly pinUnset?: boolean;
  readonly pukVerifier: Uint8Array;
  readonly pukRetriesLimit: number;
  readonly managementKeyAlgorithm: string;
  /** Sealed with key version `INITIAL_CARD_VERSION`. */
  readonly managementKey: SealedRecord;
}

/** The state version of a new card (and the key version its first management key is sealed with). */
export const INITIAL_CARD_VERSION = 0;

/** PIV key reference of the card management key (9B): the slot its sealed key is bound to. */
export const MANAGEMENT_KEY_SLOT = KEY_REF.CARD_MANAGEMENT;

/** Bytes in a card GUID (the CHUID's GUID field). */
export const CARD_GUID_LENGTH = GUID_BYTES;

export function newCardId(): string {
  return randomUUID();
}

export function nowIso(): string {
  return new Date().toISOString();
}

/** A Buffer view of `bytes` (the drivers want Buffers), without copying. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

export async function createCard(tx: Tx, card: NewCard): Promise<CardRecord> {
  if (card.guid.length !== CARD_GUID_LENGTH)
    throw new StorageError('card GUID must be 16 bytes', { length: card.guid.length });
  if (!Number.isInteger(card.serial) || card.serial < 0 || card.serial > 0xffffffff) {
    throw new StorageError('card serial must be a 32-bit unsigned integer');
  }
  if (card.managementKey.keyVersion !== INITIAL_CARD_VERSION) {
    throw new StorageError('a new card management key is sealed with the initial key version', {
      keyVersion: card.managementKey.keyVersion,
    });
  }
  const now = nowIso();
  const row = await tx.db
    .insertInto('cards')
    .values({
      id: card.id,
      tenant_id: card.tenantId,
      user_id: card.userId,
      label: card.label,
      profile: JSON.stringify(card.profile ?? null),
      serial: card.serial,
      guid: asBuffer(card.guid),
      pin_verifier: asBuffer(card.pinVerifier),
      pin_retries_remaining: card.pinUnset ? 0 : card.pinRetriesLimit,
      pin_unset: card.pinUnset ? 1 : 0,
      pin_retries_limit: card.pinRetriesLimit,
      puk_verifier: asBuffer(card.pukVerifier),
      puk_retries_remaining: card.pukRetriesLimit,
      puk_retries_limit: card.pukRetriesLimit,
      mgmt_algorithm: card.managementKeyAlgorithm,
      mgmt_sealed: card.managementKey.sealed,
      mgmt_wrapped_key: card.managementKey.wrappedDataKey,
      mgmt_kek_version: card.managementKey.kekVersion,
      mgmt_key_version: INITIAL_CARD_VERSION,
      session_epoch: 0,
      session_id: null,
      version: INITIAL_CARD_VERSION,
      created_at: now,
      updated_at: now,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
  return toCardRecord(row);
}

export async function findCard(q: Queryable, cardId: string): Promise<CardRecord | undefined> {
  const row = await q.db.selectFrom('cards').selectAll().where('id', '=', cardId).executeTakeFirst();
  return row ? toCardRecord(row) : undefined;
}

/**
 * The card `cardId` if it belongs to `userId`, in one lookup scoped to the user: another user's
 * card and a card that does not exist both match no row, so they cost the same and a caller
 * cannot tell them apart by the time the answer takes.
 */
export async function findCardOfUser(
  q: Queryable,
  cardId: string,
  userId: string,
): Promise<CardRecord | undefined> {
  const row = await q.db
    .selectFrom('cards')
    .selectAll()
    .where('id', '=', cardId)
    .where('user_id', '=', userId)
    .executeTakeFirst();
  return row ? toCardRecord(row) : undefined;
}

export async function getCard(q: Queryable, cardId: string): Promise<CardRecord> {
  const card = await findCard(q, cardId);
  if (!card) throw new CardNotFoundError(cardId);
  return card;
}

export async function listCardsOfUser(q: Queryable, userId: string): Promise<CardRecord[]> {
  const rows = await q.db
    .selectFrom('cards')
    .selectAll()
    .where('user_id', '=', userId)
    .orderBy('created_at')
    .execute();
  return rows.map(toCardRecord);
}

/** True when a card already has `serial` (serials are unique). */
export async function isSerialTaken(q: Queryable, serial: number): Promise<boolean> {
  const row = await q.db.selectFrom('cards').select('id').where('serial', '=', serial).executeTakeFirst();
  return row !== undefined;
}

/**
 * The highest serial a card has within [first, last], or undefined when none has one. Two
 * transactions taking the next serial at once collide on the serial's unique constraint; the
 * loser fails and is retried by the administrator.
 */
export async function highestSerialInRange(
  q: Queryable,
  first: number,
  last: number,
): Promise<number | undefined> {
  const row = await q.db
    .selectFrom('cards')
    .select((eb) => eb.fn.max('serial').as('serial'))
    .where('serial', '>=', first)
    .where('serial', '<=', last)
    .executeTakeFirst();
  return row?.serial === null || row?.serial === undefined ? undefined : Number(row.serial);
}

/**
 * Locks the card's row until `tx` ends (PostgreSQL `FOR UPDATE`; SQLite runs one transaction at a
 * time) without changing it, so that what is read next about the card stays as it is until the
 * transaction's own writes. Returns false when there is no such card.
 */
export async function lockCardRow(tx: Tx, cardId: string): Promise<boolean> {
  let query = tx.db.selectFrom('cards').select('id').where('id', '=', cardId);
  if (tx.dialect === 'postgres') query = query.forUpdate();
  return (await query.executeTakeFirst()) !== undefined;
}

/**
 * Fences a session's write: bumps the card's version if `fence.epoch` is still the card's session
 * epoch, else throws `CardTakenOverError` (or `CardNotFoundError`). Call it first in the
 * transaction, before any other write for the card.
 */
export async function fenceCard(tx: Tx, fence: CardFence): Promise<FencedCard> {
  const row = await tx.db
    .updateTable('cards')
    .set((eb) => ({ version: eb('version', '+', 1), updated_at: nowIso() }))
    .where('id', '=', fence.cardId)
    .where('session_epoch', '=', fence.epoch)
    .returning(['tenant_id', 'version'])
    .executeTakeFirst();
  if (!row) throw await fenceFailure(tx, fence);
  return { cardId: fence.cardId, tenantId: row.tenant_id, version: row.version, tx };
}

/**
 * Fences a session's write that changes nothing of the card itself (the record of a private-key
 * operation): like `fenceCard`, but the version stays. The card's row is locked all the same
 * (PostgreSQL `FOR UPDATE`; SQLite runs one transaction at a time), so a claim cannot commit in
 * between. A write that seals anything needs the fresh version of `fenceCard`, called later in
 * the same transaction.
 */
export async function checkCardFence(tx: Tx, fence: CardFence): Promise<FencedCard> {
  const [checked] = await checkCardFences(tx, [fence]);
  if (checked instanceof Error) throw checked;
  return checked!;
}

/** The fence rows of `shape` cards (values: their ids, sorted), locked on PostgreSQL. */
const FENCE_ROWS = compiledQuery((db, p, shape, dialect) => {
  const query = db
    .selectFrom('cards')
    .select(['id', 'tenant_id', 'version', 'session_epoch'])
    .where(
      'id',
      'in',
      Array.from({ length: shape }, (_, i) => p<string>(i)),
    )
    .orderBy('id');
  return dialect === 'postgres' ? query.forUpdate() : query;
});

/**
 * `checkCardFence` for several cards in one statement (a batch of private-key operation records):
 * for each fence, in order, the fenced card or the error its own check would have thrown. On
 * PostgreSQL the rows are locked in id order, the same order any two batches take them in.
 */
export async function checkCardFences(
  tx: Tx,
  fences: readonly CardFence[],
): Promise<(FencedCard | CardNotFoundError | CardTakenOverError)[]> {
  const ids = [...new Set(fences.map((f) => f.cardId))].sort();
  if (ids.length === 0) return [];
  const { rows: found } = await FENCE_ROWS.execute(tx, ids, ids.length);
  const rows = new Map(found.map((row) => [row.id, row]));
  return fences.map((fence) => {
    const row = rows.get(fence.cardId);
    if (!row) return new CardNotFoundError(fence.cardId);
    if (row.session_epoch !== fence.epoch) return new CardTakenOverError(fence.cardId, fence.epoch);
    return { cardId: fence.cardId, tenantId: row.tenant_id, version: row.version, tx };
  });
}

/**
 * Fences an administrator's write (provisioning, PIN reset by an admin): bumps both the version
 * and the session epoch, so a session holding the card loses it, and announces the claim.
 */
export async function lockCardForAdmin(tx: Tx, cardId: string): Promise<FencedCard> {
  const row = await tx.db
    .updateTable('cards')
    .set((eb) => ({
      version: eb('version', '+', 1),
      session_epoch: eb('session_epoch', '+', 1),
      session_id: null,
      updated_at: nowIso(),
    }))
    .where('id', '=', cardId)
    .returning(['tenant_id', 'version', 'session_epoch'])
    .executeTakeFirst();
  if (!row) throw new CardNotFoundError(cardId);
  await tx.publishCardClaimed({ cardId, epoch: row.session_epoch });
  return { cardId, tenantId: row.tenant_id, version: row.version, tx };
}

/**
 * Fences an administrator's change of the card's keys and objects (enrollment) that leaves the
 * card with its holder: bumps the version and the session epoch, so a write the holder started on
 * its old view of the card is refused, but keeps the holder's claim (`session_id`), and announces
 * the change (`changed`) instead of a claim. The holder then reloads the card under a new epoch of
 * its own claim (`reclaimCard`) and tells its client (CARD_CHANGED `updated`).
 */
export async function lockCardForChange(tx: Tx, cardId: string): Promise<FencedCard> {
  const row = await tx.db
    .updateTable('cards')
    .set((eb) => ({
      version: eb('version', '+', 1),
      session_epoch: eb('session_epoch', '+', 1),
      updated_at: nowIso(),
    }))
    .where('id', '=', cardId)
    .returning(['tenant_id', 'version', 'session_epoch'])
    .executeTakeFirst();
  if (!row) throw new CardNotFoundError(cardId);
  await tx.publishCardClaimed({ cardId, epoch: row.session_epoch, changed: true });
  return { cardId, tenantId: row.tenant_id, version: row.version, tx };
}

/** Why a fenced statement matched no row: the card is gone, or its epoch moved on. */
export async function fenceFailure(q: Queryable, fence: CardFence): Promise<Error> {
  const current = await q.db
    .selectFrom('cards')
    .select('session_epoch')
    .where('id', '=', fence.cardId)
    .executeTakeFirst();
  if (!current) return new CardNotFoundError(fence.cardId);
  if (current.session_epoch !== fence.epoch) return new CardTakenOverError(fence.cardId, fence.epoch);
  return new StorageError('fenced update matched no row', { cardId: fence.cardId });
}

/**
 * Deletes the card and everything that belongs to it in one transaction: its sealed private keys
 * and wrapped data keys (crypto-shred: without them no copy of the sealed blobs can be opened
 * once backups age out), data objects, sessions and recorded responses. The audit log keeps its
 * entries. A session holding the card is told (claim event) and fails its next write.
 * Returns false when there was no such card.
 */
export async function deleteCard(tx: Tx, cardId: string): Promise<boolean> {
  const card = await tx.db
    .updateTable('cards')
    .set((eb) => ({ session_epoch: eb('session_epoch', '+', 1) }))
    .where('id', '=', cardId)
    .returning('session_epoch')
    .executeTakeFirst();
  if (!card) return false;
  await tx.db.deleteFrom('applied_commands').where('card_id', '=', cardId).execute();
  await tx.db.deleteFrom('sessions').where('card_id', '=', cardId).execute();
  await tx.db.deleteFrom('card_keys').where('card_id', '=', cardId).execute();
  await tx.db.deleteFrom('card_objects').where('card_id', '=', cardId).execute();
  await tx.db.deleteFrom('pin_history').where('card_id', '=', cardId).execute();
  await tx.db.deleteFrom('cards').where('id', '=', cardId).execute();
  await tx.publishCardClaimed({ cardId, epoch: card.session_epoch });
  return true;
}

/** The card's management key, sealed, with the algorithm it is for. */
export async function getManagementKey(
  q: Queryable,
  cardId: string,
): Promise<{ algorithm: string; tenantId: string; key: SealedRecord }> {
  const row = await q.db
    .selectFrom('cards')
    .select([
      'tenant_id',
      'mgmt_algorithm',
      'mgmt_sealed',
      'mgmt_wrapped_key',
      'mgmt_kek_version',
      'mgmt_key_version',
    ])
    .where('id', '=', cardId)
    .executeTakeFirst();
  if (!row) throw new CardNotFoundError(cardId);
  return {
    algorithm: row.mgmt_algorithm,
    tenantId: row.tenant_id,
    key: {
      sealed: row.mgmt_sealed,
      wrappedDataKey: row.mgmt_wrapped_key,
      kekVersion: row.mgmt_kek_version,
      keyVersion: row.mgmt_key_version,
    },
  };
}

/** Replaces the management key; it must be sealed with key version `card.version`. */
export async function setManagementKey(
  card: FencedCard,
  algorithm: string,
  key: SealedRecord,
): Promise<void> {
  assertKeyVersion(card, key);
  await card.tx.db
    .updateTable('cards')
    .set({
      mgmt_algorithm: algorithm,
      mgmt_sealed: key.sealed,
      mgmt_wrapped_key: key.wrappedDataKey,
      mgmt_kek_version: key.kekVersion,
      mgmt_key_version: key.keyVersion,
    })
    .where('id', '=', card.cardId)
    .execute();
}

export function assertKeyVersion(card: FencedCard, key: SealedRecord): void {
  if (key.keyVersion !== card.version) {
    throw new StorageError('secret sealed with a key version other than the fenced card version', {
      cardId: card.cardId,
      keyVersion: key.keyVersion,
      cardVersion: card.version,
    });
  }
}

function toCardRecord(row: CardRow): CardRecord {
  return {
    id: row.id,
    tenantId: row.tenant_id,
    userId: row.user_id,
    label: row.label,
    profile: JSON.parse(row.profile) as unknown,
    serial: row.serial,
    guid: row.guid,
    pinRetries: { remaining: row.pin_retries_remaining, limit: row.pin_retries_limit },
    pukRetries: { remaining: row.puk_retries_remaining, limit: row.puk_retries_limit },
    managementKeyAlgorithm: row.mgmt_algorithm,
    sessionEpoch: row.session_epoch,
    sessionId: row.session_id,
    version: row.version,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
