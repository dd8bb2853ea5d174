/**
 * `cardlink admin sessions` and `force-logout`: the card sessions that have not ended, and taking
 * a card from whichever session holds it. Both are audited.
 */
import { randomUUID } from 'node:crypto';
import { appendAudit } from '../audit/audit-log.js';
import {
  ADMIN_CLAIM_PREFIX,
  CardNotFoundError,
  claimCard,
  endSession,
  listLiveSessionIds,
  listSessionsNotEnded,
  lockCardRow,
  type LiveSession,
  type Storage,
} from '../storage/index.js';
import { ADMIN_AUDIT_EVENTS, DEFAULT_ADMIN_ACTOR } from './admin-common.js';

export type { LiveSession };

/** Prefix of the session id `force-logout` claims the card with (the rest is a fresh UUID). */
export const FORCE_LOGOUT_SESSION_PREFIX = ADMIN_CLAIM_PREFIX;

export interface ForcedLogout {
  readonly cardId: string;
  /** The card's session epoch after the claim: every session of an earlier epoch is fenced. */
  readonly epoch: number;
  /** Sessions that were live on the card and are ended now. */
  readonly endedSessions: readonly string[];
}

/**
 * Takes the card from whichever session holds it: one transaction claims it for a throw-away
 * admin session (bumping the session epoch, ending the card's other sessions and announcing the
 * claim), ends that session at once and appends the audit entry. The old holder's next write is
 * refused (`ERR_CARD_TAKEN_OVER`); a live server learns of it from the claim announcement.
 */
export async function forceLogout(options: {
  storage: Storage;
  cardId: string;
  actor?: string;
}): Promise<ForcedLogout> {
  const { storage, cardId } = options;
  const sessionId = FORCE_LOGOUT_SESSION_PREFIX + randomUUID();
  return storage.transaction(async (tx) => {
    // The card's row first (the lock order of storage.ts), so the sessions read next are exactly
    // the ones the claim ends.
    if (!(await lockCardRow(tx, cardId))) throw new CardNotFoundError(cardId);
    const endedSessions = await listLiveSessionIds(tx, cardId);
    const epoch = await claimCard(tx, { cardId, sessionId });
    await endSession(tx, sessionId);
    await appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.forcedLogout,
      cardId,
      details: { epoch, endedSessions, adminSessionId: sessionId },
    });
    return { cardId, epoch, endedSessions };
  });
}

/** Sessions not ended (`sessions.ended_at` null), optionally of one card; audited. */
export async function listLiveSessions(options: {
  storage: Storage;
  cardId?: string;
  actor?: string;
}): Promise<LiveSession[]> {
  const { storage } = options;
  const sessions = await listSessionsNotEnded(
    storage,
    options.cardId !== undefined ? { cardId: options.cardId } : {},
  );
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.sessionsListed,
      details: {
        count: sessions.length,
        ...(options.cardId !== undefined ? { cardId: options.cardId } : {}),
      },
    }),
  );
  return sessions;
}
