/**
 * The issuing CA's row (certificate, sealed key or where the PKCS#11 token keeps it, CRL) and the
 * register of the certificates it issued, which revocation marks and the CRL lists. The CA logic
 * is server/ca/; this module only reads and writes rows.
 */
import { StorageError } from './errors.js';
import { asBuffer, nowIso, type SealedRecord } from './cards.js';
import type { Queryable, Tx } from './storage.js';

/** The id of the server's one issuing CA (the table allows more, for a later per-tenant CA). */
export const DEFAULT_CA_ID = 'default';

export type IssuingCaOrigin = 'generated' | 'imported';

/** A CA key pair inside the PKCS#11 token: its CKA_LABEL and CKA_ID (server/keys/token-keys.ts). */
export interface CaTokenKey {
  readonly label: string;
  readonly id: Buffer;
}

/** Where the CA's private key is: sealed in its row, or an object in the token. */
export type CaKeyPlace = { readonly sealed: SealedRecord } | { readonly token: CaTokenKey };

/** The sealed columns of a CA whose key is in the token: nothing sealed, under no KEK version. */
const NO_SEALED_KEY = {
  sealed: Buffer.alloc(0),
  wrappedDataKey: Buffer.alloc(0),
  kekVersion: 0,
  keyVersion: 0,
};

export interface IssuingCaRecord {
  readonly id: string;
  /** DER. */
  readonly certificate: Buffer;
  readonly key: CaKeyPlace;
  readonly origin: IssuingCaOrigin;
  readonly crlUrl: string;
  readonly crlNumber: number;
  /** The current CRL (DER), if one was issued. */
  readonly crl: Buffer | undefined;
  readonly createdAt: string;
}

export interface NewIssuingCa {
  readonly id: string;
  readonly certificate: Uint8Array;
  readonly key: CaKeyPlace;
  readonly origin: IssuingCaOrigin;
  readonly crlUrl: string;
}

/** A certificate as the register keeps it. */
export interface IssuedCertificateRecord {
  readonly serial: string;
  readonly caId: string;
  readonly cardId: string | null;
  readonly slot: number | null;
  readonly subject: string;
  readonly notAfter: string;
  readonly issuedAt: string;
  readonly revokedAt: string | null;
  readonly revocationReason: string | null;
}

export async function findIssuingCa(q: Queryable, id = DEFAULT_CA_ID): Promise<IssuingCaRecord | undefined> {
  const row = await q.db
    .selectFrom('issuing_cas')
    .leftJoin('issuing_ca_token_keys', 'issuing_ca_token_keys.ca_id', 'issuing_cas.id')
    .selectAll('issuing_cas')
    .select(['issuing_ca_token_keys.key_label', 'issuing_ca_token_keys.key_id'])
    .where('issuing_cas.id', '=', id)
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    id: row.id,
    certificate: row.certificate,
    key:
      row.key_label !== null && row.key_id !== null
        ? { token: { label: row.key_label, id: row.key_id } }
        : {
            sealed: {
              sealed: row.sealed_private_key,
              wrappedDataKey: row.wrapped_data_key,
              kekVersion: row.kek_version,
              keyVersion: Number(row.key_version),
            },
          },
    origin: row.origin as IssuingCaOrigin,
    crlUrl: row.crl_url,
    crlNumber: Number(row.crl_number),
    crl: row.crl ?? undefined,
    createdAt: row.created_at,
  };
}

/**
 * Inserts the CA (and where the token keeps its key); a CA of that id already there is a
 * StorageError (the caller checks first).
 */
export async function insertIssuingCa(tx: Tx, ca: NewIssuingCa): Promise<void> {
  const sealed = 'sealed' in ca.key ? ca.key.sealed : NO_SEALED_KEY;
  await tx.db
    .insertInto('issuing_cas')
    .values({
      id: ca.id,
      certificate: asBuffer(ca.certificate),
      sealed_private_key: sealed.sealed,
      wrapped_data_key: sealed.wrappedDataKey,
      kek_version: sealed.kekVersion,
      key_version: sealed.keyVersion,
      origin: ca.origin,
      crl_url: ca.crlUrl,
      crl_number: 0,
      crl: null,
      created_at: nowIso(),
    })
    .execute();
  if ('token' in ca.key)
    await tx.db
      .insertInto('issuing_ca_token_keys')
      .values({ ca_id: ca.id, key_label: ca.key.token.label, key_id: ca.key.token.id, created_at: nowIso() })
      .execute();
}

/** Takes the next CRL number (locks the CA row until commit, so two CRLs never share a number). */
export async function takeCrlNumber(tx: Tx, caId: string): Promise<number> {
  const row = await tx.db
    .updateTable('issuing_cas')
    .set((eb) => ({ crl_number: eb('crl_number', '+', 1) }))
    .where('id', '=', caId)
    .returning('crl_number')
    .executeTakeFirst();
  if (!row) throw new StorageError('no such issuing CA', { caId });
  return Number(row.crl_number);
}

