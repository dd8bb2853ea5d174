/**
 * The daemon's local control protocol, spoken by the tray and the CLI over a Unix socket
 * (docs/daemon-control.md, "Control socket"; keep that page and this file in step).
 *
 * JSON lines: one JSON object per line, UTF-8, each line ended by LF and at most
 * MAX_CONTROL_LINE_BYTES long. A handshake first (hello, challenge, auth, hello-ok: both sides
 * prove they know the secret file's secret, the daemon first, and the secret itself never crosses
 * the socket; control-proof.ts); then the client sends requests and the daemon answers each with a
 * response carrying the same id, and pushes events to every authenticated client.
 *
 * The daemon is strict about what it accepts (unknown fields and wrong types are refused, naming the
 * field); clients ignore fields and events they do not know, so a newer daemon can add them.
 */
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import type { PinChangeOutcome } from '../../apdu/piv/core/index.js';
import type { SetPinResult } from '../../protocol/pin-by-sign-in.js';
import { MAX_ACCESS_TOKEN_BYTES } from '../../protocol/wire/limits.js';
import { isControlNonce } from './control-proof.js';

export type { SetPinResult } from '../../protocol/pin-by-sign-in.js';

/** Version of this protocol, sent in hello-ok. 2: the secret is proved, never sent. */
export const CONTROL_PROTOCOL_VERSION = 2;

/** Longest line either side accepts, in bytes of UTF-8 without the LF; a longer one closes the connection. */
export const MAX_CONTROL_LINE_BYTES = 64 * 1024;

/** How long the daemon waits for a client's whole handshake after it connects, in milliseconds. */
export const CONTROL_HANDSHAKE_TIMEOUT_MS = 5000;

/** Length of the shared secret in bytes (before base64url: 43 characters). */
export const CONTROL_SECRET_BYTES = 32;

/** Longest client name in a hello, in characters (printable ASCII only). */
export const MAX_CLIENT_NAME_LENGTH = 64;

/** Most requests one client may have unanswered at a time; more are answered ERR_TOO_MANY_IN_FLIGHT. */
export const MAX_CONTROL_IN_FLIGHT = 16;

/** The request methods, in the order of docs/daemon-control.md. */
export const CONTROL_METHODS = [
  'status',
  'cards',
  'hand-over-token',
  'logout',
  'connect',
  'disconnect',
  'change-pin',
  'unblock-pin',
  'enroll',
  'set-pin',
] as const;
export type ControlMethod = (typeof CONTROL_METHODS)[number];

/** The event names the daemon pushes. */
export const CONTROL_EVENTS = [
  'connected',
  'disconnected',
  'card-inserted',
  'card-removed',
  'taken-over',
  'token-expiring',
  'card-blocked',
  'error',
] as const;
export type ControlEventName = (typeof CONTROL_EVENTS)[number];

/** An error as it travels in a response, an event or an error message. */
export interface ControlErrorInfo {
  code: CardlinkErrorCode;
  message: string;
}

/** One card of the signed-in user as the daemon sees it. */
export interface CardStatus {
  cardId: string;
  label: string;
  /** Reader slot the card is in (while inserted). */
  slot?: number;
  /** PC/SC reader name of that slot (while inserted). */
  readerName?: string;
  state: 'inserted' | 'removed' | 'taken-over';
  /** Name of the device that took the card over (state 'taken-over'). */
  takenOverBy?: string;
  /** The card's last answer about its PIN said it is blocked (present only then). */
  pinBlocked?: true;
  /** The card's last answer about its PUK said it is blocked (present only then). */
  pukBlocked?: true;
  /**
   * Commands the card answered since the daemon started: `local` from the snapshot, `remote`
   * with a round trip to the card server, snapshot fetches included (diagnostics, benchmark).
   */
  apdus?: { local: number; remote: number };
}

export type DaemonState = 'logged-out' | 'connecting' | 'connected' | 'reconnecting' | 'offline';

