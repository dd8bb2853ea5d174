/**
 * Card handling for established sessions: LIST_CARDS, OPEN_CARD (claiming the card), APDU dispatch
 * with exactly-once commands, GET_SNAPSHOT, CLOSE_CARD and one-device-per-card takeover.
 *
 * Takeover: OPEN_CARD claims the card (a new session epoch, in the same transaction as its audit
 * entry). The previous holder learns of it at once when it is in this process, else from the
 * storage's claim announcement (PostgreSQL NOTIFY across server processes), and at the latest from
 * its next write, which the epoch fence refuses.
 *
 * Changes: an administrator's enrollment replaces the card's keys and objects without taking the
 * card (`lockCardForChange`: a `changed` announcement). The holder here then reloads the card
 * under a new epoch of its own claim and pushes CARD_CHANGED `updated`, so the daemon fetches
 * the new snapshot at once. Requests on the handle wait for the reload.
 *
 * Before the claim, OPEN_CARD may change the card itself, with the names of the session's token:
 * renewal at sign-in (profile `renewal.atSignIn`) and short-lived 9A (`shortLived9AHours`).
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import { PivCard, buildSnapshot, encodeSnapshot } from '../../apdu/piv/index.js';
import type { Logger } from '../../protocol/log.js';
import { FRAME_FLAG, type Frame, type FrameOf } from '../../protocol/wire/frames.js';
import { signSnapshot } from '../../protocol/wire/snapshot-signature.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { CRL_NOT_RESIGNED, type CrlError } from '../ca/crl.js';
import { CardStateClosedError } from '../cards/errors.js';
import { openPersistentCardState, type PersistentCardState } from '../cards/persistent-card-state.js';
import type { ServerConfig } from '../config/server-config.js';
import type { KekProvider } from '../keys/kek-provider.js';
import {
  ADMIN_CLAIM_PREFIX,
  claimCard,
  endSession,
  findClaim,
  listCardsWithClaim,
  reclaimCard,
} from '../storage/card-sessions.js';
import { findCardOfUser, getCard } from '../storage/cards.js';
import { enrollCard } from '../admin/enroll.js';
import { parseCardProfile, type CardProfile } from '../admin/profile.js';
import { renewalDueSince, renewCard, renewedSlots } from '../admin/renew.js';
import { CardlinkError } from '../../protocol/errors.js';
import { CardTakenOverError } from '../storage/errors.js';
import type { Storage } from '../storage/storage.js';
import type { LogicalSession, OpenCard } from './logical-session.js';
import { CardTakenOverRequestError, encodeAnswer, RequestError } from './request-errors.js';

/** Enrollment failures an ENROLL answers with their own code and message (not ERR_INTERNAL). */
const ENROLLMENT_REFUSALS = new Set<string>(['ERR_CA_MISSING', 'ERR_ENROLLMENT', 'ERR_CONFIG_INVALID']);

/** The names certificate templates get from a session: its token's, `name` defaulting to `preferred_username`. */
function templateClaims(session: LogicalSession): Record<string, string> {
  const token = session.tokenClaims;
  const name = token.name ?? token.preferred_username;
  return { ...token, ...(name ? { name } : {}) };
}

/**
 * How long a card whose renewal at sign-in failed is left alone before a sign-in tries again. A
 * failure that lasts (no CA, a claim the template needs, the retired slots full) would otherwise
 * cost a key generation and CA signatures at every OPEN_CARD; `renew --due` is not held back. Kept
 * per server process, in memory: a restart or another server node tries again at once.
 */
export const RENEWAL_RETRY_AFTER_MS = 60 * 60 * 1000;

/** Device name shown for a claim made by an administrator (`cardlink admin force-logout`). */
export const ADMIN_CLAIMER_NAME = 'administrator';

/** The name shown for a claim: its device's, or the administrator's for `cardlink admin force-logout`. */
function claimDeviceName(claimId: string, deviceName: string | null): string {
  return deviceName ?? (claimId.startsWith(ADMIN_CLAIM_PREFIX) ? ADMIN_CLAIMER_NAME : '');
}

export interface CardHandlingOptions {
  readonly config: ServerConfig;
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly logger: Logger;
  /** The key of the server's TLS certificate: signs card snapshots (protocol/wire/snapshot-signature.ts). */
  readonly snapshotKey: KeyObject;
}

