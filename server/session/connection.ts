/**
 * One WebSocket connection: decodes frames, runs the handshake (HELLO, then AUTH or RESUME within
 * the handshake timeout), enforces sequence, direction and in-flight limits, and hands requests
 * to the SessionService. Anything malformed closes the connection with a close code and reason
 * (docs/protocol.md, "Closing"); a request that merely fails gets an ERROR frame.
 *
 * The handshake commits nothing until its answer is known to encode (SessionService.establish);
 * whatever goes wrong while a session is being established closes the connection, and the
 * session, if it was registered, is ended: a connection is either refused and closed, or open on
 * a session that was answered.
 *
 * Lines a peer can cause once per connection go through the service's repeated-log limiter.
 */
import { randomBytes } from 'node:crypto';
import type WebSocket from 'ws';
import { CardlinkError } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import { FrameMalformedError } from '../../protocol/wire/byte-io.js';
import { CLOSE, closeForFrameFault } from '../../protocol/wire/close-codes.js';
import { decodeFrame, encodeFrame } from '../../protocol/wire/frame-codec.js';
import { FRAME_SENDER, type Frame } from '../../protocol/wire/frames.js';
import { chooseProtocolVersion, NONCE_BYTES } from '../../protocol/wire/limits.js';
import { AuthThrottledError, IdpUnavailableError, TokenRejectedError } from '../auth/errors.js';
import type { ServerConfig } from '../config/server-config.js';
import type { FrameSink, LogicalSession } from './logical-session.js';
import { RequestError, type PendingSession, type SessionService } from './session-service.js';

/** Frames valid only before AUTH_OK / RESUME_OK. */
const HANDSHAKE_FRAMES: ReadonlySet<string> = new Set(['HELLO', 'AUTH', 'RESUME']);

type Phase = 'hello' | 'auth' | 'authenticating' | 'open' | 'closed';

interface CloseInfo {
  readonly code: number;
  readonly reason: string;
}

/** A server fault (RFC 6455 1011). */
const SERVER_ERROR: CloseInfo = { code: 1011, reason: 'server error' };
/** Come back later (RFC 6455 1013): the IdP is unreachable, or sign-ins from here are throttled. */
const TRY_AGAIN_LATER: CloseInfo = { code: 1013, reason: 'try again later' };

/** The address part of `peer` ("address:port", as the listener names it). */
function addressOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}

export class Connection implements FrameSink {
  private phase: Phase = 'hello';
  private readonly nonce = new Uint8Array(randomBytes(NONCE_BYTES));
  private version = 0;
  private session: LogicalSession | undefined;
  private inFlight = 0;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastFrameAt = Date.now();
  /** The peer's address, without the port: what the sign-in throttle counts by. */
  private readonly address: string;

  constructor(
    private readonly ws: WebSocket,
    private readonly service: SessionService,
    private readonly config: ServerConfig,
    // Unused: every line a connection writes is one a peer can repeat, so it goes through the
    // service's limiter (service.repeatedLog) instead.
    log: Logger,
    private readonly peer: string,
  ) {
    this.address = addressOf(peer);
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    ws.on('close', () => this.onClosed());
    ws.on('error', () => undefined); // 'close' follows; ws already closed the socket with 1002/1009
    this.handshakeTimer = setTimeout(
      () => this.fail(CLOSE.HANDSHAKE_TIMEOUT),
      config.limits.handshakeTimeoutSeconds * 1000,
    );
    this.armIdle();
  }

  send(frame: Frame): void {
    if (this.phase === 'closed' || this.ws.readyState !== this.ws.OPEN) return;
    let bytes: Uint8Array;
    try {
      bytes = encodeFrame(frame, { maxFrameBytes: this.config.limits.maxFrameBytes });
    } catch (error) {
      this.service.repeatedLog.log('error', 'cannot encode an answer', {
        peer: this.peer,
        frameType: frame.type,
        error: error instanceof Error ? error.message : String(error),
      });
      // Before the session is open there is nothing to keep serving: refuse and close.
      if (this.phase !== 'open') return this.refuseAuth(error);
      // An answer that does not fit the frame limit (a huge card list): say so, keep serving.
      bytes = encodeFrame({
        type: 'ERROR',
        id: frame.id,
        flags: 0,
        code: 'ERR_INTERNAL',
        message: 'the answer does not fit in a frame',
      });
    }
    this.sendBytes(bytes);
  }

  private sendBytes(bytes: Uint8Array): void {
    if (this.phase === 'closed' || this.ws.readyState !== this.ws.OPEN) return;
    this.ws.send(bytes);
  }

