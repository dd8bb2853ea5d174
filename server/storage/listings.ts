/**
 * Read-only views across tables for administrators (server/admin/): users with their number of
 * cards, cards with their owner and slots, live sessions. Each returns plain records, in a stable
 * order (creation time, then id).
 */
import type { RetryCounter } from './cards.js';
import type { Queryable } from './storage.js';

export interface UserSummary {
  readonly id: string;
  readonly tenantId: string;
  readonly issuer: string;
  readonly subject: string;
  readonly createdAt: string;
  readonly cards: number;
}

export interface CardSummary {
  readonly id: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly issuer: string;
  readonly subject: string;
  readonly label: string;
  readonly serial: number;
  readonly pinRetries: RetryCounter;
  readonly pukRetries: RetryCounter;
  readonly managementKeyAlgorithm: string;
  readonly slots: readonly {
    readonly slot: number;
    readonly algorithm: string;
    readonly pinPolicy: string;
    readonly origin: string;
  }[];
  /** The session holding the card, if any. */
  readonly sessionId: string | null;
  readonly createdAt: string;
  readonly updatedAt: string;
}

export interface LiveSession {
  readonly id: string;
  readonly cardId: string;
  readonly cardLabel: string;
  readonly userId: string | null;
  readonly issuer: string | null;
  readonly subject: string | null;
  readonly deviceId: string | null;
  readonly epoch: number;
  /** True when the card's epoch moved on (an admin write or claim): the session can no longer write. */
  readonly fenced: boolean;
  readonly createdAt: string;
}

/** Users, optionally of one tenant, with their number of cards. */
export async function listUserSummaries(
  q: Queryable,
  filter: { tenant?: string } = {},
): Promise<UserSummary[]> {
  let query = q.db
    .selectFrom('users')
    .leftJoin('cards', 'cards.user_id', 'users.id')
    .select((eb) => [
      'users.id',
      'users.tenant_id',
      'users.issuer',
      'users.subject',
      'users.created_at',
      eb.fn.count<number>('cards.id').as('cards'),
    ])
    .groupBy(['users.id', 'users.tenant_id', 'users.issuer', 'users.subject', 'users.created_at'])
    .orderBy('users.created_at')
    .orderBy('users.id');
  if (filter.tenant !== undefined) query = query.where('users.tenant_id', '=', filter.tenant);
  const rows = await query.execute();
  return rows.map((r) => ({
    id: r.id,
    tenantId: r.tenant_id,
    issuer: r.issuer,
    subject: r.subject,
    createdAt: r.created_at,
    cards: Number(r.cards),
  }));
}

/** Cards, optionally of one tenant or one user (by id or by issuer and subject), with their slots. */
export async function listCardSummaries(
  q: Queryable,
  filter: { tenant?: string; userId?: string; user?: { issuer: string; subject: string } } = {},
): Promise<CardSummary[]> {
  let query = q.db
    .selectFrom('cards')
    .innerJoin('users', 'users.id', 'cards.user_id')
    .select([
      'cards.id',
      'cards.tenant_id',
      'cards.user_id',
      'users.issuer',
      'users.subject',
      'cards.label',
      'cards.serial',
      'cards.pin_retries_remaining',
      'cards.pin_retries_limit',
      'cards.puk_retries_remaining',
      'cards.puk_retries_limit',
      'cards.mgmt_algorithm',
      'cards.session_id',
      'cards.created_at',
      'cards.updated_at',
    ])
    .orderBy('cards.created_at')
    .orderBy('cards.id');
  if (filter.tenant !== undefined) query = query.where('cards.tenant_id', '=', filter.tenant);
  if (filter.userId !== undefined) query = query.where('cards.user_id', '=', filter.userId);
  if (filter.user !== undefined) {
    query = query
      .where('users.issuer', '=', filter.user.issuer)
      .where('users.subject', '=', filter.user.subject);
  }
  const rows = await query.execute();
  const keys =
    rows.length === 0
      ? []
      : await q.db
          .selectFrom('card_keys')
          .select(['card_id', 'slot', 'algorithm', 'pin_policy', 'origin'])
          .where(
            'card_id',
            'in',
            rows.map((r) => r.id),
          )
          .orderBy('slot')
          .execute();
  return rows.map((r) => ({
    id: r.id,
    tenantId: r.tenant_id,
    userId: r.user_id,
    issuer: r.issuer,
    subject: r.subject,
    label: r.label,
    serial: r.serial,
    pinRetries: { remaining: r.pin_retries_remaining, limit: r.pin_retries_limit },
    pukRetries: { remaining: r.puk_retries_remaining, limit: r.puk_retries_limit },
    managementKeyAlgorithm: r.mgmt_algorithm,
    slots: keys
      .filter((k) => k.card_id === r.id)
      .map((k) => ({ slot: k.slot, algorithm: k.algorithm, pinPolicy: k.pin_policy, origin: k.origin })),
    sessionId: r.session_id,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }));
}

/** Sessions not ended (`sessions.ended_at` null), optionally of one card. */
export async function listSessionsNotEnded(
  q: Queryable,
  filter: { cardId?: string } = {},
): Promise<LiveSession[]> {
  let query = q.db
    .selectFrom('sessions')
    .innerJoin('cards', 'cards.id', 'sessions.card_id')
    .leftJoin('users', 'users.id', 'sessions.user_id')
    .select([
      'sessions.id',
      'sessions.card_id',
      'cards.label',
      'cards.session_epoch',
      'sessions.user_id',
      'users.issuer',
      'users.subject',
      'sessions.device_id',
      'sessions.epoch',
      'sessions.created_at',
    ])
    .where('sessions.ended_at', 'is', null)
    .orderBy('sessions.created_at')
    .orderBy('sessions.id');
  if (filter.cardId !== undefined) query = query.where('sessions.card_id', '=', filter.cardId);
  const rows = await query.execute();
  return rows.map((r) => ({
    id: r.id,
    cardId: r.card_id,
    cardLabel: r.label,
    userId: r.user_id,
    issuer: r.issuer,
    subject: r.subject,
    deviceId: r.device_id,
    epoch: Number(r.epoch),
    fenced: Number(r.epoch) !== Number(r.session_epoch),
    createdAt: r.created_at,
  }));
}