/** The result of `status`. */
export interface DaemonStatus {
  state: DaemonState;
  /** The card server's URL from the daemon's settings. */
  serverUrl: string;
  /** The signed-in user (the token's subject or preferred name). */
  user?: string;
  deviceId?: string;
  /** 'pending' until an administrator approves the device. */
  deviceStatus?: 'pending' | 'approved';
  /** When the access token expires, unix time in seconds. */
  tokenExpiresAt?: number;
  /** While connected: the last measured round trip to the card server, in milliseconds. */
  serverRoundTripMs?: number;
  lastError?: ControlErrorInfo;
  cards: CardStatus[];
}

/** Params of `hand-over-token`: the tokens of a login the tray or the CLI performed. */
export interface TokenHandover {
  accessToken: string;
  refreshToken?: string;
  /** When the access token expires, unix time in seconds. */
  expiresAt?: number;
  /** The OpenID provider that issued the tokens (http or https URL). */
  issuer?: string;
  /** The OAuth client the tokens were issued to (needed to refresh them). */
  clientId?: string;
}

/**
 * Longest PIN, PUK or card id a PIN request may carry, in characters. Far above any real value (a
 * PIN is at most 8 bytes): it only keeps a client from sending a large string the daemon would
 * have to hold; the card's own rule is checked afterwards (apdu/piv/pin-change.ts).
 */
export const MAX_PIN_PARAM_CHARS = 64;

/** Params of `change-pin`: the card (a `cardId` of `cards`), its current PIN and the new one. */
export interface PinChangeParams {
  cardId: string;
  currentPin: string;
  newPin: string;
}

/** Params of `unblock-pin`: the card, its PUK and the new PIN. */
export interface PinUnblockParams {
  cardId: string;
  puk: string;
  newPin: string;
}

/**
 * Params of `set-pin`: the card, the new PIN and the access token of a sign-in the user made just
 * now (`prompt=login`, `max_age=0`); the daemon forwards both to the card server, which checks
 * the sign-in's age (docs/personalization.md).
 */
export interface PinSetParams {
  cardId: string;
  newPin: string;
  freshAccessToken: string;
}

/** The result of `change-pin` and `unblock-pin`: what the card answered, in kinds (apdu/piv/pin-change.ts). */
export type PinResult = PinChangeOutcome;

/** Params of `enroll`: the card (a `cardId` of `cards`); may be left out when one card is in the reader. */
export interface EnrollParams {
  cardId?: string;
}

/** The result of `enroll`: the card, and how many certificates it got (they are in the reader now). */
export interface EnrollResult {
  cardId: string;
  label: string;
  certificates: number;
}

/** What the daemon does for each request; errors it throws reach the client (see ControlServer). */
export interface ControlHandler {
  status(): DaemonStatus;
  cards(): CardStatus[];
  handOverToken(t: TokenHandover): Promise<void>;
  logout(): Promise<void>;
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  changePin(p: PinChangeParams): Promise<PinResult>;
  unblockPin(p: PinUnblockParams): Promise<PinResult>;
  enroll(p: EnrollParams): Promise<EnrollResult>;
  setPin(p: PinSetParams): Promise<SetPinResult>;
}

/** A method without params takes `{}` (or no params member at all). */
export type EmptyParams = Record<string, never>;

/** Params of each method. */
export interface ControlParams {
  status: EmptyParams;
  cards: EmptyParams;
  'hand-over-token': TokenHandover;
  logout: EmptyParams;
  connect: EmptyParams;
  disconnect: EmptyParams;
  'change-pin': PinChangeParams;
  'unblock-pin': PinUnblockParams;
  enroll: EnrollParams;
  'set-pin': PinSetParams;
}

/** Result of each method (`null` for those that only act). */
export interface ControlResults {
  status: DaemonStatus;
  cards: CardStatus[];
  'hand-over-token': null;
  logout: null;
  connect: null;
  disconnect: null;
  'change-pin': PinResult;
  'unblock-pin': PinResult;
  enroll: EnrollResult;
  'set-pin': SetPinResult;
}

