/**
 * The card server's session logic, independent of the socket: authentication (token + device
 * proof), device registration, resumption, the request handlers (LIST_CARDS, OPEN_CARD, APDU,
 * ...) and one-device-per-card takeover. connection.ts feeds it decoded frames.
 *
 * Takeover: OPEN_CARD claims the card (a new session epoch, in the same transaction as its audit
 * entry). The previous holder learns of it at once when it is in this process, else from the
 * storage's claim announcement (PostgreSQL NOTIFY across server processes), and at the latest from
 * its next write, which the epoch fence refuses.
 */
import { randomUUID, type KeyObject } from 'node:crypto';
import { PivCard } from '../../apdu/piv/piv-card.js';
import { buildSnapshot, encodeSnapshot } from '../../apdu/piv/snapshot.js';
import { signSnapshot } from '../../protocol/wire/snapshot-signature.js';
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { LogRateLimiter } from '../../protocol/log-limiter.js';
import { encodeFrame } from '../../protocol/wire/frame-codec.js';
import { FRAME_FLAG, type Frame, type FrameOf } from '../../protocol/wire/frames.js';
import { secretHash } from '../../protocol/wire/device-proof.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { verifyDeviceProof } from '../auth/device-proof.js';
import { AuthThrottledError, DeviceProofError, TokenRejectedError } from '../auth/errors.js';
import { addressThrottleKey, FailureThrottle } from '../auth/failure-throttle.js';
import type { TokenValidator } from '../auth/token-validator.js';
import type { ValidatedToken } from '../auth/types.js';
import { CardStateClosedError } from '../cards/errors.js';
import { openPersistentCardState, type PersistentCardState } from '../cards/persistent-card-state.js';
import type { ServerConfig } from '../config/server-config.js';
import type { KekProvider } from '../keys/kek-provider.js';
import {
  claimCard,
  endSession,
  acknowledgeCommands,
  findClaim,
  listCardsWithClaim,
} from '../storage/card-sessions.js';
import { findCardOfUser } from '../storage/cards.js';
import { CardTakenOverError } from '../storage/errors.js';
import {
  createTenant,
  ensureUser,
  findDeviceByThumbprint,
  findTenant,
  listDevices,
  approveDevice,
  registerDevice,
} from '../storage/identities.js';
import type { Storage } from '../storage/storage.js';
import {
  LogicalSession,
  newResumeToken,
  type FrameSink,
  type OpenCard,
  type SessionDevice,
} from './logical-session.js';

/** Longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Device name shown for a claim made by an administrator (`cardlink admin force-logout`). */
export const ADMIN_CLAIMER_NAME = 'administrator';

/** The name shown for a claim: its device's, or the administrator's for `cardlink admin force-logout`. */
function claimDeviceName(claimId: string, deviceName: string | null): string {
  return deviceName ?? (claimId.startsWith('admin:') ? ADMIN_CLAIMER_NAME : '');
}

/** A request refused with an ERROR frame; the connection stays open. */
export class RequestError extends CardlinkError {
  constructor(
    code: CardlinkErrorCode,
    message: string,
    context: Record<string, string | number | boolean> = {},
  ) {
    super(code, message, context);
    this.name = 'RequestError';
  }
}

/** ERR_CARD_TAKEN_OVER for a request on a handle another device took; names it in the ERROR frame. */
export class CardTakenOverRequestError extends RequestError {
  constructor(readonly byDeviceName: string) {
    super('ERR_CARD_TAKEN_OVER', `the card was taken over by ${byDeviceName}`);
    this.name = 'CardTakenOverRequestError';
  }
}

export interface SessionServiceOptions {
  readonly config: ServerConfig;
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly validator: TokenValidator;
  readonly logger: Logger;
  /** The session endpoint's URL as clients reach it (`wss://host:port/v1/session`): signed by device proofs. */
  readonly sessionUrl: string;
  /** The key of the server's TLS certificate: signs card snapshots (protocol/wire/snapshot-signature.ts). */
  readonly snapshotKey: KeyObject;
}

