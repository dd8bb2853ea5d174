/**
 * The card server's session logic, independent of the socket. connection.ts feeds it decoded
 * frames; it routes them to the two halves that do the work:
 * - session-establishment.ts: AUTH (token + device proof), RESUME, token timers and RENEW_TOKEN,
 *   the grace period, the failed sign-in throttle;
 * - card-handling.ts: LIST_CARDS, OPEN_CARD, APDU, GET_SNAPSHOT, CLOSE_CARD and takeover.
 * What stays here is the request sequence (exactly-once answers to retransmissions) and the
 * mapping of failures to ERROR frames.
 */
import type { KeyObject } from 'node:crypto';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import type { LogRateLimiter } from '../../protocol/log-limiter.js';
import { FRAME_FLAG, type Frame, type FrameOf } from '../../protocol/wire/frames.js';
import { TokenRejectedError } from '../auth/errors.js';
import type { TokenValidator } from '../auth/token-validator.js';
import { CardStateClosedError } from '../cards/errors.js';
import type { ServerConfig } from '../config/server-config.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { CardTakenOverError } from '../storage/errors.js';
import type { Storage } from '../storage/storage.js';
import { CardHandling } from './card-handling.js';
import type { FrameSink, LogicalSession } from './logical-session.js';
import { CardTakenOverRequestError, errorFrame, RequestError } from './request-errors.js';
import { SessionEstablishment, type PendingSession } from './session-establishment.js';

export { ADMIN_CLAIMER_NAME } from './card-handling.js';
export { CardTakenOverRequestError, RequestError } from './request-errors.js';
export type { PendingSession } from './session-establishment.js';

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

export class SessionService {
  private readonly cards: CardHandling;
  private readonly establishment: SessionEstablishment;

  constructor(options: SessionServiceOptions) {
    this.cards = new CardHandling(options);
    this.establishment = new SessionEstablishment({
      ...options,
      closeCards: (session) => this.cards.closeAll(session),
    });
  }

  async start(): Promise<void> {
    await this.cards.start();
  }

  async stop(): Promise<void> {
    await this.cards.stop();
    await this.establishment.stop();
  }

  get liveSessions(): number {
    return this.establishment.liveSessions;
  }

  /** For lines a peer can make us write once per attempt (refusals, closed connections). */
  get repeatedLog(): LogRateLimiter {
    return this.establishment.repeatedLog;
  }

  // --- establishment (see session-establishment.ts) ---------------------------------------------

  authenticate(
    frame: FrameOf<'AUTH'>,
    nonce: Uint8Array,
    protocolVersion: number,
    peerAddress: string,
  ): Promise<PendingSession> {
    return this.establishment.authenticate(frame, nonce, protocolVersion, peerAddress);
  }

  resume(
    frame: FrameOf<'RESUME'>,
    nonce: Uint8Array,
    protocolVersion: number,
    peerAddress: string,
  ): PendingSession {
    return this.establishment.resume(frame, nonce, protocolVersion, peerAddress);
  }

  establish(pending: PendingSession, sink: FrameSink, closeStale: (old: FrameSink) => void): void {
    this.establishment.establish(pending, sink, closeStale);
  }

  flushMissedPushes(session: LogicalSession, sink: FrameSink): void {
    this.establishment.flushMissedPushes(session, sink);
  }

  detach(session: LogicalSession, sink: FrameSink): void {
    this.establishment.detach(session, sink);
  }

  endSession(session: LogicalSession, why: string): Promise<void> {
    return this.establishment.endSession(session, why);
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

  private dispatch(session: LogicalSession, frame: Frame): Promise<Frame> {
    switch (frame.type) {
      case 'PING':
        return Promise.resolve({ type: 'PONG', id: frame.id, flags: 0 });
      case 'LIST_CARDS':
        return this.cards.listCards(session, frame);
      case 'OPEN_CARD':
        return this.cards.openCard(session, frame);
      case 'CLOSE_CARD':
        return this.cards.closeHandle(session, frame);
      case 'APDU':
        return this.cards.apdu(session, frame);
      case 'GET_SNAPSHOT':
        return this.cards.snapshot(session, frame);
      case 'ENROLL':
        return this.cards.enroll(session, frame);
      case 'RENEW_TOKEN':
        return this.establishment.renewToken(session, frame);
      default:
        return Promise.reject(
          new CardlinkError('ERR_PROTOCOL_STATE', `${frame.type} is not a request after authentication`),
        );
    }
  }
}