/** Data of each event. */
export interface ControlEventData {
  /** The session with the card server is up. */
  connected: { serverUrl: string; user?: string; deviceId?: string };
  /** The session ended; `willReconnect` says whether the daemon tries again on its own. */
  disconnected: { willReconnect: boolean; error?: ControlErrorInfo };
  'card-inserted': { cardId: string; label: string; slot?: number; readerName?: string };
  'card-removed': { cardId: string; label: string; slot?: number; readerName?: string };
  /** Another device opened the card; it is out of this machine's reader. */
  'taken-over': { cardId: string; label: string; byDeviceName: string };
  /** The access token expires soon and cannot be refreshed: the user should log in again. */
  'token-expiring': { expiresAt: number };
  /** An answer of the card showed its PIN (or PUK) blocked; sent once per blocking. */
  'card-blocked': { cardId: string; label: string; reference: 'pin' | 'puk' };
  error: ControlErrorInfo;
}

export type ControlEvent = {
  [K in ControlEventName]: { event: K; data: ControlEventData[K] };
}[ControlEventName];

// ---- Messages ----

export interface HelloMessage {
  type: 'hello';
  client: string;
  nonce: string;
}

/** The daemon's answer to hello: its nonce and its proof of the secret over both nonces. */
export interface ChallengeMessage {
  type: 'challenge';
  nonce: string;
  proof: string;
}

/** The client's proof of the secret, once it has checked the daemon's. */
export interface AuthMessage {
  type: 'auth';
  proof: string;
}

export interface HelloOkMessage {
  type: 'hello-ok';
  version: number;
}

export interface RequestMessage {
  type: 'request';
  id: number;
  method: ControlMethod;
  params?: object;
}

export type ResponseMessage =
  | { type: 'response'; id: number; ok: true; result: unknown }
  | { type: 'response'; id: number; ok: false; error: ControlErrorInfo };

export type EventMessage = { type: 'event' } & ControlEvent;

/** Sent by the daemon right before it closes the connection. */
export interface ErrorMessage {
  type: 'error';
  code: CardlinkErrorCode;
  message: string;
}

export type ClientMessage = HelloMessage | AuthMessage | RequestMessage;
export type DaemonMessage = ChallengeMessage | HelloOkMessage | ResponseMessage | EventMessage | ErrorMessage;

/** Serialises one message as a line (JSON never contains a raw LF, so the line cannot split). */
export function encodeControlLine(message: ClientMessage | DaemonMessage): string {
  return `${JSON.stringify(message)}\n`;
}

/** Byte length of an encoded line without its LF. */
export function lineBytes(line: string): number {
  return Buffer.byteLength(line) - 1;
}

// ---- Framing ----

function protocolError(message: string, context: Record<string, string | number | boolean> = {}) {
  return new CardlinkError('ERR_CONTROL_PROTOCOL', message, context);
}

/** Splits a byte stream into lines; refuses a line longer than `maxLineBytes` or not valid UTF-8. */
export class LineDecoder {
  private parts: Buffer[] = [];
  private pending = 0;
  private readonly utf8 = new TextDecoder('utf-8', { fatal: true });

  constructor(private readonly maxLineBytes: number = MAX_CONTROL_LINE_BYTES) {}

  /**
   * The complete lines `chunk` ends, without their LF. When a line breaks a rule, `error` is set and
   * `lines` holds the lines before it; the decoder is then unusable (close the connection).
   */
  push(chunk: Buffer): { lines: string[]; error?: CardlinkError } {
    const lines: string[] = [];
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      const piece = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      if (this.pending + piece.length > this.maxLineBytes) {
        return {
          lines,
          error: protocolError(`line longer than ${this.maxLineBytes} bytes`, { limit: this.maxLineBytes }),
        };
      }
      if (nl === -1) {
        if (piece.length > 0) {
          this.parts.push(piece);
          this.pending += piece.length;
        }
        return { lines };
      }
      const bytes = this.pending > 0 ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      this.pending = 0;
      try {
        lines.push(this.utf8.decode(bytes));
      } catch {
        return { lines, error: protocolError('line is not valid UTF-8') };
      }
      start = nl + 1;
    }
  }
}