/**
 * A session that passed AUTH or RESUME, with its answer already encoded. Nothing of it is committed
 * (registered, timers armed, resume token replaced) until `SessionService.establish`, so an answer
 * that cannot be sent leaves no session behind.
 */
export interface PendingSession {
  readonly session: LogicalSession;
  /** AUTH_OK or RESUME_OK, encoded: known to fit. */
  readonly answer: Uint8Array;
  /** What establish() commits. */
  readonly commit: () => void;
}

/** Lines of one repeated log message are counted per this interval (`limits.logRepeatsPerMinute`). */
const LOG_REPEAT_INTERVAL_MS = 60_000;

/** Failures the sign-in throttles count: a refused token, device proof or resume. */
function isSignInFailure(error: unknown): boolean {
  return (
    error instanceof TokenRejectedError ||
    (error instanceof CardlinkError &&
      (error.code === 'ERR_DEVICE_PROOF_INVALID' || error.code === 'ERR_RESUME_REJECTED'))
  );
}

const isDeviceProofFailure = (error: unknown): boolean =>
  error instanceof CardlinkError && error.code === 'ERR_DEVICE_PROOF_INVALID';

/** The per-user throttle's key: (issuer, subject), unambiguous whatever either holds. */
const userThrottleKey = (user: { issuer: string; subject: string }): string =>
  JSON.stringify([user.issuer, user.subject]);

/** Unix seconds, as the protocol's u32 times carry them. */
const unixSeconds = (date: Date): number => Math.floor(date.getTime() / 1000);

const errorFrame = (id: number, code: string, message: string): Frame => ({
  type: 'ERROR',
  id,
  flags: 0,
  code,
  message,
});

export class SessionService {
  private readonly sessions = new Map<string, LogicalSession>();
  /** Cards open in this process, by card id: who holds each. */
  private readonly held = new Map<string, { session: LogicalSession; open: OpenCard }>();
  private unsubscribe: (() => Promise<void>) | undefined;
  /** Failed sign-ins per source address (an IPv6 /64 counts as one). */
  private readonly addressThrottle: FailureThrottle;
  /** Failed device proofs per user (issuer, subject) with a valid token. */
  private readonly userThrottle: FailureThrottle;
  /** For lines a peer can make us write once per attempt (refusals, closed connections). */
  readonly repeatedLog: LogRateLimiter;

  constructor(private readonly options: SessionServiceOptions) {
    const { limits } = options.config;
    const throttleLimits = {
      freeFailures: limits.authFreeFailures,
      maxDelaySeconds: limits.authThrottleMaxSeconds,
      halfLifeSeconds: limits.authFailureHalfLifeSeconds,
      maxEntries: limits.authThrottleMaxEntries,
    };
    this.addressThrottle = new FailureThrottle(throttleLimits);
    this.userThrottle = new FailureThrottle(throttleLimits);
    this.repeatedLog = new LogRateLimiter(options.logger, {
      lines: limits.logRepeatsPerMinute,
      intervalMs: LOG_REPEAT_INTERVAL_MS,
    });
  }

  async start(): Promise<void> {
    this.unsubscribe = await this.options.storage.onCardClaimed((event) => {
      const holder = this.held.get(event.cardId);
      if (holder && event.epoch > holder.open.epoch) {
        void this.claimerName(event.cardId, event.epoch).then((name) =>
          this.takeOver(holder.session, holder.open, name),
        );
      }
    });
  }

  async stop(): Promise<void> {
    await this.unsubscribe?.();
    for (const session of [...this.sessions.values()]) await this.endSession(session, 'server stopping');
    this.repeatedLog.flush();
  }

  get liveSessions(): number {
    return this.sessions.size;
  }

  private get log(): Logger {
    return this.options.logger;
  }

  // --- authentication -------------------------------------------------------------------------