  close(code: number, reason: string): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    this.ws.close(code, reason);
    this.cleanup();
  }

  private fail(info: CloseInfo, detail?: string): void {
    if (this.phase !== 'closed') {
      this.service.repeatedLog.log('info', 'closing connection', {
        peer: this.peer,
        code: info.code,
        reason: info.reason,
        ...(detail ? { detail } : {}),
      });
    }
    this.close(info.code, info.reason);
  }

  /**
   * One timer per connection, not one per frame: a frame only notes the time, and the timer, when
   * it fires, waits out what is left of the idle period since the last frame.
   */
  private armIdle(delayMs = this.config.limits.idleTimeoutSeconds * 1000): void {
    this.idleTimer = setTimeout(() => {
      const idleFor = Date.now() - this.lastFrameAt;
      const limit = this.config.limits.idleTimeoutSeconds * 1000;
      if (idleFor >= limit) this.fail(CLOSE.IDLE_TIMEOUT);
      else this.armIdle(limit - idleFor);
    }, delayMs);
  }

  private cleanup(): void {
    clearTimeout(this.handshakeTimer);
    clearTimeout(this.idleTimer);
    if (this.session) this.service.detach(this.session, this);
  }

  private onClosed(): void {
    if (this.phase !== 'closed') {
      this.phase = 'closed';
      this.cleanup();
    }
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    if (this.phase === 'closed') return;
    this.lastFrameAt = Date.now();
    if (!isBinary) return this.fail(CLOSE.MALFORMED_FRAME, 'text message');
    let frame: Frame;
    try {
      frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), {
        maxFrameBytes: this.config.limits.maxFrameBytes,
      });
    } catch (error) {
      if (error instanceof FrameMalformedError)
        return this.fail(closeForFrameFault(error.fault), error.fault);
      return this.fail(CLOSE.MALFORMED_FRAME);
    }
    if (FRAME_SENDER[frame.type] !== 'client')
      return this.fail(CLOSE.PROTOCOL_VIOLATION, `${frame.type} is sent by servers`);
    switch (this.phase) {
      case 'hello':
        return this.onHello(frame);
      case 'auth':
        return void this.onAuth(frame);
      case 'authenticating':
        return this.fail(CLOSE.PROTOCOL_VIOLATION, 'frame before AUTH_OK');
      case 'open':
        return this.onRequest(frame);
    }
  }

  private onHello(frame: Frame): void {
    if (frame.type !== 'HELLO' || frame.id !== 0)
      return this.fail(CLOSE.PROTOCOL_VIOLATION, 'HELLO must come first');
    const version = chooseProtocolVersion(frame.versions);
    if (version === undefined) return this.fail(CLOSE.UNSUPPORTED_VERSION);
    this.version = version;
    this.phase = 'auth';
    const { limits } = this.config;
    this.send({
      type: 'HELLO_ACK',
      id: 0,
      flags: 0,
      version,
      nonce: this.nonce,
      maxFrameBytes: limits.maxFrameBytes,
      maxInFlight: limits.maxInFlight,
      idleTimeoutSeconds: limits.idleTimeoutSeconds,
    });
  }

  private async onAuth(frame: Frame): Promise<void> {
    if ((frame.type !== 'AUTH' && frame.type !== 'RESUME') || frame.id !== 0) {
      return this.fail(CLOSE.PROTOCOL_VIOLATION, 'AUTH or RESUME expected');
    }
    this.phase = 'authenticating';
    let pending: PendingSession;
    try {
      pending =
        frame.type === 'AUTH'
          ? await this.service.authenticate(frame, this.nonce, this.version, this.address)
          : this.service.resume(frame, this.nonce, this.version, this.address);
    } catch (error) {
      return this.refuseAuth(error);
    }
    // Closed (or timed out) during AUTH: nothing was committed, so there is nothing to undo.
    if (this.phase !== 'authenticating') return;
    try {
      this.service.establish(pending, this, (old) =>
        old.close(CLOSE.TAKEN_OVER.code, CLOSE.TAKEN_OVER.reason),
      );
    } catch (error) {
      return this.refuseAuth(error);
    }
    clearTimeout(this.handshakeTimer);
    this.session = pending.session;
    this.phase = 'open';
    this.sendBytes(pending.answer);
    this.service.flushMissedPushes(pending.session, this);
  }

  /**
   * Tells the client why (an ERROR with a stable code), then closes: nothing secret in either.
   * Also the end of any failure while a session is established, whatever threw.
   */
  private refuseAuth(error: unknown): void {
    if (this.phase === 'closed') return;
    let code = 'ERR_INTERNAL';
    let message = 'internal error';
    let close: CloseInfo = SERVER_ERROR;
    // A refused token, resume or device proof (DeviceProofError, or the transcript's own check).
    if (
      error instanceof TokenRejectedError ||
      error instanceof RequestError ||
      (error instanceof CardlinkError && error.code === 'ERR_DEVICE_PROOF_INVALID')
    ) {
      code = error.code;
      message = error.message;
      close = CLOSE.AUTH_FAILED;
    } else if (error instanceof AuthThrottledError) {
      code = error.code;
      message = error.message;
      close = TRY_AGAIN_LATER;
    } else if (error instanceof IdpUnavailableError) {
      code = error.code;
      message = 'the identity provider is unreachable; try again';
      close = TRY_AGAIN_LATER;
    } else {
      this.service.repeatedLog.log('error', 'authentication failed unexpectedly', {
        peer: this.peer,
        error: error instanceof Error ? error.message : String(error),
      });
    }
    const reason = error instanceof CardlinkError ? String(error.context['reason'] ?? error.code) : 'error';
    this.service.repeatedLog.log('info', 'authentication refused', { peer: this.peer, code, reason });
    // Straight to the socket: an ERROR with a stable code and a short message always encodes.
    this.sendBytes(encodeFrame({ type: 'ERROR', id: 0, flags: 0, code, message }));
    this.close(close.code, close.reason);
  }

  private onRequest(frame: Frame): void {
    const session = this.session!;
    if (frame.id === 0 || HANDSHAKE_FRAMES.has(frame.type)) {
      return this.fail(CLOSE.PROTOCOL_VIOLATION, `${frame.type} after the handshake`);
    }
    if (this.inFlight >= this.config.limits.maxInFlight) return this.fail(CLOSE.TOO_MANY_IN_FLIGHT);
    let answer: Promise<Frame>;
    try {
      answer = this.service.answer(session, frame);
    } catch (error) {
      return this.fail(CLOSE.PROTOCOL_VIOLATION, error instanceof Error ? error.message : 'bad request');
    }
    this.inFlight++;
    void answer.then((response) => {
      this.inFlight--;
      this.send(response);
    });
  }
}
