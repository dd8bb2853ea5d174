/**
 * The daemon's one session with the card server (docs/protocol.md): a TLS WebSocket, HELLO, AUTH
 * with the device proof (or RESUME of the session it had), numbered requests answered by id, and
 * the server's pushes as events.
 *
 * Faults (docs/daemon.md, "Faults"): when the connection drops, the link reconnects with
 * exponential back-off and jitter and RESUMEs the session, then sends again, with the RETRANSMIT
 * flag, every request that has no answer yet (the server answers each at most once). When the
 * session cannot be resumed (the server restarted, the grace period passed), the link opens a new
 * one with AUTH and fails the old session's unanswered requests: whether they ran is unknown, so
 * they are not sent into the new session. A refused token stops the link until a new token comes.
 *
 * Requests wait while the link is down; each fails after `commandTimeoutMs` (the card then answers
 * 6F00), so nothing hangs longer than that.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { X509Certificate, type KeyObject } from 'node:crypto';
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls';
import WebSocket from 'ws';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { describeCloseCode } from '../../protocol/wire/close-codes.js';
import { secretHash, signDeviceProof } from '../../protocol/wire/device-proof.js';
import { decodeFrame, encodeFrame } from '../../protocol/wire/frame-codec.js';
import { FRAME_FLAG, type Frame, type FrameOf } from '../../protocol/wire/frames.js';
import { MAX_FRAME_BYTES, PROTOCOL_VERSION } from '../../protocol/wire/limits.js';
import { verifySnapshotSignature } from '../../protocol/wire/snapshot-signature.js';
import type { DeviceKey } from '../device/device-key.js';
import { Backoff, type BackoffSettings } from './backoff.js';

export type LinkState =
  /** No token yet, or the token was refused: waiting for one. */
  | 'waiting-for-token'
  | 'connecting'
  | 'connected'
  /** Lost the connection; trying again with back-off. */
  | 'reconnecting'
  /** stop() was called. */
  | 'stopped';

/** A request body: a frame without the header fields the link fills in. */
type Body<F> = F extends Frame ? Omit<F, 'id' | 'flags'> : never;
export type RequestBody = Body<Frame>;

export interface ServerLinkOptions {
  readonly sessionUrl: string;
  /** PEM of the CA (or self-signed certificate) to trust; default: the system's CAs. */
  readonly ca?: string | undefined;
  /** SHA-256 (hex) the server's certificate must have, in addition to a valid chain. */
  readonly certificateSha256?: string | undefined;
  readonly device: DeviceKey;
  readonly deviceName: string;
  readonly clientName: string;
  readonly connectTimeoutMs: number;
  readonly commandTimeoutMs: number;
  readonly reconnect: BackoffSettings;
  readonly logger: Logger;
}

export interface SessionInfo {
  readonly kind: 'new' | 'resumed';
  readonly userId: string;
  readonly deviceId: string;
  readonly deviceStatus: FrameOf<'AUTH_OK'>['deviceStatus'];
  readonly sessionId: string;
  readonly tokenExpiresAt: number;
  /** A new session opened with a token a person just handed over (so cards are taken over). */
  readonly fromFreshToken: boolean;
}

export interface LinkDown {
  readonly code: number;
  readonly reason: string;
}

export interface ServerLinkEvents {
  /** A session is usable: `new` means every handle of an earlier session is gone. */
  session: [SessionInfo];
  /** The connection dropped; the link is reconnecting (unless the token was refused). */
  down: [LinkDown];
  /** The server refused the token (or it expired): the link waits for `setToken`. */
  'token-refused': [CardlinkError];
  /** A fault the user should know of (the link stops on its own only where the protocol says so). */
  fault: [CardlinkError];
  push: [FrameOf<'TAKEN_OVER'> | FrameOf<'CARD_CHANGED'> | FrameOf<'TOKEN_EXPIRING'>];
  state: [LinkState];
}

/** An error for a request that got no answer: the host sees 6F00. */
export class RequestFailedError extends CardlinkError {}

interface Pending {
  readonly id: number;
  flags: number;
  /** The session the request belongs to (its handles mean nothing in another). */
  readonly sessionId: string;
  sent: boolean;
  /** The caller gave up (timeout); the entry stays so the sequence has no gap. */
  abandoned: boolean;
  body: RequestBody;
  readonly resolve: (frame: Frame) => void;
  readonly reject: (error: Error) => void;
  readonly timer: NodeJS.Timeout;
}

