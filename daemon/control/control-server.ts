/**
 * The daemon's side of the control socket (docs/daemon-control.md, "Control socket"): listens on a
 * Unix socket in the private runtime directory, authenticates each client by its proof of the
 * secret file's secret (after proving it first), runs its requests on a ControlHandler and pushes
 * events to every authenticated client.
 *
 * Secrets stay out of the log: neither the control secret nor any hand-over-token, change-pin or
 * unblock-pin param (tokens, PINs, PUKs) is ever
 * written to a log line, and errors the handler throws reach the client only as a CardlinkError's
 * code and message (anything else becomes a generic ERR_INTERNAL).
 */
import { promises as fs } from 'node:fs';
import net from 'node:net';
import { dirname } from 'node:path';
import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import type { Logger } from '../../protocol/log.js';
import {
  ensurePrivateDirectory,
  generateControlSecret,
  isNamedPipePath,
  writeControlSecret,
} from './control-paths.js';
import { controlProof, isControlProof, newControlNonce } from './control-proof.js';
import {
  CONTROL_HANDSHAKE_TIMEOUT_MS,
  CONTROL_PROTOCOL_VERSION,
  encodeControlLine,
  LineDecoder,
  lineBytes,
  MAX_CONTROL_IN_FLIGHT,
  MAX_CONTROL_LINE_BYTES,
  parseClientLine,
  parseAuth,
  parseHello,
  validateRequest,
  type ControlErrorInfo,
  type ControlEvent,
  type ControlHandler,
  type DaemonMessage,
  type ValidRequest,
} from './control-protocol.js';

/** Most connections at a time, authenticated or not; further ones are closed at once. */
export const MAX_CONTROL_CONNECTIONS = 32;

/** Bytes queued for a client that does not read before the daemon drops it. */
export const MAX_CONTROL_WRITE_BACKLOG_BYTES = 1024 * 1024;

/** How long a connection closed with an error message may take to flush it, in milliseconds. */
export const CONTROL_CLOSE_GRACE_MS = 1000;

/** How long start() waits for an existing socket to answer before taking it as in use, in milliseconds. */
export const STALE_SOCKET_PROBE_TIMEOUT_MS = 1000;

/** Methods whose params are secrets (tokens, PIN, PUK): an unexpected error's text is not logged. */
const SECRET_PARAM_METHODS: ReadonlySet<string> = new Set([
  'hand-over-token',
  'change-pin',
  'unblock-pin',
  'set-pin',
]);

/** What a client sees when a handler fails with anything but a CardlinkError. */
const INTERNAL_ERROR_MESSAGE = 'the daemon could not carry out the request (see its log)';

export interface ControlServerOptions {
  socketPath: string;
  secretFile: string;
  handler: ControlHandler;
  logger?: Logger;
  /** Overrides CONTROL_HANDSHAKE_TIMEOUT_MS (tests). */
  handshakeTimeoutMs?: number;
}

interface Connection {
  readonly socket: net.Socket;
  readonly decoder: LineDecoder;
  readonly inFlight: Set<number>;
  authenticated: boolean;
  client: string | undefined;
  /** After a valid hello: the nonces the client's auth must prove the secret over. */
  handshake: { clientNonce: string; daemonNonce: string } | undefined;
  closing: boolean;
  timer: NodeJS.Timeout | undefined;
}

function unavailable(message: string, context: Record<string, string | number | boolean>): CardlinkError {
  return new CardlinkError('ERR_CONTROL_UNAVAILABLE', message, context);
}

