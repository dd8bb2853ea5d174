/**
 * Queries for certificate renewal (server/admin/renew.ts): which cards hold a CA-issued
 * certificate that expires soon.
 */
import { asBuffer } from './cards.js';
import type { Queryable } from './storage.js';

export interface ExpiringCard {
  readonly cardId: string;
  /** The earliest notAfter among the card's unrevoked certificates (ISO 8601). */
  readonly firstNotAfter: string;
}

/**
 * Cards with an unrevoked certificate that expires before `cutoff`, the soonest first. Expired
 * certificates count too: a card whose certificates lapsed is due as well.
 */
export async function listCardsWithCertificatesExpiringBefore(
  q: Queryable,
  cutoff: Date,
): Promise<ExpiringCard[]> {
  const rows = await q.db
    .selectFrom('issued_certificates')
    .select((eb) => ['card_id', eb.fn.min<string>('not_after').as('first_not_after')])
    .where('revoked_at', 'is', null)
    .where('card_id', 'is not', null)
    .where('not_after', '<', cutoff.toISOString())
    .groupBy('card_id')
    .orderBy('first_not_after')
    .execute();
  return rows.map((r) => ({ cardId: r.card_id!, firstNotAfter: r.first_not_after }));
}

export interface SlotCertificateObject {
  readonly cardId: string;
  readonly tag: number;
  /** The certificate object's value (70/71/FE), as stored. */
  readonly value: Buffer;
}

/**
 * One page of every card's certificate objects with the given tags, ordered by card and tag, after
 * the (cardId, tag) `after` (keyset paging). Certificates an external CA issued are not in
 * `issued_certificates`: their expiry is only in the certificate itself, which the caller decodes
 * (server/admin/renew.ts); paging keeps a large installation's scan small in memory.
 */
export async function listSlotCertificateObjects(
  q: Queryable,
  tags: readonly number[],
  limit: number,
  after?: { readonly cardId: string; readonly tag: number },
): Promise<SlotCertificateObject[]> {
  if (tags.length === 0) return [];
  let query = q.db
    .selectFrom('card_objects')
    .select(['card_id', 'tag', 'value'])
    .where('tag', 'in', [...tags]);
  if (after)
    query = query.where((eb) =>
      eb.or([
        eb('card_id', '>', after.cardId),
        eb.and([eb('card_id', '=', after.cardId), eb('tag', '>', after.tag)]),
      ]),
    );
  const rows = await query.orderBy('card_id').orderBy('tag').limit(limit).execute();
  return rows.map((r) => ({ cardId: r.card_id, tag: r.tag, value: asBuffer(r.value) }));
}

/** Serials (lower-case hex, as registered) of the card's certificates in the embedded CA's register. */
export async function listRegisteredSerials(q: Queryable, cardId: string): Promise<Set<string>> {
  const rows = await q.db
    .selectFrom('issued_certificates')
    .select('serial')
    .where('card_id', '=', cardId)
    .execute();
  return new Set(rows.map((r) => r.serial));
}

/**
 * The earliest notAfter among the card's unrevoked certificates, leaving out those of `exceptSlots`
 * (a short-lived 9A certificate is always about to expire; it is re-issued at each sign-in, not
 * renewed). Undefined when the card has no such certificate.
 */
export async function firstCertificateExpiry(
  q: Queryable,
  cardId: string,
  exceptSlots: readonly number[] = [],
): Promise<string | undefined> {
  let query = q.db
    .selectFrom('issued_certificates')
    .select((eb) => eb.fn.min<string>('not_after').as('first_not_after'))
    .where('revoked_at', 'is', null)
    .where('card_id', '=', cardId);
  if (exceptSlots.length > 0)
    query = query.where((eb) => eb.or([eb('slot', 'is', null), eb('slot', 'not in', exceptSlots)]));
  const row = await query.executeTakeFirst();
  return row?.first_not_after ?? undefined;
}
