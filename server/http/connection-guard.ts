/**
 * Limits on the public listener's sockets, below HTTP and WebSocket (docs/connection-limits.md).
 * A socket that never becomes a useful connection must not hold a file descriptor for long, and
 * one host must not take all of them:
 *
 * - at most `limits.maxSockets` TCP sockets at once (Node's net.Server `maxConnections`: the
 *   socket is closed at accept, before any TLS work) and `limits.maxSocketsPerAddress` from one
 *   source address (closed on 'connection', before the TLS handshake starts);
 * - the TLS handshake must finish within `limits.tlsHandshakeTimeoutSeconds` (tls `handshakeTimeout`;
 *   it also closes sockets that never send a byte);
 * - request headers must arrive within `limits.headersTimeoutSeconds` (Node's `headersTimeout`,
 *   checked every `CONNECTIONS_CHECK_INTERVAL_MS`, not every 30 s as by default);
 * - a TLS socket that is not a WebSocket and has no request in progress is destroyed after
 *   `limits.socketIdleTimeoutSeconds`, counted from the handshake or the end of its last response.
 *   Bytes that trickle in do not reset it, so slow headers cannot keep a socket. A socket handed to
 *   the WebSocket server leaves the guard (`release`); from then on the session's own handshake and
 *   idle timeouts (server/session/connection.ts) apply.
 *
 * What the limits refuse or close is logged in aggregate (ConnectionLimitLog), never per socket.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type https from 'node:https';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../../protocol/log.js';
import type { ServerConfig } from '../config/server-config.js';
import { ConnectionLimitLog } from './connection-limit-log.js';
import { refuse } from './responses.js';
import { sourceAddressKey } from './source-address.js';

/**
 * How often Node looks for requests past `headersTimeout`. Its default, 30 s, would let a socket
 * with half its headers live up to 30 s longer than configured; the check walks only sockets that
 * are waiting for a request, so once a second costs little.
 */
export const CONNECTIONS_CHECK_INTERVAL_MS = 1_000;

export type ConnectionLimits = Pick<
  ServerConfig['limits'],
  | 'maxSockets'
  | 'maxSocketsPerAddress'
  | 'tlsHandshakeTimeoutSeconds'
  | 'headersTimeoutSeconds'
  | 'socketIdleTimeoutSeconds'
>;

/** The https.createServer options that carry the limits Node enforces itself. */
export function listenerTimeouts(
  limits: ConnectionLimits,
): Pick<
  https.ServerOptions,
  'handshakeTimeout' | 'headersTimeout' | 'requestTimeout' | 'connectionsCheckingInterval'
> {
  return {
    handshakeTimeout: limits.tlsHandshakeTimeoutSeconds * 1000,
    headersTimeout: limits.headersTimeoutSeconds * 1000,
    // Only GET and HEAD are served, without a body: the request is complete with its headers.
    requestTimeout: limits.headersTimeoutSeconds * 1000,
    connectionsCheckingInterval: CONNECTIONS_CHECK_INTERVAL_MS,
  };
}

export interface ConnectionGuard {
  /** The socket became a WebSocket: the idle timeout no longer applies to it. */
  release(socket: Duplex): void;
  /** TCP sockets open now (WebSockets, HTTP, and those still in the TLS handshake). */
  sockets(): number;
  /** At shutdown: writes the pending log summary. */
  close(): void;
}

interface IdleState {
  timer: NodeJS.Timeout | undefined;
  requests: number;
}

export function guardConnections(
  server: https.Server,
  limits: ConnectionLimits,
  logger: Logger,
): ConnectionGuard {
  const log = new ConnectionLimitLog(logger);
  let open = 0;
  const perAddress = new Map<string, number>();
  const idle = new WeakMap<Duplex, IdleState>();
  const idleMs = limits.socketIdleTimeoutSeconds * 1000;

  server.maxConnections = limits.maxSockets;
  server.on('drop', (data) => log.record('maxSockets', sourceAddressKey(data?.remoteAddress)));

  // Prepended: a refused socket is closed before the TLS server starts a handshake on it.
  server.prependListener('connection', (socket: Socket) => {
    const key = sourceAddressKey(socket.remoteAddress);
    const held = perAddress.get(key) ?? 0;
    if (held >= limits.maxSocketsPerAddress) {
      log.record('maxSocketsPerAddress', key);
      socket.destroy();
      return;
    }
    perAddress.set(key, held + 1);
    open++;
    socket.once('close', () => {
      open--;
      const left = (perAddress.get(key) ?? 1) - 1;
      if (left > 0) perAddress.set(key, left);
      else perAddress.delete(key);
    });
  });

  server.on('tlsClientError', (error: NodeJS.ErrnoException, socket: TLSSocket) => {
    if (error.code === 'ERR_TLS_HANDSHAKE_TIMEOUT')
      log.record('tlsHandshakeTimeoutSeconds', sourceAddressKey(socket.remoteAddress));
    socket.destroy();
  });

  const arm = (socket: Duplex, state: IdleState): void => {
    clearTimeout(state.timer);
    state.timer = setTimeout(() => {
      log.record('socketIdleTimeoutSeconds', sourceAddressKey((socket as Socket).remoteAddress));
      socket.destroy();
    }, idleMs);
    state.timer.unref();
  };

  server.on('secureConnection', (socket: TLSSocket) => {
    const state: IdleState = { timer: undefined, requests: 0 };
    idle.set(socket, state);
    arm(socket, state);
    socket.once('close', () => clearTimeout(state.timer));
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const state = idle.get(socket);
    if (!state) return;
    state.requests++;
    clearTimeout(state.timer);
    res.once('close', () => {
      state.requests--;
      if (state.requests === 0 && !socket.destroyed && idle.has(socket)) arm(socket, state);
    });
  });

  // Node's own answers to bad or slow requests, replaced by ours so they carry the same headers.
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    const state = idle.get(socket);
    if (error.code === 'ERR_HTTP_REQUEST_TIMEOUT')
      log.record('headersTimeoutSeconds', sourceAddressKey((socket as Socket).remoteAddress));
    // A reset peer cannot read an answer; one written during a response would corrupt it.
    if (error.code === 'ECONNRESET' || (state?.requests ?? 0) > 0) {
      socket.destroy();
      return;
    }
    const status =
      error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : error.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400;
    refuse(socket, status);
  });

  return {
    release(socket) {
      const state = idle.get(socket);
      if (!state) return;
      clearTimeout(state.timer);
      idle.delete(socket);
    },
    sockets: () => open,
    close: () => log.flush(),
  };
}