  /**
   * AUTH: the token, the device proof over this connection's nonce, the device's registration.
   * Throttled per source address (`peerAddress`) and, for device proofs, per user: a source or user
   * with too many recent failures is refused with AuthThrottledError before any work is done.
   */
  async authenticate(
    frame: FrameOf<'AUTH'>,
    nonce: Uint8Array,
    protocolVersion: number,
    peerAddress: string,
  ): Promise<PendingSession> {
    const address = addressThrottleKey(peerAddress);
    const wait = this.addressThrottle.admit(address);
    if (wait > 0) throw new AuthThrottledError(wait, 'address');
    let user: string | undefined;
    let failure: unknown;
    try {
      const token = await this.options.validator.validate(frame.accessToken);
      const userKey = userThrottleKey(token);
      const userWait = this.userThrottle.admit(userKey);
      if (userWait > 0) throw new AuthThrottledError(userWait, 'user');
      user = userKey;
      const pending = await this.openSession(frame, nonce, protocolVersion, token);
      // The device proved itself: earlier failed proofs for this user were not an attack on it.
      this.userThrottle.forgive(userKey);
      return pending;
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      this.addressThrottle.finish(address, isSignInFailure(failure));
      if (user !== undefined) this.userThrottle.finish(user, isDeviceProofFailure(failure));
    }
  }

  /** The device proof and registration of an AUTH whose token is valid; AUTH_OK encoded. */
  private async openSession(
    frame: FrameOf<'AUTH'>,
    nonce: Uint8Array,
    protocolVersion: number,
    token: ValidatedToken,
  ): Promise<PendingSession> {
    const verified = verifyDeviceProof({
      purpose: 'auth',
      nonce,
      secretHash: token.tokenHash,
      serverUrl: this.options.sessionUrl,
      protocolVersion,
      publicKeySpki: frame.devicePublicKey,
      signature: frame.signature,
    });
    const { config, storage } = this.options;
    const sessionId = randomUUID();
    const resumeToken = newResumeToken();
    const { user, device, answer } = await storage.transaction(async (tx) => {
      if (!(await findTenant(tx, token.tenant))) await createTenant(tx, token.tenant, token.tenant);
      const userRow = await ensureUser(tx, token.tenant, token.issuer, token.subject);
      let deviceRow = await findDeviceByThumbprint(tx, verified.thumbprint);
      if (deviceRow && deviceRow.user_id !== userRow.id) {
        // One key, one user: a key registered to someone else proves nothing for this user.
        throw new DeviceProofError('bad_key', 'this device key is registered to another user');
      }
      if (!deviceRow) {
        const approve =
          config.deviceRegistration === 'automatic' ||
          (config.deviceRegistration === 'first-device' &&
            !(await listDevices(tx, userRow.id)).some((d) => d.status === 'approved'));
        deviceRow = await registerDevice(tx, {
          userId: userRow.id,
          publicKeySpki: frame.devicePublicKey,
          name: frame.deviceName,
        });
        if (approve) deviceRow = (await approveDevice(tx, deviceRow.id)) ?? deviceRow;
        await appendAudit(tx, {
          actor: `user:${userRow.id}`,
          eventType: AUDIT_EVENTS.deviceRegistered,
          details: {
            device: deviceRow.id,
            thumbprint: verified.thumbprint,
            status: deviceRow.status,
            policy: config.deviceRegistration,
          },
        });
      }
      await appendAudit(tx, {
        actor: `user:${userRow.id}`,
        eventType: AUDIT_EVENTS.sessionOpened,
        details: { device: deviceRow.id, deviceStatus: deviceRow.status },
      });
      // Encoded inside the transaction: an answer that cannot be sent registers no device and
      // records no session.
      const authOk = this.encodeAnswer({
        type: 'AUTH_OK',
        id: 0,
        flags: 0,
        userId: userRow.id,
        deviceId: deviceRow.id,
        deviceStatus: deviceRow.status,
        sessionId,
        resumeToken,
        tokenExpiresAt: unixSeconds(token.expiresAt),
      });
      return { user: userRow, device: deviceRow, answer: authOk };
    });
    const sessionDevice: SessionDevice = {
      id: device.id,
      name: device.name,
      status: device.status,
      publicKeySpki: frame.devicePublicKey,
      publicKey: verified.publicKey,
    };
    const session = new LogicalSession(
      sessionId,
      { id: user.id, tenantId: user.tenant_id, issuer: token.issuer, subject: token.subject },
      sessionDevice,
      token.expiresAt,
      config.limits.maxInFlight * 4,
    );
    session.adoptResumeToken(resumeToken);
    return {
      session,
      answer,
      commit: () => {
        this.sessions.set(session.id, session);
        this.armTokenTimers(session);
        this.log.info('session opened', {
          session: session.id,
          user: user.id,
          device: device.id,
          deviceStatus: device.status,
        });
      },
    };
  }

