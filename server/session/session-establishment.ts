/**
 * Session establishment: HELLO's successor AUTH (the token, the device proof over the connection's
 * nonce, the device's registration), RESUME on a new connection, the token's expiry timers and
 * RENEW_TOKEN, the resume grace period, and the end of a session. Failed sign-ins are throttled per
 * source address and, for device proofs, per user.
 *
 * All or nothing: AUTH and RESUME return a PendingSession whose answer is already encoded, and
 * nothing of the session is committed (registered, timers armed, resume token replaced) until
 * `establish`, so an answer that cannot be sent leaves no session behind (docs/protocol.md).
 */
import { randomUUID } from 'node:crypto';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { LogRateLimiter } from '../../protocol/log-limiter.js';
import type { Frame, FrameOf } from '../../protocol/wire/frames.js';
import { secretHash } from '../../protocol/wire/device-proof.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { verifyDeviceProof } from '../auth/device-proof.js';
import { AuthThrottledError, DeviceProofError, TokenRejectedError } from '../auth/errors.js';
import { addressThrottleKey, FailureThrottle } from '../auth/failure-throttle.js';
import type { TokenValidator } from '../auth/token-validator.js';
import type { ValidatedToken } from '../auth/types.js';
import type { ServerConfig } from '../config/server-config.js';
import { acknowledgeCommands } from '../storage/card-sessions.js';
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
import { LogicalSession, newResumeToken, type FrameSink, type SessionDevice } from './logical-session.js';
import { encodeAnswer, RequestError, unixSeconds } from './request-errors.js';

/** Longest delay setTimeout honours. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface SessionEstablishmentOptions {
  readonly config: ServerConfig;
  readonly storage: Storage;
  readonly validator: TokenValidator;
  readonly logger: Logger;
  /** The session endpoint's URL as clients reach it (`wss://host:port/v1/session`): signed by device proofs. */
  readonly sessionUrl: string;
  /** Closes the cards a session holds when it ends (card handling owns them). */
  readonly closeCards: (session: LogicalSession) => Promise<void>;
}

/**
 * A session that passed AUTH or RESUME, with its answer already encoded. Nothing of it is committed
 * (registered, timers armed, resume token replaced) until `SessionEstablishment.establish`, so an
 * answer that cannot be sent leaves no session behind.
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

export class SessionEstablishment {
  private readonly sessions = new Map<string, LogicalSession>();
  /** Failed sign-ins per source address (an IPv6 /64 counts as one). */
  private readonly addressThrottle: FailureThrottle;
  /** Failed device proofs per user (issuer, subject) with a valid token. */
  private readonly userThrottle: FailureThrottle;
  /** For lines a peer can make us write once per attempt (refusals, closed connections). */
  readonly repeatedLog: LogRateLimiter;

  constructor(private readonly options: SessionEstablishmentOptions) {
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

  /** Ends every session (server stopping) and writes what the log limiter still holds. */
  async stop(): Promise<void> {
    for (const session of [...this.sessions.values()]) await this.endSession(session, 'server stopping');
    this.repeatedLog.flush();
  }

  get liveSessions(): number {
    return this.sessions.size;
  }

  private get log(): Logger {
    return this.options.logger;
  }

  private encodeAnswer(frame: Frame): Uint8Array {
    return encodeAnswer(frame, this.options.config.limits.maxFrameBytes);
  }

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
      token.claims,
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
    await this.options.closeCards(session);
    this.log.info('session ended', { session: session.id, reason: why });
  }

  /** RENEW_TOKEN: a new access token for the same user moves the session's expiry. */
  async renewToken(session: LogicalSession, frame: FrameOf<'RENEW_TOKEN'>): Promise<Frame> {
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
    session.tokenClaims = token.claims;
    this.armTokenTimers(session);
    return answer;
  }
}