/** Fraction of the server's idle timeout after which the link pings when it has sent nothing. */
const PING_AFTER_IDLE_FRACTION = 1 / 3;

export class ServerLink extends EventEmitter<ServerLinkEvents> {
  private token: string | undefined;
  private ws: WebSocket | undefined;
  private linkState: LinkState = 'waiting-for-token';
  private session: { id: string; resumeToken: Uint8Array; info: SessionInfo } | undefined;
  private nextId = 1;
  /** Highest id up to which every answer arrived (RESUME's lastAckedSequence). */
  private ackedThrough = 0;
  private readonly answered = new Set<number>();
  private readonly pending = new Map<number, Pending>();
  private maxInFlight = 1;
  private idleTimeoutMs = 60_000;
  private pingTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private readonly backoff: Backoff;
  private lastSendAt = 0;
  /** While set, a fresh AUTH opens cards with takeOver (a person logged in). */
  private tokenIsFresh = false;
  private reconnectAtOnce = false;
  /** Public key of the certificate of the current connection's server: verifies snapshots. */
  private serverKey: KeyObject | undefined;
  /** The last measured round trip to the server in ms: the handshake's HELLO, then each idle PING. */
  private lastRoundTripMs: number | undefined;

  constructor(private readonly options: ServerLinkOptions) {
    super();
    this.backoff = new Backoff(options.reconnect);
  }

  get state(): LinkState {
    return this.linkState;
  }

  get sessionInfo(): SessionInfo | undefined {
    return this.linkState === 'connected' ? this.session?.info : undefined;
  }

  get hasToken(): boolean {
    return this.token !== undefined;
  }

  /**
   * While connected: the last round trip to the card server in milliseconds (HELLO to HELLO_ACK
   * of this connection, then each idle PING), for the tray's status line. Requests carrying
   * APDUs are not counted: their time includes the card's work on the server.
   */
  get roundTripMs(): number | undefined {
    return this.linkState === 'connected' ? this.lastRoundTripMs : undefined;
  }

  /**
   * Hands over an access token: renews the live session in place (RENEW_TOKEN), or starts
   * connecting with it. Resolves when the session is renewed or the connection attempt started.
   */
  async setToken(accessToken: string): Promise<void> {
    this.token = accessToken;
    if (this.linkState === 'connected') {
      const answer = await this.request({ type: 'RENEW_TOKEN', accessToken });
      if (answer.type === 'TOKEN_RENEWED') {
        if (this.session) this.session.info = { ...this.session.info, tokenExpiresAt: answer.tokenExpiresAt };
        return;
      }
      throw errorFromFrame(answer, 'the server did not renew the session');
    }
    this.tokenIsFresh = true;
    if (this.linkState === 'waiting-for-token' || this.linkState === 'reconnecting') {
      clearTimeout(this.retryTimer);
      this.backoff.reset();
      this.connect();
    }
  }

  /** Forgets the token and the session and closes the connection (logout). */
  async stop(): Promise<void> {
    this.token = undefined;
    this.setState('stopped');
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    this.failAll(new RequestFailedError('ERR_SESSION_LOST', 'the daemon logged out'));
    this.session = undefined;
    const ws = this.ws;
    this.ws = undefined;
    if (ws && ws.readyState !== WebSocket.CLOSED) {
      const closed = new Promise<void>((resolve) => ws.once('close', () => resolve()));
      ws.close(1000, 'logout');
      const timer = setTimeout(() => ws.terminate(), 1000);
      await closed;
      clearTimeout(timer);
    }
  }

  /** After stop(): accept tokens again. */
  restart(): void {
    if (this.linkState === 'stopped') this.setState('waiting-for-token');
  }