  /** RESUME: the resume token and a proof by the session's own device key; throttled like AUTH. */
  resume(
    frame: FrameOf<'RESUME'>,
    nonce: Uint8Array,
    protocolVersion: number,
    peerAddress: string,
  ): PendingSession {
    const address = addressThrottleKey(peerAddress);
    const wait = this.addressThrottle.admit(address);
    if (wait > 0) throw new AuthThrottledError(wait, 'address');
    let failure: unknown;
    try {
      return this.prepareResume(frame, nonce, protocolVersion);
    } catch (error) {
      failure = error;
      throw error;
    } finally {
      this.addressThrottle.finish(address, isSignInFailure(failure));
    }
  }

  private prepareResume(
    frame: FrameOf<'RESUME'>,
    nonce: Uint8Array,
    protocolVersion: number,
  ): PendingSession {
    const session = this.sessions.get(frame.sessionId);
    const refuse = (why: string): never => {
      throw new RequestError('ERR_RESUME_REJECTED', `the session cannot be resumed: ${why}`);
    };
    if (!session || session.ended) return refuse('no such session (it ended, or its grace period passed)');
    if (!session.resumeTokenMatches(frame.resumeToken)) return refuse('wrong resume token');
    // Whoever holds this session's resume token but not its device key is throttled as its user.
    const user = userThrottleKey(session.user);
    const userWait = this.userThrottle.admit(user);
    if (userWait > 0) throw new AuthThrottledError(userWait, 'user');
    let proofFailed = true;
    try {
      verifyDeviceProof({
        purpose: 'resume',
        nonce,
        secretHash: secretHash(frame.resumeToken),
        serverUrl: this.options.sessionUrl,
        protocolVersion,
        publicKeySpki: session.device.publicKeySpki,
        signature: frame.signature,
      });
      proofFailed = false;
    } finally {
      this.userThrottle.finish(user, proofFailed);
    }
    if (session.tokenExpiresAt.getTime() <= Date.now()) return refuse('the access token expired');
    const resumeToken = newResumeToken();
    const answer = this.encodeAnswer({
      type: 'RESUME_OK',
      id: 0,
      flags: 0,
      sessionId: session.id,
      resumeToken,
      lastReceivedSequence: session.lastReceived,
      tokenExpiresAt: unixSeconds(session.tokenExpiresAt),
    });
    return {
      session,
      answer,
      commit: () => {
        session.adoptResumeToken(resumeToken);
        clearTimeout(session.graceTimer);
        session.graceTimer = undefined;
        session.forgetUpTo(frame.lastAckedSequence);
        for (const open of session.cards.values()) {
          void this.options.storage
            .transaction((tx) => acknowledgeCommands(tx, open.claimId, frame.lastAckedSequence))
            .catch(() => undefined);
        }
      },
    };
  }

  /**
   * Commits a pending AUTH or RESUME and attaches `sink` (an older connection still attached is
   * closed with `closeStale`). The caller then sends `pending.answer`, then `flushMissedPushes`.
   * If anything here throws, the session is ended and forgotten before the error goes on.
   */
  establish(pending: PendingSession, sink: FrameSink, closeStale: (old: FrameSink) => void): void {
    const { session } = pending;
    try {
      if (session.ended)
        throw new CardlinkError('ERR_INTERNAL', 'the session ended before it was established');
      pending.commit();
      const old = session.connection;
      session.connection = sink;
      if (old && old !== sink) closeStale(old);
    } catch (error) {
      const other = session.connection;
      if (other && other !== sink) other.close(1011, 'server error');
      session.connection = undefined;
      void this.endSession(session, 'the session could not be established');
      throw error;
    }
  }