/** Stores the CRL just issued under number `crlNumber` unless a newer one is already stored. */
export async function storeCrl(tx: Tx, caId: string, crlNumber: number, crl: Uint8Array): Promise<void> {
  await tx.db
    .updateTable('issuing_cas')
    .set({ crl: asBuffer(crl) })
    .where('id', '=', caId)
    .where('crl_number', '=', crlNumber)
    .execute();
}

export async function recordIssuedCertificate(
  tx: Tx,
  cert: Omit<IssuedCertificateRecord, 'issuedAt' | 'revokedAt' | 'revocationReason'>,
): Promise<void> {
  await tx.db
    .insertInto('issued_certificates')
    .values({
      serial: cert.serial,
      ca_id: cert.caId,
      card_id: cert.cardId,
      slot: cert.slot,
      subject: cert.subject,
      not_after: cert.notAfter,
      issued_at: nowIso(),
      revoked_at: null,
      revocation_reason: null,
    })
    .execute();
}

/**
 * Records that the certificate `serial` of the card now sits in `slot` (renewal moves the old key
 * management certificate from 9D to a retired slot): the register says where each certificate is,
 * so a revocation or an audit by slot finds the retired one where it really is. Returns whether a
 * row changed (none for a certificate an external CA issued).
 */
export async function moveIssuedCertificate(
  tx: Tx,
  cardId: string,
  serial: string,
  slot: number,
): Promise<boolean> {
  const result = await tx.db
    .updateTable('issued_certificates')
    .set({ slot })
    .where('card_id', '=', cardId)
    .where('serial', '=', serial)
    .executeTakeFirst();
  return Number(result.numUpdatedRows) > 0;
}

/**
 * Revokes the card's unrevoked certificates (all of them, or those of `slots`) with `reason`.
 * Returns the serials revoked.
 */
export async function revokeCardCertificates(
  tx: Tx,
  cardId: string,
  reason: string,
  slots?: readonly number[],
): Promise<string[]> {
  if (slots !== undefined && slots.length === 0) return [];
  const rows = await tx.db
    .updateTable('issued_certificates')
    .set({ revoked_at: nowIso(), revocation_reason: reason })
    .where('card_id', '=', cardId)
    .where('revoked_at', 'is', null)
    .$if(slots !== undefined, (qb) => qb.where('slot', 'in', slots!))
    .returning('serial')
    .execute();
  return rows.map((r) => r.serial);
}

/** The CA's revoked certificates that have not expired yet, oldest revocation first. */
export async function listRevokedCertificates(
  q: Queryable,
  caId: string,
  now = new Date(),
): Promise<IssuedCertificateRecord[]> {
  const rows = await q.db
    .selectFrom('issued_certificates')
    .selectAll()
    .where('ca_id', '=', caId)
    .where('revoked_at', 'is not', null)
    .where('not_after', '>', now.toISOString())
    .orderBy('revoked_at')
    .orderBy('serial')
    .execute();
  return rows.map(toIssued);
}

/** The certificates issued to a card (revoked or not), newest first. */
export async function listCardCertificates(q: Queryable, cardId: string): Promise<IssuedCertificateRecord[]> {
  const rows = await q.db
    .selectFrom('issued_certificates')
    .selectAll()
    .where('card_id', '=', cardId)
    .orderBy('issued_at', 'desc')
    .execute();
  return rows.map(toIssued);
}

/** How many certificates the CA issued, and how many of them are revoked. */
export async function countIssuedCertificates(
  q: Queryable,
  caId: string,
): Promise<{ issued: number; revoked: number }> {
  const row = await q.db
    .selectFrom('issued_certificates')
    .select((eb) => [eb.fn.countAll<number>().as('issued'), eb.fn.count<number>('revoked_at').as('revoked')])
    .where('ca_id', '=', caId)
    .executeTakeFirst();
  return { issued: Number(row?.issued ?? 0), revoked: Number(row?.revoked ?? 0) };
}

function toIssued(row: {
  serial: string;
  ca_id: string;
  card_id: string | null;
  slot: number | null;
  subject: string;
  not_after: string;
  issued_at: string;
  revoked_at: string | null;
  revocation_reason: string | null;
}): IssuedCertificateRecord {
  return {
    serial: row.serial,
    caId: row.ca_id,
    cardId: row.card_id,
    slot: row.slot,
    subject: row.subject,
    notAfter: row.not_after,
    issuedAt: row.issued_at,
    revokedAt: row.revoked_at,
    revocationReason: row.revocation_reason,
  };
}
