/**
 * `cardlink admin` actions on users and cards: list, unblock, delete. Each appends an audit entry
 * (a change in the same transaction as the change).
 *
 * - unblock: an administrator's write, fenced with `lockCardForAdmin`, which also bumps the
 *   session epoch: a session holding the card loses it (its next write fails with
 *   `ERR_CARD_TAKEN_OVER`) instead of overwriting the new PIN.
 * - delete: crypto-shred, see `deleteCard` in server/storage/cards.ts.
 */
import { REFERENCE_DATA_MAX_BYTES, REFERENCE_DATA_MIN_BYTES } from '../../apdu/piv/index.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { createPinVerifier } from '../keys/pin-verifier.js';
import {
  countCardKeys,
  deleteCard as deleteCardRows,
  getCard,
  listCardSummaries,
  listUserSummaries,
  lockCardForAdmin,
  revokeCardCertificates,
  setReference,
  type CardSummary,
  type Storage,
  type UserSummary,
} from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { randomDigits } from './create-card.js';
import { checkReferenceValue, ProfileError, type ReferencePolicy } from './profile.js';

export type { CardSummary, UserSummary };

/** Users, optionally of one tenant, with their number of cards. */
export async function listUsers(options: {
  storage: Storage;
  tenant?: string;
  actor?: string;
}): Promise<UserSummary[]> {
  const { storage } = options;
  const users = await listUserSummaries(
    storage,
    options.tenant !== undefined ? { tenant: options.tenant } : {},
  );
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
  const cards = await listCardSummaries(storage, {
    ...(options.tenant !== undefined ? { tenant: options.tenant } : {}),
    ...(options.userId !== undefined ? { userId: options.userId } : {}),
    ...(options.user !== undefined ? { user: options.user } : {}),
  });
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
 * transaction with its audit entry (crypto-shred), and revokes the certificates the issuing CA gave
 * it (cessationOfOperation) in the same transaction. With `kek`, a new CRL listing them is signed
 * right after (without it, the next `cardlink admin ca crl` does). Throws `ERR_CARD_NOT_FOUND`
 * for an unknown card.
 */
export async function deleteCard(options: {
  storage: Storage;
  cardId: string;
  kek?: KekProvider;
  actor?: string;
}): Promise<{ revoked: readonly string[]; crlNumber?: number }> {
  const { storage, cardId } = options;
  const actor = options.actor ?? DEFAULT_ADMIN_ACTOR;
  const revoked = await storage.transaction(async (tx) => {
    const card = await getCard(tx, cardId);
    const slotKeys = await countCardKeys(tx, cardId);
    await deleteCardRows(tx, cardId);
    const serials = await revokeCardCertificates(tx, cardId, 'cessationOfOperation');
    await appendAudit(tx, {
      actor,
      eventType: AUDIT_EVENTS.cardDeleted,
      cardId,
      details: {
        label: card.label,
        serial: card.serial,
        userId: card.userId,
        slotKeysDeleted: slotKeys,
        certificatesRevoked: serials.length,
      },
    });
    if (serials.length > 0) {
      await appendAudit(tx, {
        actor,
        eventType: AUDIT_EVENTS.certificatesRevoked,
        cardId,
        details: { reason: 'cessationOfOperation', serials },
      });
    }
    return serials;
  });
  if (revoked.length === 0 || !options.kek) return { revoked };
  // Loaded only when there is a CRL to sign: the other admin commands never load the CA.
  const { issueCrl } = await import('../ca/crl.js');
  const crl = await issueCrl({ storage, kek: options.kek, actor });
  return { revoked, crlNumber: crl.crlNumber };
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
