/**
 * The tray's PIN page: a small HTTP server on 127.0.0.1 (an ephemeral port) in the tray's process.
 * Change PIN… and Unblock PIN… in the menu make a one-time link (one-time-links.ts) and open it in
 * the system browser; the page's form goes to the daemon's `change-pin` / `unblock-pin` over the
 * control socket, and the card's answer comes back in words (daemon/cli/pin-words.ts).
 *
 * Defences, each for a reason:
 * - Loopback only, and the Host header must be this server's `127.0.0.1:<port>`: a web page that
 *   rebinds its own DNS name to 127.0.0.1 cannot talk to it.
 * - The link's token is spent on first use and traded for a page session (an HttpOnly,
 *   SameSite=Strict cookie) and a CSRF token in the form; the browser is sent on to /pin at once,
 *   so the token leaves the address bar and history. A POST needs the cookie, the CSRF token, an
 *   Origin of this server (or `null`: Chromium sends that for a form POST from a page whose
 *   Referrer-Policy is no-referrer), a Sec-Fetch-Site of `same-origin` where the browser sends
 *   one, and a urlencoded body of at most MAX_PIN_FORM_BYTES.
 * - Every answer: a CSP that allows no script, no frames, no other origin (PIN_PAGE_CSP),
 *   X-Content-Type-Options nosniff, Cache-Control no-store, Referrer-Policy no-referrer. The page
 *   loads nothing but its own stylesheet.
 * - Nothing typed is logged, kept or echoed back: the fields go into one control request and are
 *   dropped; the page shows the card's answer only.
 * - POST, then redirect, then GET: a POST is answered 303 to /pin, which shows the card's answer
 *   (kept with the page session, shown once). Reloading the answer page therefore sends nothing
 *   to the card again, and the browser never offers to resubmit a PIN. After "done" the page
 *   keeps showing it, and the session takes no further form.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { PinOperation } from '../../apdu/piv/index.js';
import { describePinResult, describeSetPinResult, type PinAnswer } from '../../daemon/cli/pin-words.js';
import type {
  CardStatus,
  PinChangeParams,
  PinResult,
  PinSetParams,
  PinUnblockParams,
  SetPinResult,
} from '../../daemon/control/control-protocol.js';
import { CardlinkError } from '../../protocol/errors.js';
import {
  OneTimeLinks,
  PIN_PAGE_SESSION_TTL_MS,
  type OneTimeLinksOptions,
  type PinPageOperation,
  type PinPageSession,
} from './one-time-links.js';
import {
  PIN_PAGE_CSS,
  renderPinForm,
  renderPinMessage,
  renderRefusal,
  renderGoToSignIn,
  renderSignInFirst,
} from './pin-page-html.js';

/** The page's Content-Security-Policy: nothing but its own stylesheet and its own form target. */
export const PIN_PAGE_CSP =
  "default-src 'none'; style-src 'self'; script-src 'none'; img-src 'none'; form-action 'self'; " +
  "frame-ancestors 'none'; base-uri 'none'";

/** Largest form body accepted, in bytes (a few short fields); a larger one is refused (413). */
export const MAX_PIN_FORM_BYTES = 4096;

/** How long a request may take to arrive (headers and body), in milliseconds. */
export const PIN_PAGE_REQUEST_TIMEOUT_MS = 10_000;
/**
 * How often the page forgets the fresh access tokens and pending sign-ins of page sessions that
 * ended or expired (a token outlives its page session by at most this long).
 */
export const PIN_PAGE_SWEEP_MS = 60_000;

/** The cookie that names the page session. */
export const PIN_SESSION_COOKIE = 'cardlink-pin';

/** What the page asks of the daemon (the tray passes its control connection's requests). */
export interface PinPageDaemon {
  cards(): Promise<CardStatus[]>;
  changePin(p: PinChangeParams): Promise<PinResult>;
  unblockPin(p: PinUnblockParams): Promise<PinResult>;
  setPin(p: PinSetParams): Promise<SetPinResult>;
}

/** A fresh browser sign-in started for the set-PIN (daemon/login/authorization-code-login.ts, `fresh`). */
export interface FreshSignIn {
  readonly authorizationUrl: string;
  complete(): Promise<{ readonly accessToken: string }>;
  cancel(): void;
}

export interface PinPageServerOptions extends OneTimeLinksOptions {
  readonly daemon: PinPageDaemon;
  /**
   * Starts a fresh sign-in (`prompt=login`, `max_age=0`) whose browser comes back to
   * `afterSignInUrl`; without it the page offers no set-PIN.
   */
  readonly freshSignIn?: (afterSignInUrl: string) => Promise<FreshSignIn>;
}

