/**
 * Who may use the PIN page: one-time links, and the page sessions they open.
 *
 * A link is `/pin/<token>` with 32 random bytes (256 bits) of base64url: nobody guesses it, and
 * only the person the tray showed it to (their browser) has it. It is good for PIN_LINK_TTL_MS
 * after the menu entry made it, and for one use: the first GET trades it for a page session (a
 * cookie) and a per-page CSRF token, and the link is then spent. A reused, expired or unknown link
 * gets a refusal page. The session lasts PIN_PAGE_SESSION_TTL_MS; once the card said done it takes no
 * further form (pin-page-server.ts).
 *
 * Tokens are kept only as SHA-256 hashes, so a lookup takes no time that depends on how much of a
 * guess was right, and the maps are bounded (MAX_PIN_LINKS, MAX_PIN_PAGE_SESSIONS) so a flood of
 * menu clicks holds little.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { PinOperation } from '../../apdu/piv/index.js';

/** What a PIN page is for: change, unblock, or set after a fresh sign-in (first or forgotten PIN). */
export type PinPageOperation = PinOperation | 'set';

/** How long a link from the menu stays good before it is opened: 5 minutes. */
export const PIN_LINK_TTL_MS = 5 * 60 * 1000;

/** How long a page session (the opened link) lasts: 10 minutes from the link's first use. */
export const PIN_PAGE_SESSION_TTL_MS = 10 * 60 * 1000;

/** Random bytes in a link token, a session id and a CSRF token (256 bits). */
export const PIN_TOKEN_BYTES = 32;

/** Links kept at a time (unused and not expired); the oldest goes first. */
export const MAX_PIN_LINKS = 16;

/** Page sessions kept at a time; the oldest goes first. */
export const MAX_PIN_PAGE_SESSIONS = 16;

/** A page session: what it is for, its CSRF token, until when it lasts. */
export interface PinPageSession {
  readonly id: string;
  readonly operation: PinPageOperation;
  readonly csrf: string;
  readonly expiresAt: number;
}

/** Why a link opens nothing. */
export type LinkRefusal = 'used' | 'expired' | 'unknown';

interface LinkEntry {
  readonly operation: PinPageOperation;
  readonly expiresAt: number;
  used: boolean;
}

const newToken = () => randomBytes(PIN_TOKEN_BYTES).toString('base64url');
const hashOf = (token: string) => createHash('sha256').update(token).digest('base64url');

/** A base64url token of PIN_TOKEN_BYTES, as newToken makes them (anything else is never looked up). */
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;

export interface OneTimeLinksOptions {
  /** Overrides PIN_LINK_TTL_MS (tests of the expiry). */
  readonly linkTtlMs?: number;
  /** The clock, in milliseconds (tests). */
  readonly now?: () => number;
}

export class OneTimeLinks {
  /** By token hash; spent links stay (as used) until they would have expired, to say "used". */
  private readonly links = new Map<string, LinkEntry>();
  /** By session id hash. */
  private readonly sessions = new Map<string, PinPageSession>();
  private readonly linkTtlMs: number;
  private readonly now: () => number;

  constructor(options: OneTimeLinksOptions = {}) {
    this.linkTtlMs = options.linkTtlMs ?? PIN_LINK_TTL_MS;
    this.now = options.now ?? Date.now;
  }

  /** A new link token for `operation`. */
  issue(operation: PinPageOperation): string {
    this.sweep();
    const token = newToken();
    this.links.set(hashOf(token), { operation, expiresAt: this.now() + this.linkTtlMs, used: false });
    while (this.links.size > MAX_PIN_LINKS) this.links.delete(this.links.keys().next().value!);
    return token;
  }

  /** Spends `token` and opens a page session with it, or says why not. */
  redeem(token: string): PinPageSession | LinkRefusal {
    if (!TOKEN_SHAPE.test(token)) return 'unknown';
    const key = hashOf(token);
    const link = this.links.get(key);
    if (!link) return 'unknown';
    if (link.used) return 'used';
    if (this.now() >= link.expiresAt) {
      this.links.delete(key);
      return 'expired';
    }
    link.used = true;
    const session: PinPageSession = {
      id: newToken(),
      operation: link.operation,
      csrf: newToken(),
      expiresAt: this.now() + PIN_PAGE_SESSION_TTL_MS,
    };
    this.sessions.set(hashOf(session.id), session);
    while (this.sessions.size > MAX_PIN_PAGE_SESSIONS)
      this.sessions.delete(this.sessions.keys().next().value!);
    return session;
  }

  /** The live session with id `id` (from the cookie), if any. */
  session(id: string | undefined): PinPageSession | undefined {
    if (id === undefined || !TOKEN_SHAPE.test(id)) return undefined;
    const key = hashOf(id);
    const session = this.sessions.get(key);
    if (!session) return undefined;
    if (this.now() >= session.expiresAt) {
      this.sessions.delete(key);
      return undefined;
    }
    return session;
  }

  /** Whether `csrf` (a form field) is the session's CSRF token; compared in constant time. */
  static csrfMatches(session: PinPageSession, csrf: string | undefined): boolean {
    if (csrf === undefined) return false;
    const a = Buffer.from(session.csrf);
    const b = Buffer.from(csrf);
    return a.length === b.length && timingSafeEqual(a, b);
  }

  /** Ends a session (the card said done). */
  end(session: PinPageSession): void {
    this.sessions.delete(hashOf(session.id));
  }

  /** Drops links and sessions that expired (spent links too, once they would have). */
  private sweep(): void {
    const now = this.now();
    for (const [k, l] of this.links) if (now >= l.expiresAt) this.links.delete(k);
    for (const [k, s] of this.sessions) if (now >= s.expiresAt) this.sessions.delete(k);
  }
}