  /** Sends `sink` the TAKEN_OVER pushes that happened while no connection was attached. */
  flushMissedPushes(session: LogicalSession, sink: FrameSink): void {
    for (const push of session.missedPushes.splice(0)) sink.send(push);
  }

  /** `frame` encoded as the connection will send it; throws when it cannot be (too large, a field out of range). */
  private encodeAnswer(frame: Frame): Uint8Array {
    return encodeFrame(frame, { maxFrameBytes: this.options.config.limits.maxFrameBytes });
  }

  /** The connection went away: the session waits for a RESUME during the grace period. */
  detach(session: LogicalSession, sink: FrameSink): void {
    if (session.connection !== sink) return;
    session.connection = undefined;
    if (session.ended) return;
    const grace = this.options.config.limits.resumeGraceSeconds * 1000;
    session.graceTimer = setTimeout(() => void this.endSession(session, 'resume grace period passed'), grace);
    session.graceTimer.unref();
  }

  private armTokenTimers(session: LogicalSession): void {
    clearTimeout(session.warnTimer);
    clearTimeout(session.expireTimer);
    const left = session.tokenExpiresAt.getTime() - Date.now();
    const warnAt = left - this.options.config.limits.tokenWarningSeconds * 1000;
    // setTimeout fires at once for delays past 2^31-1 ms (24.8 days): such timers re-arm instead.
    if (Math.max(warnAt, left) > MAX_TIMER_MS) {
      session.expireTimer = setTimeout(() => this.armTokenTimers(session), MAX_TIMER_MS);
      session.expireTimer.unref();
      return;
    }
    session.warnTimer = setTimeout(
      () =>
        session.push({
          type: 'TOKEN_EXPIRING',
          id: 0,
          flags: 0,
          tokenExpiresAt: unixSeconds(session.tokenExpiresAt),
        }),
      Math.max(0, warnAt),
    );
    session.expireTimer = setTimeout(
      () => {
        session.connection?.close(4004, 'access token expired');
        void this.endSession(session, 'access token expired');
      },
      Math.max(0, left),
    );
    session.warnTimer.unref();
    session.expireTimer.unref();
  }

  /** Closes every card of the session and forgets it. */
  async endSession(session: LogicalSession, why: string): Promise<void> {
    if (session.ended) return;
    session.ended = true;
    session.clearTimers();
    this.sessions.delete(session.id);
    for (const open of [...session.cards.values()]) await this.closeCard(session, open);
    this.log.info('session ended', { session: session.id, reason: why });
  }

  // --- requests ---------------------------------------------------------------------------------

  /**
   * The answer to request `frame` of `session` (never rejects: failures are ERROR frames). A
   * retransmitted request gets the answer it had, and runs at most once.
   */
  answer(session: LogicalSession, frame: Frame): Promise<Frame> {
    const retransmit = (frame.flags & FRAME_FLAG.RETRANSMIT) !== 0;
    if (retransmit && frame.id <= session.lastReceived) {
      const earlier = session.answerFor(frame.id);
      if (earlier) return earlier;
      // Not kept in memory: run it again; a state-changing APDU answers its recorded response.
    } else if (frame.id !== session.lastReceived + 1) {
      throw new CardlinkError('ERR_PROTOCOL_STATE', 'request out of sequence', {
        expected: session.lastReceived + 1,
        got: frame.id,
      });
    } else {
      session.lastReceived = frame.id;
    }
    const answer = this.dispatch(session, frame).catch((error: unknown) => this.failure(frame, error));
    session.remember(frame.id, answer);
    return answer;
  }

