/**
 * `cardlink admin` actions on users and cards: list, unblock, delete. Each appends an audit entry
 * (a change in the same transaction as the change).
 *
 * - unblock: an administrator's write, fenced with `lockCardForAdmin`, which also bumps the
 *   session epoch: a session holding the card loses it (its next write fails with
 *   `ERR_CARD_TAKEN_OVER`) instead of overwriting the new PIN.
 * - delete: crypto-shred, see `deleteCard` in server/storage/cards.ts.
 */
import { REFERENCE_DATA_MAX_BYTES, REFERENCE_DATA_MIN_BYTES } from '../../apdu/piv/reference-data.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { createPinVerifier } from '../keys/pin-verifier.js';
import {
  deleteCard as deleteCardRows,
  getCard,
  lockCardForAdmin,
  setReference,
  type Storage,
} from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { randomDigits } from './create-card.js';
import { checkReferenceValue, ProfileError, type ReferencePolicy } from './profile.js';

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
  readonly pinRetries: { readonly remaining: number; readonly limit: number };
  readonly pukRetries: { readonly remaining: number; readonly limit: number };
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

/** Users, optionally of one tenant, with their number of cards. */
export async function listUsers(options: {
  storage: Storage;
  tenant?: string;
  actor?: string;
}): Promise<UserSummary[]> {
  const { storage } = options;
  let query = storage.db
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
  if (options.tenant !== undefined) query = query.where('users.tenant_id', '=', options.tenant);
  const rows = await query.execute();
  const users = rows.map((r) => ({
    id: r.id,
    tenantId: r.tenant_id,
    issuer: r.issuer,
    subject: r.subject,
    createdAt: r.created_at,
    cards: Number(r.cards),
  }));
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.usersListed,
      details: { count: users.length, ...(options.tenant !== undefined ? { tenant: options.tenant } : {}) },
    }),
  );
  return users;
}

/** Cards, optionally of one tenant or one user (by id or by issuer and subject). */
export async function listCards(options: {
  storage: Storage;
  tenant?: string;
  userId?: string;
  user?: { issuer: string; subject: string };
  actor?: string;
}): Promise<CardSummary[]> {
  const { storage } = options;
  let query = storage.db
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
  if (options.tenant !== undefined) query = query.where('cards.tenant_id', '=', options.tenant);
  if (options.userId !== undefined) query = query.where('cards.user_id', '=', options.userId);
  if (options.user !== undefined) {
    query = query
      .where('users.issuer', '=', options.user.issuer)
      .where('users.subject', '=', options.user.subject);
  }
  const rows = await query.execute();
  const keys =
    rows.length === 0
      ? []
      : await storage.db
          .selectFrom('card_keys')
          .select(['card_id', 'slot', 'algorithm', 'pin_policy', 'origin'])
          .where(
            'card_id',
            'in',
            rows.map((r) => r.id),
          )
          .orderBy('slot')
          .execute();
  const cards = rows.map((r): CardSummary => ({
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
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.cardsListed,
      details: {
        count: cards.length,
        ...(options.tenant !== undefined ? { tenant: options.tenant } : {}),
        ...(options.userId !== undefined ? { userId: options.userId } : {}),
      },
    }),
  );
  return cards;
}

/**
 * Sets a new PIN and restores the PIN's tries (the PUK is left as it is). The new PIN follows the
 * card's profile; it is generated when not given and returned once. A session holding the card
 * loses it. Throws `ERR_CARD_NOT_FOUND` for an unknown card.
 */
export async function unblockCard(options: {
  storage: Storage;
  kek: KekProvider;
  cardId: string;
  newPin?: string;
  actor?: string;
}): Promise<{ pin: string; generated: boolean }> {
  const { storage, kek, cardId } = options;
  const card = await getCard(storage, cardId);
  const policy = pinPolicyOf(card.profile);
  const pin = options.newPin ?? randomDigits(policy);
  const bytes = checkReferenceValue(pin, policy, 'pin');
  try {
    const verifier = await createPinVerifier(kek, { cardId, kind: 'pin' }, bytes);
    await storage.transaction(async (tx) => {
      const fenced = await lockCardForAdmin(tx, cardId);
      await setReference(fenced, 'pin', verifier);
      await appendAudit(tx, {
        actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
        eventType: AUDIT_EVENTS.pinUnblocked,
        cardId,
        details: { reference: 'pin', with: 'admin', generated: options.newPin === undefined },
      });
    });
  } finally {
    bytes.fill(0);
  }
  return { pin, generated: options.newPin === undefined };
}

/**
 * Deletes the card with its sealed keys, wrapped data keys, objects and sessions in one
 * transaction with its audit entry (crypto-shred). Throws `ERR_CARD_NOT_FOUND` for an unknown card.
 */
export async function deleteCard(options: {
  storage: Storage;
  cardId: string;
  actor?: string;
}): Promise<void> {
  const { storage, cardId } = options;
  await storage.transaction(async (tx) => {
    const card = await getCard(tx, cardId);
    const keys = await tx.db
      .selectFrom('card_keys')
      .select((eb) => eb.fn.countAll<number>().as('n'))
      .where('card_id', '=', cardId)
      .executeTakeFirst();
    await deleteCardRows(tx, cardId);
    await appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: AUDIT_EVENTS.cardDeleted,
      cardId,
      details: {
        label: card.label,
        serial: card.serial,
        userId: card.userId,
        slotKeysDeleted: Number(keys?.n ?? 0),
      },
    });
  });
}

/** The PIN policy stored with the card's profile, or SP 800-73-4's 6..8 digits. */
function pinPolicyOf(profile: unknown): ReferencePolicy {
  const p = (profile as { pin?: Partial<ReferencePolicy> } | null)?.pin;
  const min = Number.isInteger(p?.minLength) ? p!.minLength! : REFERENCE_DATA_MIN_BYTES;
  const max = Number.isInteger(p?.maxLength) ? p!.maxLength! : REFERENCE_DATA_MAX_BYTES;
  if (min < REFERENCE_DATA_MIN_BYTES || max > REFERENCE_DATA_MAX_BYTES || min > max)
    throw new ProfileError('pin', "the card's stored profile has an invalid PIN policy");
  const generated = Number.isInteger(p?.generatedLength) ? p!.generatedLength! : max;
  return {
    minLength: min,
    maxLength: max,
    retries: 1,
    generatedLength: Math.min(max, Math.max(min, generated)),
  };
}