// ---- Validation ----

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function parseJsonObject(line: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    throw protocolError('line is not valid JSON');
  }
  if (!isObject(value)) throw protocolError('line is not a JSON object');
  return value;
}

function checkFields(
  value: Record<string, unknown>,
  allowed: readonly string[],
  fail: (field: string) => CardlinkError,
): void {
  for (const key of Object.keys(value)) if (!allowed.includes(key)) throw fail(key);
}

/** A printable-ASCII name of 1..MAX_CLIENT_NAME_LENGTH characters. */
export function isValidClientName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= MAX_CLIENT_NAME_LENGTH && /^[\x20-\x7e]+$/.test(name);
}

function isRequestId(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** A request as read off the wire, before its method and params are checked. */
export interface RawRequest {
  type: 'request';
  id: number;
  method: unknown;
  params: unknown;
}

/**
 * Parses a client's first line. Anything but a well-formed hello throws ERR_CONTROL_AUTH (the daemon
 * accepts nothing else before the handshake is done).
 */
export function parseHello(line: string): HelloMessage {
  const value = handshakeLine(line, 'hello', ['type', 'client', 'nonce']);
  if (!isValidClientName(value.client)) {
    throw authError(`hello: client must be 1 to ${MAX_CLIENT_NAME_LENGTH} printable ASCII characters`);
  }
  if (!isControlNonce(value.nonce)) throw authError('hello: nonce must be 32 bytes of base64url');
  return { type: 'hello', client: value.client, nonce: value.nonce };
}

/** Parses the client's second line: its auth. Anything else throws ERR_CONTROL_AUTH. */
export function parseAuth(line: string): AuthMessage {
  const value = handshakeLine(line, 'auth', ['type', 'proof']);
  if (typeof value.proof !== 'string') throw authError('auth: proof must be a string');
  return { type: 'auth', proof: value.proof };
}

function authError(message: string): CardlinkError {
  return new CardlinkError('ERR_CONTROL_AUTH', message);
}

/** A handshake line of `type` with only `fields`; ERR_CONTROL_AUTH otherwise. */
function handshakeLine(line: string, type: string, fields: readonly string[]): Record<string, unknown> {
  let value: Record<string, unknown>;
  try {
    value = parseJsonObject(line);
  } catch {
    throw authError(`expected the ${type} of the handshake`);
  }
  if (value.type !== type) throw authError(`expected the ${type} of the handshake`);
  checkFields(value, fields, (f) => authError(`${type}: unexpected field "${f.slice(0, 64)}"`));
  return value;
}

/**
 * Parses a client's line after the hello. What cannot be answered (not JSON, unknown type, no valid
 * id, a second hello) throws ERR_CONTROL_PROTOCOL; method and params are checked by validateRequest.
 */
export function parseClientLine(line: string): RawRequest {
  const value = parseJsonObject(line);
  if (value.type === 'hello' || value.type === 'auth')
    throw protocolError(`${value.type} may only be sent once, in the handshake`);
  if (value.type !== 'request') throw protocolError('unknown message type');
  checkFields(value, ['type', 'id', 'method', 'params'], (f) =>
    protocolError(`request: unexpected field "${f.slice(0, 64)}"`),
  );
  if (!isRequestId(value.id)) throw protocolError('request: id must be a non-negative integer');
  return { type: 'request', id: value.id, method: value.method, params: value.params };
}

function paramsError(message: string, field?: string): CardlinkError {
  return new CardlinkError('ERR_CONTROL_PARAMS', message, field === undefined ? {} : { field });
}

function optionalString(params: Record<string, unknown>, field: string): string | undefined {
  const v = params[field];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || v.length === 0) {
    throw paramsError(`params.${field} must be a non-empty string when present`, field);
  }
  return v;
}