const SECURITY_HEADERS: Record<string, string> = {
  'Content-Security-Policy': PIN_PAGE_CSP,
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
  'Referrer-Policy': 'no-referrer',
  'X-Frame-Options': 'DENY',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

/** What a POST left for the GET after its redirect: the answer (shown once), and whether the session is done. */
interface PageOutcome {
  answer: PinAnswer | undefined;
  readonly cardId: string;
  readonly done: boolean;
}

export class PinPageServer {
  private readonly links: OneTimeLinks;
  /** By page session; gone with the session (the links keep the only strong reference). */
  private readonly outcomes = new WeakMap<PinPageSession, PageOutcome>();
  /**
   * The fresh sign-in's access token per set-PIN page session: held in memory only, until the PIN
   * is set, the session ends, or the server says the sign-in is no longer fresh.
   */
  private readonly freshTokens = new Map<string, string>();
  /** The fresh sign-in each set-PIN page session is waiting for (its loopback listener is open). */
  private readonly pendingSignIns = new Map<string, FreshSignIn>();
  /** Forgets tokens and sign-ins of page sessions that ended or expired (see forgetEnded). */
  private readonly sweep: NodeJS.Timeout;

  private constructor(
    private readonly server: http.Server,
    private readonly daemon: PinPageDaemon,
    private readonly options: PinPageServerOptions,
  ) {
    this.links = new OneTimeLinks(options);
    this.sweep = setInterval(() => this.forgetEnded(), PIN_PAGE_SWEEP_MS);
    this.sweep.unref();
  }

  /**
   * Drops the access token and cancels the sign-in of every page session that is gone (expired,
   * evicted or ended), so neither outlives its page by more than a sweep.
   */
  private forgetEnded(): void {
    for (const id of this.freshTokens.keys()) if (!this.links.session(id)) this.freshTokens.delete(id);
    for (const [id, login] of this.pendingSignIns) {
      if (this.links.session(id)) continue;
      this.pendingSignIns.delete(id);
      login.cancel();
    }
  }

  /** Listens on 127.0.0.1 on a port the system chooses. */
  static async start(options: PinPageServerOptions): Promise<PinPageServer> {
    const server = http.createServer();
    const page = new PinPageServer(server, options.daemon, options);
    server.requestTimeout = PIN_PAGE_REQUEST_TIMEOUT_MS;
    server.headersTimeout = PIN_PAGE_REQUEST_TIMEOUT_MS;
    server.on('request', (req, res) => {
      page.handle(req, res).catch(() => {
        if (!res.headersSent) page.send(res, 500, 'the PIN page failed\n', 'text/plain; charset=utf-8');
        else res.destroy();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.removeListener('error', reject);
        resolve();
      });
    });
    return page;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  /** This server's origin, `http://127.0.0.1:<port>`. */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** A new one-time link for `operation` (see one-time-links.ts for how long and how often it works). */
  link(operation: PinPageOperation): string {
    return `${this.origin}/pin/${this.links.issue(operation)}`;
  }

  async close(): Promise<void> {
    clearInterval(this.sweep);
    this.freshTokens.clear();
    for (const login of this.pendingSignIns.values()) login.cancel();
    this.pendingSignIns.clear();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    if (req.headers.host !== `127.0.0.1:${this.port}`) {
      req.resume();
      this.send(res, 421, 'wrong host\n', 'text/plain; charset=utf-8');
      return;
    }
    const url = new URL(req.url ?? '/', this.origin);
    if (req.method === 'GET' && url.pathname === '/pin.css') {
      this.send(res, 200, PIN_PAGE_CSS, 'text/css; charset=utf-8');
      return;
    }
    if (req.method === 'GET' && url.pathname.startsWith('/pin/')) {
      const outcome = this.links.redeem(url.pathname.slice('/pin/'.length));
      if (typeof outcome === 'string') {
        this.send(res, 410, renderRefusal(outcome));
        return;
      }
      res.setHeader(
        'Set-Cookie',
        `${PIN_SESSION_COOKIE}=${outcome.id}; HttpOnly; SameSite=Strict; Path=/; ` +
          `Max-Age=${PIN_PAGE_SESSION_TTL_MS / 1000}`,
      );
      res.setHeader('Location', '/pin');
      this.send(res, 303, '');
      return;
    }
    if (url.pathname === '/pin' && req.method === 'GET') {
      const session = this.links.session(cookieOf(req));
      if (!session) {
        this.send(res, 403, renderRefusal('session'));
        return;
      }
      const outcome = this.outcomes.get(session);
      const answer = outcome?.answer;
      // A wrong PIN's answer is shown once (a reload shows the form alone); "done" stays.
      if (outcome && !outcome.done) outcome.answer = undefined;
      await this.showForm(res, session, answer, outcome?.cardId);
      return;
    }
    if (url.pathname === '/pin' && req.method === 'POST') {
      await this.submit(req, res);
      return;
    }
    if (url.pathname === '/pin/sign-in' && req.method === 'POST') {
      await this.startSignIn(req, res);
      return;
    }
    req.resume();
    this.send(res, 404, 'not found\n', 'text/plain; charset=utf-8');
  }

  private async showForm(
    res: http.ServerResponse,
    session: PinPageSession,
    answer?: PinAnswer,
    selectedCardId?: string,
  ): Promise<void> {
    if (session.operation === 'set' && !this.freshTokens.has(session.id) && !answer?.ok) {
      this.send(res, 200, renderSignInFirst(session.csrf, answer));
      return;
    }
    let cards: CardStatus[];
    try {
      cards = (await this.daemon.cards()).filter((c) => c.state === 'inserted');
    } catch (error) {
      this.send(res, 503, renderPinMessage(session.operation, daemonTrouble(error)));
      return;
    }
    if (cards.length === 0 && !answer?.ok) {
      this.send(
        res,
        200,
        renderPinMessage(
          session.operation,
          'No cardlink card is in the reader: connect first, then try again.',
        ),
      );
      return;
    }
    this.send(
      res,
      200,
      renderPinForm({
        operation: session.operation,
        cards,
        csrf: session.csrf,
        ...(selectedCardId !== undefined ? { selectedCardId } : {}),
        ...(answer ? { answer } : {}),
        form: !answer?.ok,
      }),
    );
  }

  /**
   * POST /pin/sign-in of a set-PIN page: starts the fresh sign-in and sends the browser to the
   * identity provider; its redirect comes back to /pin, where the token is waiting.
   */
  private async startSignIn(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const checked = await this.checkedForm(req, res);
    if (!checked) return;
    const { session } = checked;
    if (session.operation !== 'set' || !this.options.freshSignIn) {
      this.send(res, 403, renderRefusal('session'));
      return;
    }
    let login: FreshSignIn;
    try {
      login = await this.options.freshSignIn(`${this.origin}/pin`);
    } catch (error) {
      this.send(res, 503, renderPinMessage('set', daemonTrouble(error)));
      return;
    }
    // One sign-in per page session: a new click replaces (and closes) the one before.
    this.pendingSignIns.get(session.id)?.cancel();
    this.pendingSignIns.set(session.id, login);
    login
      .complete()
      .then((grant) => {
        if (this.links.session(session.id)) this.freshTokens.set(session.id, grant.accessToken);
      })
      .catch(() => undefined) // the page shows the sign-in button again
      .finally(() => {
        if (this.pendingSignIns.get(session.id) === login) this.pendingSignIns.delete(session.id);
      });
    // Not a 303: Chromium applies the page's CSP `form-action 'self'` to a form's redirect too,
    // so the form's answer is a page that moves on by itself (and a link, if it does not).
    this.send(res, 200, renderGoToSignIn(login.authorizationUrl));
  }

  /** A POST's origin, type, body, session and CSRF checks; undefined once it was answered. */
  private async checkedForm(
    req: http.IncomingMessage,
    res: http.ServerResponse,
  ): Promise<{ session: PinPageSession; form: URLSearchParams } | undefined> {
    const origin = req.headers.origin;
    const site = req.headers['sec-fetch-site'];
    if ((origin !== this.origin && origin !== 'null') || (site !== undefined && site !== 'same-origin')) {
      req.resume();
      this.send(res, 403, renderRefusal('session'));
      return undefined;
    }
    const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (type !== 'application/x-www-form-urlencoded') {
      req.resume();
      this.send(res, 415, 'form expected\n', 'text/plain; charset=utf-8');
      return undefined;
    }
    const body = await readBody(req);
    if (body === undefined) {
      this.send(res, 413, 'form too large\n', 'text/plain; charset=utf-8');
      return undefined;
    }
    const form = new URLSearchParams(body.toString('utf8'));
    body.fill(0);
    const session = this.links.session(cookieOf(req));
    if (
      !session ||
      !OneTimeLinks.csrfMatches(session, form.get('csrf') ?? undefined) ||
      this.outcomes.get(session)?.done === true
    ) {
      this.send(res, 403, renderRefusal('session'));
      return undefined;
    }
    return { session, form };
  }

  /** POST /pin of a set-PIN page: the new PIN and the fresh token go to the daemon. */
  private async submitSet(
    res: http.ServerResponse,
    session: PinPageSession,
    form: URLSearchParams,
  ): Promise<void> {
    const token = this.freshTokens.get(session.id);
    if (!token) return this.showForm(res, session);
    const cardId = form.get('card') ?? '';
    const newPin = form.get('new') ?? '';
    let answer: PinAnswer;
    if (!cardId || !newPin) answer = { ok: false, text: 'Fill in every field.' };
    else if (newPin !== (form.get('again') ?? ''))
      answer = { ok: false, text: 'The two new PINs differ. Nothing was changed.' };
    else {
      try {
        const result = await this.daemon.setPin({ cardId, newPin, freshAccessToken: token });
        // A sign-in too old now stays too old: the page asks for a new one.
        if (result.outcome === 'sign-in-not-fresh' || result.outcome === 'done')
          this.freshTokens.delete(session.id);
        answer = describeSetPinResult(result);
      } catch (error) {
        answer = { ok: false, text: daemonTrouble(error) };
      }
    }
    if (answer.ok) this.links.end(session);
    await this.showForm(res, session, answer, cardId);
  }

  private async submit(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const checked = await this.checkedForm(req, res);
    if (!checked) return;
    const { session, form } = checked;
    if (session.operation === 'set') return this.submitSet(res, session, form);
    await this.submitProof(res, session, session.operation, form);
  }

  private async submitProof(
    res: http.ServerResponse,
    session: PinPageSession,
    operation: PinOperation,
    form: URLSearchParams,
  ): Promise<void> {
    const cardId = form.get('card') ?? '';
    const proof = form.get(operation === 'change' ? 'current' : 'puk') ?? '';
    const newPin = form.get('new') ?? '';
    const again = form.get('again') ?? '';
    let answer: PinAnswer;
    if (!cardId || !proof || !newPin) answer = { ok: false, text: 'Fill in every field.' };
    else if (newPin !== again) answer = { ok: false, text: 'The two new PINs differ. Nothing was changed.' };
    else {
      try {
        const result =
          operation === 'change'
            ? await this.daemon.changePin({ cardId, currentPin: proof, newPin })
            : await this.daemon.unblockPin({ cardId, puk: proof, newPin });
        answer = describePinResult(operation, result);
      } catch (error) {
        answer = { ok: false, text: daemonTrouble(error) };
      }
    }
    this.outcomes.set(session, { answer, cardId, done: answer.ok });
    res.setHeader('Location', '/pin');
    this.send(res, 303, '');
  }

  private send(
    res: http.ServerResponse,
    status: number,
    body: string,
    type = 'text/html; charset=utf-8',
  ): void {
    for (const [k, v] of Object.entries(SECURITY_HEADERS)) res.setHeader(k, v);
    res.setHeader('Content-Type', type);
    res.writeHead(status);
    res.end(body);
  }
}

/** The session cookie's value, if the request carries it. */
function cookieOf(req: http.IncomingMessage): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const [name, value] = part.trim().split('=', 2);
    if (name === PIN_SESSION_COOKIE) return value;
  }
  return undefined;
}

/** The body, or undefined when it is longer than MAX_PIN_FORM_BYTES (the rest is not read). */
function readBody(req: http.IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_PIN_FORM_BYTES) {
        for (const p of parts) p.fill(0);
        parts.length = 0;
        req.removeAllListeners('data');
        req.resume();
        resolve(undefined);
        return;
      }
      parts.push(chunk);
    });
    req.once('end', () => {
      const body = Buffer.concat(parts);
      for (const p of parts) p.fill(0);
      resolve(body);
    });
    req.once('error', reject);
  });
}

/** The daemon's trouble in words (its messages name no secret: docs/daemon-control.md). */
function daemonTrouble(error: unknown): string {
  if (error instanceof CardlinkError) {
    if (error.code === 'ERR_CONTROL_UNAVAILABLE')
      return 'The cardlink daemon is not running: nothing was changed.';
    return `Nothing was changed: ${error.message}`;
  }
  return 'Nothing was changed: the cardlink daemon could not be asked.';
}
