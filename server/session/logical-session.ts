/**
 * A logical session: what an AUTH creates and a RESUME continues on a new connection. It holds
 * the user, the proven device, the token's expiry, the request sequence and the open cards. It
 * outlives a dropped connection for the resume grace period, then ends (its cards are closed).
 */
import { createHash, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { PivCard } from '../../apdu/piv/index.js';
import type { Frame } from '../../protocol/wire/frames.js';
import type { PersistentCardState } from '../cards/persistent-card-state.js';

/** Bytes of a resume token. */
export const RESUME_TOKEN_BYTES = 32;

/** A fresh random resume token (not yet the session's: see LogicalSession.adoptResumeToken). */
export function newResumeToken(): Uint8Array {
  return new Uint8Array(randomBytes(RESUME_TOKEN_BYTES));
}

export interface SessionUser {
  readonly id: string;
  readonly tenantId: string;
  readonly issuer: string;
  readonly subject: string;
}

export interface SessionDevice {
  readonly id: string;
  readonly name: string;
  readonly status: 'pending' | 'approved';
  readonly publicKeySpki: Uint8Array;
  readonly publicKey: KeyObject;
}

/** A card this session has open. */
export interface OpenCard {
  readonly handle: number;
  readonly cardId: string;
  /** The `sessions` row of this claim: command records live under it. */
  readonly claimId: string;
  /** The card's epoch this claim writes under; a new one after each reload (CARD_CHANGED). */
  epoch: number;
  /** Replaced with `card` when the card is reloaded after an administrator changed it. */
  state: PersistentCardState;
  card: PivCard;
  /** Set while the card is reloaded: requests on the handle wait for it. */
  reloading?: Promise<void>;
  /** Set when another device claimed the card: every later request on the handle is refused. */
  takenOverBy?: string;
}

/** Something that can carry frames to the client right now. */
export interface FrameSink {
  send(frame: Frame): void;
  close(code: number, reason: string): void;
}

export class LogicalSession {
  readonly cards = new Map<number, OpenCard>();
  /** Highest request id received. */
  lastReceived = 0;
  /** Responses by request id, for retransmits after RESUME (bounded: see remember()). */
  private readonly answers = new Map<number, Promise<Frame>>();
  private resumeHash: Buffer;
  private nextHandle = 1;
  connection: FrameSink | undefined;
  /** TAKEN_OVER pushes that happened while no connection was attached. */
  readonly missedPushes: Frame[] = [];
  ended = false;
  graceTimer: NodeJS.Timeout | undefined;
  warnTimer: NodeJS.Timeout | undefined;
  expireTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly id: string,
    readonly user: SessionUser,
    readonly device: SessionDevice,
    public tokenExpiresAt: Date,
    private readonly keepAnswers: number,
    /** The name claims of the session's current access token (self-service enrollment). */
    public tokenClaims: Readonly<Record<string, string>> = {},
  ) {
    this.resumeHash = Buffer.alloc(0);
  }

  /** A new resume token; the previous one stops working. */
  issueResumeToken(): Uint8Array {
    const token = newResumeToken();
    this.adoptResumeToken(token);
    return token;
  }

  /**
   * Makes `token` (from newResumeToken) the one RESUME needs; the previous one stops working. Done
   * only once the answer that carries it is known to encode, so a failed answer spends nothing.
   */
  adoptResumeToken(token: Uint8Array): void {
    this.resumeHash = createHash('sha256').update(token).digest();
  }

  resumeTokenMatches(token: Uint8Array): boolean {
    const hash = createHash('sha256').update(token).digest();
    return this.resumeHash.length === hash.length && timingSafeEqual(this.resumeHash, hash);
  }

  allocateHandle(): number {
    return this.nextHandle++;
  }

  answerFor(id: number): Promise<Frame> | undefined {
    return this.answers.get(id);
  }

  /** Keeps the answer of request `id`; the oldest go once more than `keepAnswers` are kept. */
  remember(id: number, answer: Promise<Frame>): void {
    this.answers.set(id, answer);
    for (const old of this.answers.keys()) {
      if (this.answers.size <= this.keepAnswers) break;
      this.answers.delete(old);
    }
  }

  /** The client has every answer up to `id`. */
  forgetUpTo(id: number): void {
    for (const key of [...this.answers.keys()]) if (key <= id) this.answers.delete(key);
  }

  push(frame: Frame): void {
    if (this.connection) this.connection.send(frame);
    else if (frame.type === 'TAKEN_OVER') this.missedPushes.push(frame);
  }

  clearTimers(): void {
    clearTimeout(this.graceTimer);
    clearTimeout(this.warnTimer);
    clearTimeout(this.expireTimer);
  }
}