  /**
   * Sends a numbered request and resolves with its answer (its response frame or an ERROR frame).
   * Rejects with RequestFailedError when no answer comes in time or the session was lost.
   */
  request(body: RequestBody, flags = 0): Promise<Frame> {
    if (!this.session) {
      return Promise.reject(new RequestFailedError('ERR_SESSION_LOST', 'no session with the card server'));
    }
    const id = this.nextId++;
    const sessionId = this.session.id;
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => this.abandon(id), this.options.commandTimeoutMs);
      timer.unref();
      this.pending.set(id, {
        id,
        body,
        flags,
        sessionId,
        sent: false,
        abandoned: false,
        resolve,
        reject,
        timer,
      });
      this.pump();
    });
  }

  /**
   * Whether `signature` is the server's over `snapshot` of `cardId` in this session (made with the
   * key of the certificate this connection's TLS was verified against).
   */
  verifySnapshot(cardId: string, snapshot: Uint8Array, signature: Uint8Array): boolean {
    const key = this.serverKey;
    const sessionId = this.session?.id;
    if (!key || !sessionId) return false;
    return verifySnapshotSignature(key, { sessionId, cardId, snapshot }, signature);
  }

  // --- connection ------------------------------------------------------------------------------

  private setState(state: LinkState): void {
    if (this.linkState === state) return;
    this.linkState = state;
    this.emit('state', state);
  }

  private connect(): void {
    if (!this.token || this.linkState === 'stopped') return;
    this.setState(this.session ? 'reconnecting' : 'connecting');
    const { sessionUrl, ca, certificateSha256 } = this.options;
    // Keys left out rather than set to undefined: tls treats a present-but-undefined option as set.
    const ws = new WebSocket(sessionUrl, {
      ...(ca ? { ca } : {}),
      ...(certificateSha256 ? { checkServerIdentity: pinChecker(certificateSha256) } : {}),
      minVersion: 'TLSv1.2',
      perMessageDeflate: false,
      maxPayload: MAX_FRAME_BYTES,
      handshakeTimeout: this.options.connectTimeoutMs,
    } as WebSocket.ClientOptions);
    this.ws = ws;
    const handshakeTimer = setTimeout(() => ws.terminate(), this.options.connectTimeoutMs);
    handshakeTimer.unref();
    let established = false;
    ws.binaryType = 'nodebuffer';
    ws.on('upgrade', (response) => {
      const cert = (response.socket as TLSSocket).getPeerCertificate?.();
      this.serverKey = cert?.raw ? new X509Certificate(cert.raw).publicKey : undefined;
    });
    ws.on('error', (error) => {
      this.options.logger.warn('server connection error', { error: error.message });
    });
    let helloSentAt = 0;
    ws.on('open', () => {
      helloSentAt = performance.now();
      ws.send(
        encodeFrame({
          type: 'HELLO',
          id: 0,
          flags: 0,
          versions: [PROTOCOL_VERSION],
          clientName: this.options.clientName,
        }),
      );
    });
    let nonce: Uint8Array | undefined;
    let resuming = false;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (ws !== this.ws) return;
      let frame: Frame;
      try {
        if (!isBinary) throw new Error('text message');
        frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } catch {
        ws.close(4000, 'malformed frame');
        return;
      }
      if (!established) {
        if (frame.type === 'HELLO_ACK') {
          this.lastRoundTripMs = performance.now() - helloSentAt;
          nonce = frame.nonce;
          this.maxInFlight = frame.maxInFlight;
          this.idleTimeoutMs = frame.idleTimeoutSeconds * 1000;
          resuming = this.session !== undefined;
          ws.send(encodeFrame(resuming ? this.resumeFrame(nonce) : this.authFrame(nonce)));
        } else if (frame.type === 'AUTH_OK' || frame.type === 'RESUME_OK') {
          established = true;
          clearTimeout(handshakeTimer);
          this.onEstablished(frame);
        } else if (frame.type === 'ERROR') {
          clearTimeout(handshakeTimer);
          this.onHandshakeRefused(frame, resuming);
        }
        return;
      }
      this.onFrame(frame);
    });
    ws.on('close', (code, reasonBytes) => {
      clearTimeout(handshakeTimer);
      if (ws !== this.ws) return;
      this.ws = undefined;
      clearInterval(this.pingTimer);
      for (const p of this.pending.values()) p.sent = false;
      this.onClosed(code, reasonBytes.toString());
    });
  }

  private authFrame(nonce: Uint8Array): Frame {
    const accessToken = this.token!;
    return {
      type: 'AUTH',
      id: 0,
      flags: 0,
      accessToken,
      devicePublicKey: this.options.device.spki,
      signature: signDeviceProof(this.options.device.privateKey, {
        purpose: 'auth',
        nonce,
        secretHash: secretHash(accessToken),
        serverUrl: this.options.sessionUrl,
        protocolVersion: PROTOCOL_VERSION,
      }),
      deviceName: this.options.deviceName,
    };
  }

  private resumeFrame(nonce: Uint8Array): Frame {
    const session = this.session!;
    return {
      type: 'RESUME',
      id: 0,
      flags: 0,
      sessionId: session.id,
      resumeToken: session.resumeToken,
      lastAckedSequence: this.ackedThrough,
      signature: signDeviceProof(this.options.device.privateKey, {
        purpose: 'resume',
        nonce,
        secretHash: secretHash(session.resumeToken),
        serverUrl: this.options.sessionUrl,
        protocolVersion: PROTOCOL_VERSION,
      }),
    };
  }

  private onEstablished(frame: FrameOf<'AUTH_OK'> | FrameOf<'RESUME_OK'>): void {
    this.backoff.reset();
    if (frame.type === 'AUTH_OK') {
      // A new session: the old one's unanswered requests may or may not have run; fail them.
      this.failAll(new RequestFailedError('ERR_SESSION_LOST', 'the session with the card server was lost'));
      this.nextId = 1;
      this.ackedThrough = 0;
      this.answered.clear();
      this.session = {
        id: frame.sessionId,
        resumeToken: frame.resumeToken,
        info: {
          kind: 'new',
          userId: frame.userId,
          deviceId: frame.deviceId,
          deviceStatus: frame.deviceStatus,
          sessionId: frame.sessionId,
          tokenExpiresAt: frame.tokenExpiresAt,
          fromFreshToken: this.tokenIsFresh,
        },
      };
      this.tokenIsFresh = false;
      this.options.logger.info('session opened', { session: frame.sessionId, device: frame.deviceId });
    } else {
      const session = this.session!;
      session.resumeToken = frame.resumeToken;
      session.info = {
        ...session.info,
        kind: 'resumed',
        tokenExpiresAt: frame.tokenExpiresAt,
        fromFreshToken: false,
      };
      // The cards of a resumed session are held already: a later AUTH must not take any over.
      this.tokenIsFresh = false;
      this.options.logger.info('session resumed', {
        session: frame.sessionId,
        lastReceived: frame.lastReceivedSequence,
        unanswered: this.pending.size,
      });
    }
    this.setState('connected');
    this.lastSendAt = Date.now();
    this.pingTimer = setInterval(
      () => this.pingIfIdle(),
      Math.max(1000, this.idleTimeoutMs * PING_AFTER_IDLE_FRACTION) / 2,
    );
    this.pingTimer.unref();
    this.emit('session', this.session!.info);
    this.pump();
  }

  private onHandshakeRefused(frame: FrameOf<'ERROR'>, resuming: boolean): void {
    if (resuming && frame.code === 'ERR_RESUME_REJECTED') {
      // The server no longer has the session (restart, grace passed): a new one with AUTH.
      this.options.logger.info('session could not be resumed; opening a new one', { reason: frame.message });
      this.session = undefined;
      this.reconnectAtOnce = true;
      return; // the close follows; onClosed reconnects at once
    }
    const error = errorFromFrame(frame, 'the card server refused the session');
    if (frame.code === 'ERR_AUTH_TOKEN_INVALID' || frame.code === 'ERR_DEVICE_PROOF_INVALID') {
      this.token = undefined;
      this.session = undefined;
      this.failAll(new RequestFailedError('ERR_SESSION_LOST', 'the card server refused the session'));
      this.emit('token-refused', error);
    } else {
      this.emit('fault', error);
    }
  }

  private onClosed(code: number, reason: string): void {
    const stopped = this.linkState === 'stopped';
    this.options.logger.info('server connection closed', { code, reason });
    if (stopped) return;
    this.emit('down', { code, reason });
    const advice = describeCloseCode(code)?.advice ?? 'reconnect';
    if (advice === 'new-token' && code !== 4003) {
      // 4004: the token expired without renewal; the session is over.
      this.token = undefined;
      this.session = undefined;
      this.failAll(new RequestFailedError('ERR_SESSION_LOST', 'the access token expired'));
      this.emit('token-refused', new CardlinkError('ERR_AUTH_TOKEN_INVALID', 'the access token expired'));
    } else if (advice === 'stop') {
      this.emit(
        'fault',
        new CardlinkError('ERR_PROTOCOL_STATE', `the card server closed the session: ${reason || code}`, {
          code,
        }),
      );
    }
    if (!this.token) {
      this.setState('waiting-for-token');
      return;
    }
    // A refused RESUME reconnects at once (with AUTH); everything else waits its back-off.
    const delay = this.reconnectAtOnce ? 0 : this.backoff.next();
    this.reconnectAtOnce = false;
    this.setState(this.session ? 'reconnecting' : 'connecting');
    this.retryTimer = setTimeout(() => this.connect(), delay);
    this.retryTimer.unref();
  }

  // --- requests --------------------------------------------------------------------------------

  /** Sends what waits, in id order, up to the server's in-flight limit. */
  private pump(): void {
    const ws = this.ws;
    if (!ws || this.linkState !== 'connected' || ws.readyState !== WebSocket.OPEN) return;
    let inFlight = 0;
    for (const p of this.pending.values()) if (p.sent) inFlight++;
    // A Map iterates in insertion order, and requests are inserted in id order.
    for (const p of this.pending.values()) {
      if (inFlight >= this.maxInFlight) break;
      if (p.sent) continue;
      if (p.sessionId !== this.session?.id) continue;
      // Sent before (id at or below what the server may have got) is a retransmission.
      const flags = p.flags | (this.everSent.has(p.id) ? FRAME_FLAG.RETRANSMIT : 0);
      ws.send(encodeFrame({ ...p.body, id: p.id, flags } as Frame));
      this.everSent.add(p.id);
      p.sent = true;
      inFlight++;
      this.lastSendAt = Date.now();
    }
  }

  private readonly everSent = new Set<number>();

  /**
   * The caller of request `id` waited too long. The entry stays: the server must see every id in
   * order, so one never sent becomes a PING (nothing runs in its place) and one sent stays to be
   * retransmitted as it was (the server runs it at most once).
   */
  private abandon(id: number): void {
    const p = this.pending.get(id);
    if (!p || p.abandoned) return;
    p.abandoned = true;
    if (!this.everSent.has(id)) {
      p.body = { type: 'PING' };
      p.flags = 0;
    }
    p.reject(
      new RequestFailedError(
        'ERR_SERVER_TIMEOUT',
        `the card server did not answer within ${this.options.commandTimeoutMs} ms`,
      ),
    );
  }

  private onFrame(frame: Frame): void {
    if (frame.id === 0) {
      if (frame.type === 'TAKEN_OVER' || frame.type === 'CARD_CHANGED' || frame.type === 'TOKEN_EXPIRING') {
        this.emit('push', frame);
      } else if (frame.type === 'ERROR') {
        this.emit('fault', errorFromFrame(frame, 'the card server reported an error'));
      }
      return;
    }
    const p = this.pending.get(frame.id);
    if (!p) return; // answered already, or timed out
    this.pending.delete(frame.id);
    clearTimeout(p.timer);
    this.noteAnswered(frame.id);
    if (!p.abandoned) p.resolve(frame);
    this.pump();
  }

  private noteAnswered(id: number): void {
    this.everSent.delete(id);
    this.answered.add(id);
    while (this.answered.has(this.ackedThrough + 1)) {
      this.answered.delete(this.ackedThrough + 1);
      this.ackedThrough++;
    }
  }

  private pingIfIdle(): void {
    if (this.linkState !== 'connected') return;
    const idleFor = Date.now() - this.lastSendAt;
    if (idleFor < this.idleTimeoutMs * PING_AFTER_IDLE_FRACTION) return;
    const ws = this.ws;
    this.lastSendAt = Date.now();
    // A ping unanswered within the connect timeout means a dead path: drop and reconnect.
    const deadline = setTimeout(() => ws?.terminate(), this.options.connectTimeoutMs);
    deadline.unref();
    const sentAt = performance.now();
    this.request({ type: 'PING' }).then(
      (answer) => {
        clearTimeout(deadline);
        if (answer.type === 'PONG' && ws === this.ws) this.lastRoundTripMs = performance.now() - sentAt;
      },
      () => clearTimeout(deadline),
    );
  }

  private failAll(error: Error): void {
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      if (!p.abandoned) p.reject(error);
    }
    this.pending.clear();
    this.everSent.clear();
  }
}

/** The CardlinkError an ERROR frame stands for (its code when it is one of ours). */
export function errorFromFrame(frame: Frame, fallback: string): CardlinkError {
  if (frame.type !== 'ERROR')
    return new CardlinkError('ERR_PROTOCOL_STATE', `${fallback}: unexpected ${frame.type}`);
  return new CardlinkError(frame.code as never, frame.message || fallback, { serverCode: frame.code });
}

/** A checkServerIdentity that adds a certificate pin to the normal host name check. */
export function pinChecker(expectedSha256: string) {
  return (host: string, cert: PeerCertificate): Error | undefined => {
    const normal = checkServerIdentity(host, cert);
    if (normal) return normal;
    const actual = createHash('sha256').update(cert.raw).digest('hex');
    if (actual !== expectedSha256) {
      return new CardlinkError(
        'ERR_SERVER_CERTIFICATE',
        `the card server's certificate (SHA-256 ${actual}) is not the pinned one (server.certificateSha256)`,
      );
    }
    return undefined;
  };
}