export class CardHandling {
  /** Cards open in this process, by card id: who holds each. */
  private readonly held = new Map<string, { session: LogicalSession; open: OpenCard }>();
  /** When renewal at sign-in last failed, by card id (RENEWAL_RETRY_AFTER_MS). */
  private readonly failedRenewals = new Map<string, number>();
  private unsubscribe: (() => Promise<void>) | undefined;

  constructor(private readonly options: CardHandlingOptions) {}

  /** Listens for claims made by other server processes, so their holders here learn at once. */
  async start(): Promise<void> {
    this.unsubscribe = await this.options.storage.onCardClaimed((event) => {
      const holder = this.held.get(event.cardId);
      if (holder && event.changed) {
        void this.reload(holder.session, holder.open, event.epoch);
      } else if (holder && event.epoch > holder.open.epoch) {
        void this.claimerName(event.cardId, event.epoch).then((name) =>
          this.takeOver(holder.session, holder.open, name),
        );
      }
    });
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
  }

  private get log(): Logger {
    return this.options.logger;
  }

  private encodeAnswer(frame: Frame): Uint8Array {
    return encodeAnswer(frame, this.options.config.limits.maxFrameBytes);
  }

  /** CLOSE_CARD. */
  async closeHandle(session: LogicalSession, frame: FrameOf<'CLOSE_CARD'>): Promise<Frame> {
    const open = session.cards.get(frame.handle);
    if (!open)
      throw new RequestError('ERR_HANDLE_UNKNOWN', 'no card is open under this handle', {
        handle: frame.handle,
      });
    await this.closeCard(session, open);
    return { type: 'CARD_CLOSED', id: frame.id, flags: 0, handle: frame.handle };
  }

  /** GET_SNAPSHOT: between commands, so a snapshot never sees half of one (and never runs inside it). */
  async snapshot(session: LogicalSession, frame: FrameOf<'GET_SNAPSHOT'>): Promise<Frame> {
    await session.cards.get(frame.handle)?.reloading;
    const open = this.usableCard(session, frame.handle);
    const snapshot = encodeSnapshot(await open.state.exclusive(buildSnapshot));
    return {
      type: 'SNAPSHOT',
      id: frame.id,
      flags: 0,
      handle: frame.handle,
      snapshot,
      snapshotSignature: this.signedFor(session, open.cardId, snapshot),
    };
  }

  /**
   * ENROLL: self-service enrollment of the open card (docs/personalization.md), when its profile
   * allows it. The names come from the session's validated access token and the server's user
   * record, never from the client. The enrollment's change announcement reloads the card here
   * and pushes CARD_CHANGED, as for an administrator's enrollment.
   */
  async enroll(session: LogicalSession, frame: FrameOf<'ENROLL'>): Promise<Frame> {
    await session.cards.get(frame.handle)?.reloading;
    const open = this.usableCard(session, frame.handle);
    const { storage, kek } = this.options;
    const record = await getCard(storage, open.cardId);
    const profile = parseCardProfile(record.profile, 'stored');
    if (!profile.selfServiceEnrollment) {
      throw new RequestError(
        'ERR_ENROLLMENT_NOT_ALLOWED',
        `the card's profile (${profile.name}) does not allow self-service enrollment; ask an administrator`,
      );
    }
    const claims = templateClaims(session);
    let slots: number;
    try {
      const enrolled = await enrollCard({
        storage,
        kek,
        cardId: open.cardId,
        claims,
        actor: `user:${session.user.id}`,
        recoveryCertificate: this.options.config.keyArchival.recoveryCertificate,
      });
      slots = enrolled.slots.length;
      this.logCrlError(enrolled.crlError, 'card enrolled by its user', session, open.cardId);
    } catch (error) {
      // What the user can act on (no CA yet, a claim the template needs is missing) is said as is.
      if (error instanceof CardlinkError && ENROLLMENT_REFUSALS.has(error.code))
        throw new RequestError(error.code, error.message);
      // Said without the server's file names; the server's log has the whole message.
      if (error instanceof CardlinkError && error.code === 'ERR_KEY_ARCHIVAL') {
        this.log.warn('self-service enrollment refused: key archival impossible', {
          session: session.id,
          card: open.cardId,
          error: error.message,
        });
        throw new RequestError(
          error.code,
          "the card's profile requires key archival and the card server cannot archive keys now; ask an administrator",
        );
      }
      throw error;
    }
    this.log.info('card enrolled by its user', {
      session: session.id,
      card: open.cardId,
      certificates: slots,
    });
    return { type: 'ENROLLED', id: frame.id, flags: 0, handle: frame.handle, certificates: slots };
  }