function validateTokenHandover(params: Record<string, unknown>): TokenHandover {
  const fields = ['accessToken', 'refreshToken', 'expiresAt', 'issuer', 'clientId'];
  checkFields(params, fields, (f) =>
    paramsError(`params.${f.slice(0, 64)} is not a parameter of hand-over-token`, f.slice(0, 64)),
  );
  if (params.accessToken === undefined) {
    throw paramsError('params.accessToken is required', 'accessToken');
  }
  const accessToken = optionalString(params, 'accessToken')!;
  const out: TokenHandover = { accessToken };
  const refreshToken = optionalString(params, 'refreshToken');
  if (refreshToken !== undefined) out.refreshToken = refreshToken;
  if (params.expiresAt !== undefined) {
    const e = params.expiresAt;
    if (typeof e !== 'number' || !Number.isSafeInteger(e) || e <= 0) {
      throw paramsError('params.expiresAt must be a positive integer (unix time in seconds)', 'expiresAt');
    }
    out.expiresAt = e;
  }
  const issuer = optionalString(params, 'issuer');
  if (issuer !== undefined) {
    let url: URL | undefined;
    try {
      url = new URL(issuer);
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'https:' && url.protocol !== 'http:')) {
      throw paramsError('params.issuer must be an http or https URL', 'issuer');
    }
    out.issuer = issuer;
  }
  const clientId = optionalString(params, 'clientId');
  if (clientId !== undefined) out.clientId = clientId;
  return out;
}

/**
 * A required string param of a PIN request: non-empty, at most MAX_PIN_PARAM_CHARS. The messages
 * name the field, never its value (it is a PIN or a PUK).
 */
function pinParam(params: Record<string, unknown>, field: string): string {
  const v = params[field];
  if (v === undefined) throw paramsError(`params.${field} is required`, field);
  if (typeof v !== 'string' || v.length === 0 || v.length > MAX_PIN_PARAM_CHARS) {
    throw paramsError(`params.${field} must be a string of 1 to ${MAX_PIN_PARAM_CHARS} characters`, field);
  }
  return v;
}

function validatePinParams(
  method: 'change-pin' | 'unblock-pin',
  params: Record<string, unknown>,
): PinChangeParams | PinUnblockParams {
  const proof = method === 'change-pin' ? 'currentPin' : 'puk';
  checkFields(params, ['cardId', proof, 'newPin'], (f) =>
    paramsError(`params.${f.slice(0, 64)} is not a parameter of ${method}`, f.slice(0, 64)),
  );
  const cardId = pinParam(params, 'cardId');
  const proofValue = pinParam(params, proof);
  const newPin = pinParam(params, 'newPin');
  return method === 'change-pin'
    ? { cardId, currentPin: proofValue, newPin }
    : { cardId, puk: proofValue, newPin };
}

function validateSetPinParams(params: Record<string, unknown>): PinSetParams {
  checkFields(params, ['cardId', 'newPin', 'freshAccessToken'], (f) =>
    paramsError(`params.${f.slice(0, 64)} is not a parameter of set-pin`, f.slice(0, 64)),
  );
  const token = params.freshAccessToken;
  if (typeof token !== 'string' || token.length === 0 || Buffer.byteLength(token) > MAX_ACCESS_TOKEN_BYTES)
    throw paramsError(
      `params.freshAccessToken must be a string of 1 to ${MAX_ACCESS_TOKEN_BYTES} bytes`,
      'freshAccessToken',
    );
  return { cardId: pinParam(params, 'cardId'), newPin: pinParam(params, 'newPin'), freshAccessToken: token };
}

/** A request whose method and params passed validateRequest. */
export type ValidRequest = {
  [M in ControlMethod]: { method: M; params: ControlParams[M] };
}[ControlMethod];

