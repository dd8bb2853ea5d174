/**
 * The public listener: HTTPS (TLS 1.2 or later) with the WebSocket session endpoint
 * (SESSION_PATH), `/healthz` (the process is up), `/readyz` (the database answers) and the issuing
 * CA's certificate and CRL (`/ca/cert`, `/ca/crl`: ca-routes.ts), and the set-PIN after a fresh
 * sign-in (`POST /v1/pin`: pin-routes.ts). Nothing else, in particular no
 * administration: `cardlink admin` works on the server host only.
 */
import { createPrivateKey } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer } from 'ws';
import type { Logger } from '../../protocol/log.js';
import { SESSION_PATH } from '../../protocol/wire/limits.js';
import { createTokenValidator } from '../auth/token-validator.js';
import type { ServerConfig } from '../config/server-config.js';
import { sessionUrlFor } from '../../protocol/wire/session-url.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { pingDatabase, type Storage } from '../storage/storage.js';
import { Connection } from '../session/connection.js';
import { SessionService } from '../session/session-service.js';
import type { TlsPair } from '../tls/tls-pair.js';
import { guardConnections, listenerTimeouts } from './connection-guard.js';
import { handleCaRequest } from './ca-routes.js';
import { startCrlPublisher, type CrlPublisher } from './crl-publisher.js';
import { handlePinRequest } from './pin-routes.js';
import { refuse, reply } from './responses.js';

/** Interval of WebSocket pings that find dead peers (a live one answers with a pong). */
export const HEARTBEAT_INTERVAL_MS = 30_000;

export interface CardServerOptions {
  readonly config: ServerConfig;
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly tls: TlsPair;
  readonly logger: Logger;
}

export interface RunningCardServer {
  /** The bound port (useful when the config asked for port 0). */
  readonly port: number;
  /** `wss://…/v1/session`: what clients connect to and sign in device proofs. */
  readonly sessionUrl: string;
  readonly service: SessionService;
  /** The CRL's plain-HTTP listener and re-signing timer (config `crl`). */
  readonly crl: CrlPublisher;
  /** Open WebSocket connections. */
  connections(): number;
  /** Open TCP sockets: WebSockets, HTTP requests, and those still in the TLS handshake. */
  sockets(): number;
  close(): Promise<void>;
}

export async function startCardServer(options: CardServerOptions): Promise<RunningCardServer> {
  const { config, storage, logger } = options;
  const server = https.createServer({
    cert: options.tls.cert,
    key: options.tls.key,
    minVersion: 'TLSv1.2',
    // Slow, idle or too many sockets must not hold file descriptors (docs/connection-limits.md).
    ...listenerTimeouts(config.limits),
  });
  const guard = guardConnections(server, config.limits, logger);
  const wss = new WebSocketServer({
    noServer: true,
    perMessageDeflate: false, // ~240 KiB per connection when on, and compression over secrets (CRIME)
    maxPayload: config.limits.maxFrameBytes,
    clientTracking: true,
  });
  // ws's own refusals (bad WebSocket headers), answered by us so they carry the same headers.
  wss.on('wsClientError', (_error, socket, req) =>
    req.method === 'GET' ? refuse(socket, 400, { 'Sec-WebSocket-Version': '13' }) : refuse(socket, 405),
  );

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  // Port 0 (tests): the public URL names the port the system chose.
  const base = new URL(config.publicUrl);
  if (config.listen.port === 0 && base.port === '0') base.port = String(port);
  const sessionUrl = sessionUrlFor(base.href);
  const validator = createTokenValidator({
    issuers: config.issuers,
    audience: config.audience === config.publicUrl ? base.href : config.audience,
    clockToleranceSeconds: config.clockToleranceSeconds,
  });
  const service = new SessionService({
    config,
    storage,
    kek: options.kek,
    validator,
    logger,
    sessionUrl,
    snapshotKey: createPrivateKey(options.tls.key),
  });
  await service.start();
  const crl = await startCrlPublisher({
    storage,
    kek: options.kek,
    logger,
    http: config.crl.http,
    resignBeforeHours: config.crl.resignBeforeHours,
  });
  const pinDeps = {
    storage,
    kek: options.kek,
    validator,
    maxAgeSeconds: config.pin.freshSignInMaxAgeSeconds,
    clockToleranceSeconds: config.clockToleranceSeconds,
  };

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (handlePinRequest(pinDeps, logger, path ?? '/', req, res)) return;
    if (req.method !== 'GET' && req.method !== 'HEAD')
      return reply(res, 405, { error: 'method not allowed' });
    if (path === '/healthz') return reply(res, 200, { status: 'ok' });
    if (path === '/readyz') {
      void pingDatabase(storage)
        .then(() => reply(res, 200, { status: 'ready' }))
        .catch(() => reply(res, 503, { status: 'database unavailable' }));
      return;
    }
    if (handleCaRequest(storage, path ?? '/', req, res)) return;
    reply(res, 404, { error: 'not found' });
  });

  server.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path !== SESSION_PATH) return refuse(socket, 404);
    if (wss.clients.size >= config.limits.maxConnections) return refuse(socket, 503);
    // From here the session's handshake and idle timeouts (server/session/connection.ts) apply.
    guard.release(socket);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const peer = `${req.socket.remoteAddress ?? '?'}:${req.socket.remotePort ?? '?'}`;
      alive.set(ws, true);
      ws.on('pong', () => alive.set(ws, true));
      new Connection(ws, service, config, logger, peer);
    });
  });

  // Dead peers (no pong since the last ping) are terminated; their sessions go into grace.
  const alive = new WeakMap<object, boolean>();
  const heartbeat = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, HEARTBEAT_INTERVAL_MS);
  heartbeat.unref();

  logger.info('card server listening', {
    host: config.listen.host,
    port,
    sessionUrl,
    tlsFingerprint: options.tls.fingerprint,
  });

  return {
    port,
    sessionUrl,
    service,
    crl,
    connections: () => wss.clients.size,
    sockets: () => guard.sockets(),
    async close() {
      clearInterval(heartbeat);
      for (const ws of wss.clients) ws.close(1001, 'server shutting down');
      await service.stop();
      await crl.close();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      guard.close();
      wss.close();
    },
  };
}