  private failure(frame: Frame, error: unknown): Frame {
    if (error instanceof CardTakenOverRequestError) {
      const { code, message, byDeviceName } = error;
      return { type: 'ERROR', id: frame.id, flags: 0, code, message, byDeviceName };
    }
    if (error instanceof RequestError || error instanceof TokenRejectedError) {
      return errorFrame(frame.id, error.code, error.message);
    }
    if (error instanceof CardTakenOverError || error instanceof CardStateClosedError) {
      return errorFrame(frame.id, 'ERR_CARD_TAKEN_OVER', 'the card was taken over by another device');
    }
    const code = error instanceof CardlinkError ? error.code : 'ERR_INTERNAL';
    this.repeatedLog.log('error', 'request failed', {
      request: frame.type,
      id: frame.id,
      code,
      error: error instanceof Error ? error.message : String(error),
    });
    if (code === 'ERR_IDP_UNAVAILABLE') {
      return errorFrame(frame.id, code, 'the identity provider is unreachable; try again');
    }
    return errorFrame(frame.id, 'ERR_INTERNAL', 'internal error');
  }

  private async dispatch(session: LogicalSession, frame: Frame): Promise<Frame> {
    switch (frame.type) {
      case 'PING':
        return { type: 'PONG', id: frame.id, flags: 0 };
      case 'LIST_CARDS':
        return this.listCards(session, frame);
      case 'OPEN_CARD':
        return this.openCard(session, frame);
      case 'CLOSE_CARD': {
        const open = session.cards.get(frame.handle);
        if (!open)
          throw new RequestError('ERR_HANDLE_UNKNOWN', 'no card is open under this handle', {
            handle: frame.handle,
          });
        await this.closeCard(session, open);
        return { type: 'CARD_CLOSED', id: frame.id, flags: 0, handle: frame.handle };
      }
      case 'APDU':
        return this.apdu(session, frame);
      case 'GET_SNAPSHOT': {
        const open = this.usableCard(session, frame.handle);
        // Between commands: a snapshot never sees half of one (and never runs inside it).
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
      case 'RENEW_TOKEN':
        return this.renewToken(session, frame);
      default:
        throw new CardlinkError('ERR_PROTOCOL_STATE', `${frame.type} is not a request after authentication`);
    }
  }

  private async renewToken(session: LogicalSession, frame: FrameOf<'RENEW_TOKEN'>): Promise<Frame> {
    const token = await this.options.validator.validate(frame.accessToken);
    if (token.issuer !== session.user.issuer || token.subject !== session.user.subject) {
      throw new RequestError('ERR_AUTH_TOKEN_INVALID', 'the new token is for another user');
    }
    if (session.ended) throw new RequestError('ERR_AUTH_TOKEN_INVALID', 'the session has ended');
    const answer: Frame = {
      type: 'TOKEN_RENEWED',
      id: frame.id,
      flags: 0,
      tokenExpiresAt: unixSeconds(token.expiresAt),
    };
    // The session takes the new expiry only once the answer that reports it is known to encode.
    this.encodeAnswer(answer);
    session.tokenExpiresAt = token.expiresAt;
    this.armTokenTimers(session);
    return answer;
  }

  private async listCards(session: LogicalSession, frame: FrameOf<'LIST_CARDS'>): Promise<Frame> {
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

  private async openCard(session: LogicalSession, frame: FrameOf<'OPEN_CARD'>): Promise<Frame> {
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

  private async apdu(session: LogicalSession, frame: FrameOf<'APDU'>): Promise<Frame> {
    const open = this.usableCard(session, frame.handle);
    // The daemon answered a reset locally; the card forgets its volatile state before this command.
    if ((frame.flags & FRAME_FLAG.RESET_CARD) !== 0) open.card.reset();
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
      if (error instanceof CardTakenOverError || error instanceof CardStateClosedError) {
        const name = await this.claimerName(open.cardId, open.epoch + 1);
        this.takeOver(session, open, open.takenOverBy ?? name);
        throw new CardTakenOverRequestError(open.takenOverBy ?? name);
      }
      throw error;
    }
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