/**
 * Checks a request's method (ERR_CONTROL_METHOD) and params (ERR_CONTROL_PARAMS, naming the field).
 * The params returned hold only the known fields, freshly copied.
 */
export function validateRequest(method: unknown, params: unknown): ValidRequest {
  if (typeof method !== 'string' || !(CONTROL_METHODS as readonly string[]).includes(method)) {
    const shown = typeof method === 'string' ? `"${method.slice(0, 64)}"` : `of type ${typeof method}`;
    throw new CardlinkError('ERR_CONTROL_METHOD', `unknown method ${shown}`);
  }
  const m = method as ControlMethod;
  if (params !== undefined && !isObject(params)) throw paramsError('params must be an object', 'params');
  const p = params ?? {};
  if (m === 'hand-over-token') return { method: m, params: validateTokenHandover(p) };
  if (m === 'change-pin' || m === 'unblock-pin')
    return { method: m, params: validatePinParams(m, p) } as ValidRequest;
  if (m === 'enroll') {
    checkFields(p, ['cardId'], (f) =>
      paramsError(`params.${f.slice(0, 64)} is not a parameter of enroll`, f.slice(0, 64)),
    );
    return { method: m, params: p.cardId === undefined ? {} : { cardId: pinParam(p, 'cardId') } };
  }
  if (m === 'set-pin') return { method: m, params: validateSetPinParams(p) };
  checkFields(p, [], (f) =>
    paramsError(`params.${f.slice(0, 64)} is not a parameter of ${m}`, f.slice(0, 64)),
  );
  return { method: m, params: {} } as ValidRequest;
}

const ERROR_CODE = /^ERR_[A-Z0-9_]{1,60}$/;

function errorInfo(value: unknown, where: string): ControlErrorInfo {
  if (!isObject(value) || typeof value.code !== 'string' || !ERROR_CODE.test(value.code)) {
    throw protocolError(`${where}: error code missing or malformed`);
  }
  if (typeof value.message !== 'string') throw protocolError(`${where}: error message must be a string`);
  // A newer daemon may send codes this client does not know; they still name the error.
  return { code: value.code as CardlinkErrorCode, message: value.message };
}

/**
 * Parses a daemon's line on the client side. Malformed lines throw ERR_CONTROL_PROTOCOL; an event
 * this client does not know returns undefined (ignore it). Unknown fields are ignored.
 */
export function parseDaemonLine(line: string): DaemonMessage | undefined {
  const value = parseJsonObject(line);
  switch (value.type) {
    case 'challenge':
      if (!isControlNonce(value.nonce)) throw protocolError('challenge: nonce must be 32 bytes of base64url');
      if (typeof value.proof !== 'string') throw protocolError('challenge: proof must be a string');
      return { type: 'challenge', nonce: value.nonce, proof: value.proof };
    case 'hello-ok':
      if (typeof value.version !== 'number') throw protocolError('hello-ok: version must be a number');
      return { type: 'hello-ok', version: value.version };
    case 'response': {
      if (!isRequestId(value.id)) throw protocolError('response: id must be a non-negative integer');
      if (value.ok === true)
        return { type: 'response', id: value.id, ok: true, result: value.result ?? null };
      if (value.ok === false)
        return { type: 'response', id: value.id, ok: false, error: errorInfo(value.error, 'response') };
      throw protocolError('response: ok must be a boolean');
    }
    case 'event': {
      if (typeof value.event !== 'string') throw protocolError('event: event must be a string');
      if (!isObject(value.data)) throw protocolError('event: data must be an object');
      if (!(CONTROL_EVENTS as readonly string[]).includes(value.event)) return undefined;
      return { type: 'event', event: value.event, data: value.data } as EventMessage;
    }
    case 'error': {
      const info = errorInfo(value, 'error');
      return { type: 'error', code: info.code, message: info.message };
    }
    default:
      throw protocolError('unknown message type');
  }
}