  /**
   * Short-lived 9A (profile `shortLived9AHours`): at each OPEN_CARD, before the claim (whose epoch
   * the enrollment would otherwise fence off), a new 9A key and a certificate valid that many
   * hours, with the names of the session's token. A failure (no CA, a missing claim) is logged
   * and the card opens with the certificate it has, which expires on its own.
   */
  private async shortLived9A(session: LogicalSession, cardId: string, profile: CardProfile): Promise<void> {
    const { storage, kek } = this.options;
    const hours = profile.shortLived9AHours;
    if (hours === undefined) return;
    try {
      const enrolled = await enrollCard({
        storage,
        kek,
        cardId,
        claims: templateClaims(session),
        actor: `user:${session.user.id}`,
        slots: [0x9a],
        validityHours: hours,
      });
      this.logCrlError(enrolled.crlError, 'short-lived 9A certificate issued', session, cardId);
      this.log.info('short-lived 9A certificate issued', {
        session: session.id,
        card: cardId,
        serial: enrolled.slots[0]?.serial ?? '',
        notAfter: enrolled.slots[0]?.notAfter ?? '',
      });
    } catch (error) {
      this.log.warn('short-lived 9A certificate not issued; the card keeps its certificate', {
        session: session.id,
        card: cardId,
        code: error instanceof CardlinkError ? error.code : 'ERR_INTERNAL',
        error: (error as Error).message,
      });
    }
  }

  /**
   * Renewal at sign-in (profile `renewal.atSignIn`): at OPEN_CARD, before the claim (as for
   * short-lived 9A), a card inside its renewal window is renewed from the embedded CA by the same
   * renewCard as `cardlink admin renew` (the profile's key policy; with new keys the old 9D goes to
   * a retired slot with Key History), the names from the session's token overriding those read
   * back from the certificates. Audited as `card.renewed` with the user as actor. A holder of the
   * card in another session gets CARD_CHANGED from the change's announcement. A failure (no CA, a
   * claim missing, the retired slots full) is logged and the card opens with what it has; sign-ins
   * try again after RENEWAL_RETRY_AFTER_MS, `renew --due` at its next run.
   *
   * Two OPEN_CARDs of one card at once may both find it due: the renewal checks again under the
   * card's lock (renew.ts `onlyIfDueAt`), and the one that comes second writes nothing
   * (ERR_CARD_CHANGED_MEANWHILE): the card was renewed, by the other one.
   */
  private async renewAtSignIn(session: LogicalSession, cardId: string, profile: CardProfile): Promise<void> {
    if (!profile.renewal.atSignIn) return;
    const { storage, kek } = this.options;
    const failedAt = this.failedRenewals.get(cardId);
    if (failedAt !== undefined && Date.now() - failedAt < RENEWAL_RETRY_AFTER_MS) return;
    try {
      const now = new Date();
      const firstNotAfter = await renewalDueSince(storage, cardId, profile, now);
      if (firstNotAfter === undefined) return;
      const renewed = await renewCard({
        storage,
        kek,
        cardId,
        claims: templateClaims(session),
        actor: `user:${session.user.id}`,
        slots: renewedSlots(profile),
        auditDetails: { trigger: 'sign-in', session: session.id },
        recoveryCertificate: this.options.config.keyArchival.recoveryCertificate,
        onlyIfDueAt: now,
      });
      this.failedRenewals.delete(cardId);
      this.logCrlError(renewed.crlError, 'certificates renewed at sign-in', session, cardId);
      this.log.info('certificates renewed at sign-in', {
        session: session.id,
        card: cardId,
        keys: renewed.keys,
        certificates: renewed.slots.length,
        firstNotAfter,
        ...(renewed.retired ? { retiredTo: `0x${renewed.retired.slot.toString(16)}` } : {}),
      });
    } catch (error) {
      if (error instanceof CardlinkError && error.code === 'ERR_CARD_CHANGED_MEANWHILE') {
        this.log.info('certificates already renewed meanwhile (another sign-in or renewal)', {
          session: session.id,
          card: cardId,
        });
        return;
      }
      this.rememberFailedRenewal(cardId);
      this.log.warn('certificates not renewed at sign-in; the card keeps its certificates', {
        session: session.id,
        card: cardId,
        code: error instanceof CardlinkError ? error.code : 'ERR_INTERNAL',
        error: (error as Error).message,
        retryAfterMinutes: RENEWAL_RETRY_AFTER_MS / 60_000,
      });
    }
  }