/** Whether something listens on the socket at `path`: true, false when refused (stale) or gone. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const probe = net.createConnection({ path });
    const timer = setTimeout(() => {
      probe.destroy();
      resolve(true); // it exists and does not refuse: someone holds it
    }, STALE_SOCKET_PROBE_TIMEOUT_MS);
    probe.once('connect', () => {
      clearTimeout(timer);
      probe.destroy();
      resolve(true);
    });
    probe.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      probe.destroy();
      if (err.code === 'ECONNREFUSED' || err.code === 'ENOENT') resolve(false);
      else
        reject(
          unavailable(`cannot use the control socket ${path}: ${err.code ?? 'connect failed'}`, {
            path,
            errno: err.code ?? 'unknown',
          }),
        );
    });
  });
}

/** Removes a socket file nobody listens on; refuses when a daemon answers or the file is no socket. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await fs.lstat(path);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw error;
  }
  if (!st.isSocket()) {
    throw unavailable(`${path} exists and is not a socket; remove it or choose another control socket path`, {
      path,
    });
  }
  if (await socketAnswers(path)) {
    throw unavailable(`a cardlink daemon already runs (its control socket ${path} answers)`, { path });
  }
  await fs.rm(path, { force: true });
}

export class ControlServer {
  readonly socketPath: string;
  readonly secretFile: string;
  private readonly handler: ControlHandler;
  private readonly logger: Logger | undefined;
  private readonly handshakeTimeoutMs: number;
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private secret: string | undefined;
  private socketIno: number | undefined;
  private closing: Promise<void> | undefined;

  private constructor(options: ControlServerOptions) {
    this.socketPath = options.socketPath;
    this.secretFile = options.secretFile;
    this.handler = options.handler;
    this.logger = options.logger;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? CONTROL_HANDSHAKE_TIMEOUT_MS;
    this.server = net.createServer((socket) => this.onConnection(socket));
    this.server.maxConnections = MAX_CONTROL_CONNECTIONS;
  }

  /**
   * Creates the runtime directories (0700) or checks them, replaces a stale socket, listens (socket
   * 0600) and writes a new secret file. Throws ERR_CONTROL_UNAVAILABLE when another daemon already
   * runs, ERR_KEY_FILE_INSECURE when a directory is not private.
   */
  static async start(options: ControlServerOptions): Promise<ControlServer> {
    const secretDir = dirname(options.secretFile);
    // A Windows named pipe has no directory and leaves nothing behind when its daemon dies.
    if (!isNamedPipePath(options.socketPath)) {
      const socketDir = dirname(options.socketPath);
      await ensurePrivateDirectory(socketDir);
      if (secretDir !== socketDir) await ensurePrivateDirectory(secretDir);
      await clearStaleSocket(options.socketPath);
    } else {
      await ensurePrivateDirectory(secretDir);
    }
    const server = new ControlServer(options);
    await server.listen();
    return server;
  }

  /** Number of authenticated clients. */
  get clientCount(): number {
    let n = 0;
    for (const c of this.connections) if (c.authenticated && !c.closing) n++;
    return n;
  }

  /** Sends `event` to every authenticated client (never to one still in its handshake). */
  broadcast(event: ControlEvent): void {
    if (this.closing) return;
    const line = encodeControlLine({ type: 'event', ...event } as DaemonMessage);
    if (lineBytes(line) > MAX_CONTROL_LINE_BYTES) {
      this.logger?.error('control event too large; not sent', { event: event.event });
      return;
    }
    for (const c of this.connections) if (c.authenticated && !c.closing) this.write(c, line);
  }

  /** Stops listening, drops every client and removes the socket and the secret file. */
  close(): Promise<void> {
    this.closing ??= this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const c of this.connections) this.drop(c);
    await closed;
    await this.removeOwnFiles();
    this.logger?.info('control socket closed', { socket: this.socketPath });
  }

  /** Removes the socket and secret file, unless another daemon has put its own there since. */
  private async removeOwnFiles(): Promise<void> {
    try {
      if (!isNamedPipePath(this.socketPath)) {
        const st = await fs.lstat(this.socketPath);
        if (st.isSocket() && st.ino === this.socketIno) await fs.rm(this.socketPath, { force: true });
      }
    } catch {
      // already gone
    }
    try {
      const text = (await fs.readFile(this.secretFile, 'utf8')).trim();
      if (this.secret && text === this.secret) await fs.rm(this.secretFile, { force: true });
    } catch {
      // already gone
    }
  }

  private async listen(): Promise<void> {
    const ctx = { path: this.socketPath };
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'EADDRINUSE'
            ? unavailable(
                `a cardlink daemon already runs (its control socket ${this.socketPath} exists)`,
                ctx,
              )
            : unavailable(`cannot listen on the control socket ${this.socketPath}: ${err.code ?? 'failed'}`, {
                ...ctx,
                errno: err.code ?? 'unknown',
              }),
        );
      };
      this.server.once('error', onError);
      this.server.listen(this.socketPath, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
    this.server.on('error', (err) => this.logger?.error('control socket error', { error: err }));
    try {
      if (!isNamedPipePath(this.socketPath)) {
        await fs.chmod(this.socketPath, 0o600);
        this.socketIno = (await fs.lstat(this.socketPath)).ino;
      }
      // Written once the socket is ours: a daemon that lost the race never overwrites the winner's secret.
      const secret = generateControlSecret();
      await writeControlSecret(this.secretFile, secret);
      this.secret = secret;
    } catch (error) {
      await this.close();
      throw error;
    }
    this.logger?.info('control socket listening', { socket: this.socketPath });
  }

  private onConnection(socket: net.Socket): void {
    if (this.closing) {
      socket.destroy();
      return;
    }
    const c: Connection = {
      socket,
      decoder: new LineDecoder(MAX_CONTROL_LINE_BYTES),
      inFlight: new Set(),
      authenticated: false,
      client: undefined,
      handshake: undefined,
      closing: false,
      timer: undefined,
    };
    this.connections.add(c);
    c.timer = setTimeout(
      () =>
        this.fail(c, 'ERR_CONTROL_AUTH', `the handshake did not finish within ${this.handshakeTimeoutMs} ms`),
      this.handshakeTimeoutMs,
    );
    socket.on('data', (chunk: Buffer) => this.onData(c, chunk));
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.logger?.debug('control connection error', {
        errno: err.code ?? 'unknown',
        client: c.client ?? '',
      }),
    );
    socket.on('close', () => {
      clearTimeout(c.timer);
      c.closing = true;
      this.connections.delete(c);
      if (c.authenticated) this.logger?.debug('control client left', { client: c.client ?? '' });
    });
  }

  private onData(c: Connection, chunk: Buffer): void {
    if (c.closing) return;
    const { lines, error } = c.decoder.push(chunk);
    for (const line of lines) {
      if (c.closing) return;
      this.onLine(c, line);
    }
    if (error && !c.closing) this.fail(c, error.code, error.message);
  }

  private onLine(c: Connection, line: string): void {
    if (!c.authenticated) {
      if (c.handshake) this.onAuth(c, c.handshake, line);
      else this.onHello(c, line);
      return;
    }
    let request;
    try {
      request = parseClientLine(line);
    } catch (error) {
      const e = error as CardlinkError;
      this.fail(c, e.code, e.message);
      return;
    }
    const { id } = request;
    if (c.inFlight.has(id)) {
      this.fail(c, 'ERR_CONTROL_PROTOCOL', `request id ${id} is already in flight`);
      return;
    }
    let valid: ValidRequest;
    try {
      valid = validateRequest(request.method, request.params);
    } catch (error) {
      const e = error as CardlinkError;
      this.logger?.debug('control request refused', { client: c.client ?? '', id, code: e.code });
      this.respondError(c, id, { code: e.code, message: e.message });
      return;
    }
    if (c.inFlight.size >= MAX_CONTROL_IN_FLIGHT) {
      this.respondError(c, id, {
        code: 'ERR_TOO_MANY_IN_FLIGHT',
        message: `at most ${MAX_CONTROL_IN_FLIGHT} requests may be unanswered at a time`,
      });
      return;
    }
    c.inFlight.add(id);
    this.logger?.debug('control request', { client: c.client ?? '', id, method: valid.method });
    void this.run(c, id, valid);
  }

  /** The client's hello: answer with our nonce and our proof of the secret (the daemon proves first). */
  private onHello(c: Connection, line: string): void {
    let hello;
    try {
      hello = parseHello(line);
    } catch (error) {
      const e = error as CardlinkError;
      this.logger?.warn('control client refused', { reason: e.message });
      this.fail(c, 'ERR_CONTROL_AUTH', e.message);
      return;
    }
    const secret = this.secret;
    if (!secret) {
      this.fail(c, 'ERR_CONTROL_UNAVAILABLE', 'the daemon is still starting');
      return;
    }
    const daemonNonce = newControlNonce();
    c.client = hello.client;
    c.handshake = { clientNonce: hello.nonce, daemonNonce };
    const proof = controlProof(secret, 'daemon', hello.nonce, daemonNonce);
    this.write(c, encodeControlLine({ type: 'challenge', nonce: daemonNonce, proof }));
  }

  /** The client's auth: its proof of the secret over both nonces. */
  private onAuth(c: Connection, nonces: { clientNonce: string; daemonNonce: string }, line: string): void {
    let auth;
    try {
      auth = parseAuth(line);
    } catch (error) {
      const e = error as CardlinkError;
      this.logger?.warn('control client refused', { reason: e.message, client: c.client ?? '' });
      this.fail(c, 'ERR_CONTROL_AUTH', e.message);
      return;
    }
    if (!isControlProof(auth.proof, this.secret ?? '', 'client', nonces.clientNonce, nonces.daemonNonce)) {
      this.logger?.warn('control client refused', { reason: 'wrong secret', client: c.client ?? '' });
      this.fail(c, 'ERR_CONTROL_AUTH', 'wrong control secret');
      return;
    }
    clearTimeout(c.timer);
    c.timer = undefined;
    c.authenticated = true;
    c.handshake = undefined;
    this.logger?.info('control client authenticated', { client: c.client ?? '' });
    this.write(c, encodeControlLine({ type: 'hello-ok', version: CONTROL_PROTOCOL_VERSION }));
  }

  private async run(c: Connection, id: number, request: ValidRequest): Promise<void> {
    let result: unknown;
    try {
      result = await this.dispatch(request);
    } catch (error) {
      c.inFlight.delete(id);
      this.respondError(c, id, this.publicError(c, request.method, error));
      return;
    }
    c.inFlight.delete(id);
    let line: string;
    try {
      line = encodeControlLine({ type: 'response', id, ok: true, result: result ?? null });
    } catch (error) {
      this.respondError(c, id, this.publicError(c, request.method, error));
      return;
    }
    if (lineBytes(line) > MAX_CONTROL_LINE_BYTES) {
      this.logger?.error('control response too large', { method: request.method, bytes: lineBytes(line) });
      this.respondError(c, id, { code: 'ERR_INTERNAL', message: INTERNAL_ERROR_MESSAGE });
      return;
    }
    this.write(c, line);
  }

  private async dispatch(request: ValidRequest): Promise<unknown> {
    const h = this.handler;
    switch (request.method) {
      case 'status':
        return h.status();
      case 'cards':
        return h.cards();
      case 'hand-over-token':
        await h.handOverToken(request.params);
        return null;
      case 'logout':
        await h.logout();
        return null;
      case 'connect':
        await h.connect();
        return null;
      case 'disconnect':
        await h.disconnect();
        return null;
      case 'change-pin':
        return h.changePin(request.params);
      case 'unblock-pin':
        return h.unblockPin(request.params);
      case 'enroll':
        return h.enroll(request.params);
      case 'set-pin':
        return h.setPin(request.params);
    }
  }

  /** What the client may learn of a handler's error; the rest goes to the log (never tokens). */
  private publicError(c: Connection, method: string, error: unknown): ControlErrorInfo {
    if (error instanceof CardlinkError) {
      this.logger?.info('control request failed', { client: c.client ?? '', method, code: error.code });
      return { code: error.code, message: error.message };
    }
    const name = error instanceof Error ? error.name : typeof error;
    // An unexpected error's message may quote its input: a token, a PIN or a PUK.
    const detail = SECRET_PARAM_METHODS.has(method)
      ? {}
      : { detail: error instanceof Error ? error.message : String(error) };
    this.logger?.error('control request failed unexpectedly', {
      client: c.client ?? '',
      method,
      name,
      ...detail,
    });
    return { code: 'ERR_INTERNAL', message: INTERNAL_ERROR_MESSAGE };
  }

  private respondError(c: Connection, id: number, error: ControlErrorInfo): void {
    this.write(c, encodeControlLine({ type: 'response', id, ok: false, error }));
  }

  private write(c: Connection, line: string): void {
    if (c.closing || c.socket.destroyed) return;
    c.socket.write(line);
    if (c.socket.writableLength > MAX_CONTROL_WRITE_BACKLOG_BYTES) {
      this.logger?.warn('control client does not read; dropping it', { client: c.client ?? '' });
      this.drop(c);
    }
  }

  /** Sends an error message, then closes the connection. */
  private fail(c: Connection, code: CardlinkErrorCode, message: string): void {
    if (c.closing) return;
    c.closing = true;
    clearTimeout(c.timer);
    const socket = c.socket;
    const grace = setTimeout(() => socket.destroy(), CONTROL_CLOSE_GRACE_MS);
    grace.unref();
    socket.once('close', () => clearTimeout(grace));
    socket.end(encodeControlLine({ type: 'error', code, message }), () => socket.destroy());
  }

  private drop(c: Connection): void {
    c.closing = true;
    clearTimeout(c.timer);
    c.socket.destroy();
  }
}