  private rememberFailedRenewal(cardId: string): void {
    const now = Date.now();
    // Entries past their time are dropped here, so the map holds only cards failing this hour.
    for (const [id, at] of this.failedRenewals)
      if (now - at >= RENEWAL_RETRY_AFTER_MS) this.failedRenewals.delete(id);
    this.failedRenewals.set(cardId, now);
  }

  /** The change committed but its CRL was not signed (enroll.ts `crlError`): said, not failed. */
  private logCrlError(
    crlError: CrlError | undefined,
    what: string,
    session: LogicalSession,
    cardId: string,
  ): void {
    if (!crlError) return;
    this.log.warn(`${what}; ${CRL_NOT_RESIGNED}`, {
      session: session.id,
      card: cardId,
      code: crlError.code,
      error: crlError.message,
    });
  }

  /** Closes every card of an ending session. */
  async closeAll(session: LogicalSession): Promise<void> {
    for (const open of [...session.cards.values()]) await this.closeCard(session, open);
  }

  /** LIST_CARDS: the user's cards, each with the device that has it open. */
  async listCards(session: LogicalSession, frame: FrameOf<'LIST_CARDS'>): Promise<Frame> {
    const rows = await listCardsWithClaim(this.options.storage, session.user.id);
    const cards = rows.map((r) => ({
      cardId: r.cardId,
      label: r.label,
      openOn: r.claimId ? claimDeviceName(r.claimId, r.deviceName) : '',
    }));
    return { type: 'CARDS', id: frame.id, flags: 0, cards };
  }

  /** Name of the device holding an open claim, '' when the claim has ended. */
  private async holderName(claimId: string): Promise<string> {
    const claim = await findClaim(this.options.storage, { claimId });
    return claim && claim.endedAt === null ? claimDeviceName(claim.id, claim.deviceName) : '';
  }

  /** Name of the device whose claim made `epoch`. */
  private async claimerName(cardId: string, epoch: number): Promise<string> {
    try {
      const claim = await findClaim(this.options.storage, { cardId, epoch });
      return (claim && claimDeviceName(claim.id, claim.deviceName)) || 'another device';
    } catch {
      return 'another device';
    }
  }

  /** OPEN_CARD: claims the card for this session's device (takeOver logs the other one out). */
  async openCard(session: LogicalSession, frame: FrameOf<'OPEN_CARD'>): Promise<Frame> {
    const { storage, kek } = this.options;
    if (session.device.status !== 'approved') {
      throw new RequestError('ERR_DEVICE_PENDING', 'this device waits for an administrator to approve it');
    }
    // One lookup scoped to the user: another user's card and no card at all answer the same,
    // through the same work, so neither the answer nor its timing tells them apart.
    const record = await findCardOfUser(storage, frame.cardId, session.user.id);
    if (!record) throw new RequestError('ERR_CARD_NOT_FOUND', 'no such card');
    for (const open of session.cards.values()) {
      if (open.cardId === frame.cardId && !open.takenOverBy) {
        throw new RequestError('ERR_CARD_BUSY', 'this session has the card open already', {
          handle: open.handle,
        });
      }
    }
    if (!frame.takeOver && record.sessionId && (await this.holderName(record.sessionId)) !== '') {
      throw new RequestError(
        'ERR_CARD_BUSY',
        'the card is open on another device; open it with takeOver to log that one out',
      );
    }
    // Renewal first: it leaves a short-lived 9A to shortLived9A, which re-issues it just after.
    const profile = parseCardProfile((await getCard(storage, frame.cardId)).profile, 'stored');
    await this.renewAtSignIn(session, frame.cardId, profile);
    await this.shortLived9A(session, frame.cardId, profile);
    const claimId = randomUUID();
    const epoch = await storage.transaction(async (tx) => {
      const previous = record.sessionId;
      const newEpoch = await claimCard(tx, {
        cardId: frame.cardId,
        sessionId: claimId,
        userId: session.user.id,
        deviceId: session.device.id,
      });
      await appendAudit(tx, {
        actor: `device:${session.device.id}`,
        eventType: AUDIT_EVENTS.cardClaimed,
        cardId: frame.cardId,
        details: {
          session: session.id,
          claim: claimId,
          epoch: newEpoch,
          ...(previous ? { previousClaim: previous } : {}),
        },
      });
      return newEpoch;
    });
    // The holder in this process is told at once; others through the claim announcement.
    const local = this.held.get(frame.cardId);
    if (local) this.takeOver(local.session, local.open, session.device.name);
    let state: PersistentCardState | undefined;
    try {
      state = await openPersistentCardState({
        storage,
        kek,
        cardId: frame.cardId,
        sessionId: claimId,
        epoch,
        actor: `device:${session.device.id}`,
        recoveryCertificate: this.options.config.keyArchival.recoveryCertificate,
      });
      const handle = session.allocateHandle();
      const snapshot = encodeSnapshot(await buildSnapshot(state));
      const answer: Frame = {
        type: 'CARD_OPENED',
        id: frame.id,
        flags: 0,
        cardId: frame.cardId,
        handle,
        snapshot,
        snapshotSignature: this.signedFor(session, frame.cardId, snapshot),
      };
      // The session holds the card only once the answer is known to encode, and only if it still lives.
      this.encodeAnswer(answer);
      if (session.ended)
        throw new RequestError('ERR_SESSION_LOST', 'the session ended while the card opened');
      const open: OpenCard = {
        handle,
        cardId: frame.cardId,
        claimId,
        epoch,
        state,
        card: new PivCard(state),
      };
      session.cards.set(handle, open);
      this.held.set(frame.cardId, { session, open });
      this.log.info('card opened', { session: session.id, card: frame.cardId, handle, epoch });
      return answer;
    } catch (error) {
      // The claim is released: the card is free again rather than shown as open on this device.
      state?.dispose();
      await this.endClaim(frame.cardId, claimId);
      throw error;
    }
  }

  private signedFor(session: LogicalSession, cardId: string, snapshot: Uint8Array): Uint8Array {
    return signSnapshot(this.options.snapshotKey, { sessionId: session.id, cardId, snapshot });
  }

  /** The open card under `handle`, refusing a handle that is unknown or taken over. */
  private usableCard(session: LogicalSession, handle: number): OpenCard {
    const open = session.cards.get(handle);
    if (!open) throw new RequestError('ERR_HANDLE_UNKNOWN', 'no card is open under this handle', { handle });
    if (open.takenOverBy !== undefined) throw new CardTakenOverRequestError(open.takenOverBy);
    return open;
  }

  /** APDU: one command on an open card, exactly once. */
  async apdu(session: LogicalSession, frame: FrameOf<'APDU'>, changedBefore = false): Promise<Frame> {
    await session.cards.get(frame.handle)?.reloading;
    const open = this.usableCard(session, frame.handle);
    // The daemon answered a reset locally; the card forgets its volatile state before this command.
    if ((frame.flags & FRAME_FLAG.RESET_CARD) !== 0) open.card.reset();
    const epoch = open.epoch;
    try {
      // A request that is not a retransmission is new (answer() enforces the sequence): no
      // recorded response to look for.
      const firstAttempt = (frame.flags & FRAME_FLAG.RETRANSMIT) === 0;
      const outcome = await open.state.runCommand(
        frame.id,
        (view) => open.card.transmit(frame.command, view),
        {
          firstAttempt,
        },
      );
      return {
        type: 'APDU_RESULT',
        id: frame.id,
        flags: 0,
        handle: frame.handle,
        response: outcome.response,
      };
    } catch (error) {
      if (
        (error instanceof CardTakenOverError || error instanceof CardStateClosedError) &&
        !changedBefore &&
        open.takenOverBy === undefined &&
        (await this.changedUnder(session, open, epoch))
      ) {
        // An administrator changed the card under this command (its write was refused, nothing
        // of it applied): run it once more on the reloaded card.
        return this.apdu(session, frame, true);
      }
      if (error instanceof CardTakenOverError || error instanceof CardStateClosedError) {
        const name = await this.claimerName(open.cardId, open.epoch + 1);
        this.takeOver(session, open, open.takenOverBy ?? name);
        throw new CardTakenOverRequestError(open.takenOverBy ?? name);
      }
      throw error;
    }
  }

  /**
   * Whether the card was changed rather than taken while a command of `open` ran under `epoch`:
   * it has been (or is being) reloaded, or this claim still holds the card (the change's
   * announcement has not arrived yet: reload now).
   */
  private async changedUnder(session: LogicalSession, open: OpenCard, epoch: number): Promise<boolean> {
    if (open.reloading || open.epoch !== epoch) {
      await open.reloading;
      return open.takenOverBy === undefined;
    }
    const record = await findCardOfUser(this.options.storage, open.cardId, session.user.id).catch(
      () => undefined,
    );
    if (record?.sessionId !== open.claimId) return false;
    await this.reload(session, open, epoch + 1);
    return open.takenOverBy === undefined && open.epoch !== epoch;
  }

  /**
   * An administrator changed the card (`changed` announcement of `epoch`): reload it under a new
   * epoch of the same claim and push CARD_CHANGED `updated`. Reloads queue one after the other; a
   * reload already past `epoch` covers it. If someone claimed the card meanwhile, it is a takeover.
   */
  private reload(session: LogicalSession, open: OpenCard, epoch: number): Promise<void> {
    const run = (open.reloading ?? Promise.resolve()).then(async () => {
      if (open.takenOverBy !== undefined || open.epoch >= epoch) return;
      const { storage, kek } = this.options;
      let state: PersistentCardState | undefined;
      try {
        const newEpoch = await storage.transaction((tx) => reclaimCard(tx, open.cardId, open.claimId));
        if (newEpoch === undefined) {
          this.takeOver(session, open, await this.claimerName(open.cardId, epoch));
          return;
        }
        state = await openPersistentCardState({
          storage,
          kek,
          cardId: open.cardId,
          sessionId: open.claimId,
          epoch: newEpoch,
          actor: `device:${session.device.id}`,
          recoveryCertificate: this.options.config.keyArchival.recoveryCertificate,
        });
        if (open.takenOverBy !== undefined || session.ended) {
          state.dispose();
          return;
        }
        const old = open.state;
        open.state = state;
        open.card = new PivCard(state);
        open.epoch = newEpoch;
        old.dispose();
      } catch (error) {
        // The card cannot be used under the old keys, nor under the new ones: drop it, as after a
        // takeover, so the daemon takes it out rather than answering from a stale snapshot.
        state?.dispose();
        this.log.warn('could not reload a changed card', {
          session: session.id,
          card: open.cardId,
          error: (error as Error).message,
        });
        this.takeOver(session, open, ADMIN_CLAIMER_NAME);
        return;
      }
      this.log.info('card changed: reloaded', { session: session.id, card: open.cardId, epoch: open.epoch });
      session.push({ type: 'CARD_CHANGED', id: 0, flags: 0, cardId: open.cardId, change: 'updated' });
    });
    open.reloading = run;
    void run.finally(() => {
      if (open.reloading === run) delete open.reloading;
    });
    return run;
  }

  /** Another device claimed `open`: drop its keys, refuse its handle, tell its session. */
  private takeOver(session: LogicalSession, open: OpenCard, byDeviceName: string): void {
    if (open.takenOverBy !== undefined) return;
    open.takenOverBy = byDeviceName;
    open.state.dispose();
    const holder = this.held.get(open.cardId);
    if (holder?.open === open) this.held.delete(open.cardId);
    this.log.info('card taken over', { session: session.id, card: open.cardId, handle: open.handle });
    session.push({
      type: 'TAKEN_OVER',
      id: 0,
      flags: 0,
      cardId: open.cardId,
      handle: open.handle,
      byDeviceName,
    });
  }

  private async closeCard(session: LogicalSession, open: OpenCard): Promise<void> {
    session.cards.delete(open.handle);
    open.state.dispose();
    const holder = this.held.get(open.cardId);
    if (holder?.open === open) this.held.delete(open.cardId);
    if (open.takenOverBy !== undefined) return;
    await this.endClaim(open.cardId, open.claimId);
  }

  /** Records the end of a claim (a `sessions` row); a failure is logged, the claim ends anyway in memory. */
  private async endClaim(cardId: string, claimId: string): Promise<void> {
    try {
      await this.options.storage.transaction((tx) => endSession(tx, claimId));
    } catch (error) {
      this.log.warn('could not record the end of a card session', {
        card: cardId,
        error: (error as Error).message,
      });
    }
  }
}
