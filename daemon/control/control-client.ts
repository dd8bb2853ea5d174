/**
 * The tray's and the CLI's side of the control socket (docs/daemon-control.md, "Control socket"):
 * connects, proves it knows the secret file's secret (after the daemon has proved it), sends
 * requests and emits the daemon's events.
 *
 * Before it connects it checks that the socket's directory is private to the current user: a
 * socket someone else could have put there is not the daemon. The handshake is the second check:
 * what cannot prove the secret gets nothing, neither the secret nor, later, a token.
 */
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { dirname } from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { socketHandshake } from '../net/socket-handshake.js';
import { checkPrivateDirectory, controlPaths, isNamedPipePath, readControlSecret } from './control-paths.js';
import { controlProof, isControlProof, newControlNonce } from './control-proof.js';
import {
  CONTROL_HANDSHAKE_TIMEOUT_MS,
  CONTROL_PROTOCOL_VERSION,
  encodeControlLine,
  isValidClientName,
  LineDecoder,
  lineBytes,
  MAX_CLIENT_NAME_LENGTH,
  MAX_CONTROL_LINE_BYTES,
  parseDaemonLine,
  type ControlEvent,
  type ControlMethod,
  type ControlParams,
  type ControlResults,
  type DaemonMessage,
  type EmptyParams,
} from './control-protocol.js';

/** How long connect() waits for the daemon's hello-ok, in milliseconds. */
export const CONTROL_CONNECT_TIMEOUT_MS = CONTROL_HANDSHAKE_TIMEOUT_MS;

export interface ControlClientOptions {
  /** Default: the runtime directory's control.sock (control-paths.ts). */
  socketPath?: string;
  /** Default: the runtime directory's control.secret. */
  secretFile?: string;
  /** Who is asking (`cardlink-tray`, `cardlink-cli`): printable ASCII, at most MAX_CLIENT_NAME_LENGTH. */
  clientName: string;
  /** Overrides CONTROL_CONNECT_TIMEOUT_MS. */
  connectTimeoutMs?: number;
}

export interface ControlClientEvents {
  /** An event the daemon pushed. */
  event: [event: ControlEvent];
  /** The connection ended; `error` says why when it was not close(). */
  close: [error?: CardlinkError];
}

/** Params argument of request(): optional for methods without params. */
export type RequestParamsArg<M extends ControlMethod> = ControlParams[M] extends EmptyParams
  ? [params?: EmptyParams]
  : [params: ControlParams[M]];

interface Pending {
  resolve: (result: unknown) => void;
  reject: (error: CardlinkError) => void;
}

function notRunning(socketPath: string, errno: string): CardlinkError {
  return new CardlinkError(
    'ERR_CONTROL_UNAVAILABLE',
    `the cardlink daemon is not running (no control socket at ${socketPath}); start it with 'cardlink daemon'`,
    { socket: socketPath, errno },
  );
}

function remoteError(code: string, message: string): CardlinkError {
  return new CardlinkError(code as CardlinkError['code'], message);
}

export class ControlClient extends EventEmitter<ControlClientEvents> {
  readonly socketPath: string;
  private readonly socket: net.Socket;
  private readonly decoder: LineDecoder;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private ended = false;
  private closeError: CardlinkError | undefined;
  private readonly closedPromise: Promise<void>;

  private constructor(socket: net.Socket, decoder: LineDecoder, socketPath: string, rest: string[]) {
    super();
    this.socket = socket;
    this.decoder = decoder;
    this.socketPath = socketPath;
    this.closedPromise = new Promise((resolve) => socket.once('close', () => resolve()));
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      this.closeError ??= new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the control connection failed', {
        socket: socketPath,
        errno: err.code ?? 'unknown',
      });
    });
    socket.on('close', () => this.onClose());
    // Lines that came with hello-ok are handled once the caller can listen.
    if (rest.length > 0) setImmediate(() => this.onLines(rest));
  }

  /**
   * Checks the socket's directory, connects, reads the secret and performs the hello. Rejects with
   * ERR_CONTROL_UNAVAILABLE when no daemon runs, ERR_CONTROL_AUTH when the daemon refuses the secret,
   * ERR_KEY_FILE_INSECURE when the directory or the secret file is not private.
   */
  static async connect(options: ControlClientOptions): Promise<ControlClient> {
    if (!isValidClientName(options.clientName)) {
      throw new CardlinkError(
        'ERR_CONTROL_PARAMS',
        `client name must be 1 to ${MAX_CLIENT_NAME_LENGTH} printable ASCII characters`,
      );
    }
    const paths = controlPaths({
      ...(options.socketPath !== undefined ? { socketPath: options.socketPath } : {}),
      ...(options.secretFile !== undefined ? { secretFile: options.secretFile } : {}),
    });
    const { socketPath, secretFile } = paths;
    try {
      // A named pipe (Windows) has no directory: the secret's is the one to check.
      await checkPrivateDirectory(dirname(isNamedPipePath(socketPath) ? secretFile : socketPath));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw notRunning(socketPath, 'ENOENT');
      throw error;
    }
    const socket = await connectSocket(socketPath, options.connectTimeoutMs ?? CONTROL_CONNECT_TIMEOUT_MS);
    let secret: string;
    try {
      secret = await readControlSecret(secretFile);
    } catch (error) {
      socket.destroy();
      const errno = (error as NodeJS.ErrnoException).code;
      if (errno === 'ENOENT') {
        throw new CardlinkError(
          'ERR_CONTROL_UNAVAILABLE',
          `the cardlink daemon's secret file ${secretFile} is missing (is the daemon still starting?)`,
          { path: secretFile },
        );
      }
      if (errno !== undefined) {
        throw new CardlinkError('ERR_CONTROL_UNAVAILABLE', `cannot read ${secretFile}: ${errno}`, {
          path: secretFile,
          errno,
        });
      }
      throw error;
    }
    return ControlClient.handshake(socket, socketPath, secretFile, secret, options);
  }

  /** Whether the connection has ended. */
  get closed(): boolean {
    return this.ended;
  }

  /** Sends a request; resolves with its result or rejects with a CardlinkError of the response's code. */
  request<M extends ControlMethod>(method: M, ...args: RequestParamsArg<M>): Promise<ControlResults[M]> {
    if (this.ended || this.socket.destroyed) {
      return Promise.reject(
        new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the control connection is closed', {
          socket: this.socketPath,
        }),
      );
    }
    const id = this.nextId++;
    const params = args[0];
    const line = encodeControlLine({
      type: 'request',
      id,
      method,
      ...(params !== undefined ? { params } : {}),
    });
    if (lineBytes(line) > MAX_CONTROL_LINE_BYTES) {
      return Promise.reject(
        new CardlinkError('ERR_CONTROL_PARAMS', `request longer than ${MAX_CONTROL_LINE_BYTES} bytes`, {
          method,
        }),
      );
    }
    return new Promise<ControlResults[M]>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject });
      this.socket.write(line);
    });
  }

  /** Closes the connection; pending requests reject with ERR_CONTROL_UNAVAILABLE. */
  async close(): Promise<void> {
    if (!this.ended) this.socket.end();
    await this.closedPromise;
  }

  private onData(chunk: Buffer): void {
    if (this.ended) return;
    const { lines, error } = this.decoder.push(chunk);
    this.onLines(lines);
    if (error) this.protocolError(error);
  }

  private onLines(lines: string[]): void {
    for (const line of lines) {
      if (this.ended || this.socket.destroyed) return;
      let message: DaemonMessage | undefined;
      try {
        message = parseDaemonLine(line);
      } catch (error) {
        this.protocolError(error as CardlinkError);
        return;
      }
      if (message) this.handle(message);
    }
  }

  private handle(message: DaemonMessage): void {
    switch (message.type) {
      case 'response': {
        const p = this.pending.get(message.id);
        if (!p) {
          this.protocolError(
            new CardlinkError(
              'ERR_CONTROL_PROTOCOL',
              `response to request ${message.id}, which is not pending`,
            ),
          );
          return;
        }
        this.pending.delete(message.id);
        if (message.ok) p.resolve(message.result);
        else p.reject(remoteError(message.error.code, message.error.message));
        return;
      }
      case 'event': {
        const { type: _type, ...event } = message;
        this.emit('event', event as ControlEvent);
        return;
      }
      case 'error':
        this.closeError = remoteError(message.code, message.message);
        this.socket.destroy();
        return;
      case 'challenge':
      case 'hello-ok':
        this.protocolError(new CardlinkError('ERR_CONTROL_PROTOCOL', `${message.type} after the handshake`));
        return;
    }
  }

  private protocolError(error: CardlinkError): void {
    this.closeError ??= error;
    this.socket.destroy();
  }

  private onClose(): void {
    if (this.ended) return;
    this.ended = true;
    const error =
      this.closeError ??
      new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the daemon closed the control connection', {
        socket: this.socketPath,
      });
    for (const p of this.pending.values()) p.reject(error);
    this.pending.clear();
    this.emit('close', this.closeError);
  }

  /**
   * The handshake: hello with our nonce; the daemon's challenge must prove the secret before our
   * auth proves it back; then hello-ok (or the daemon's refusal). The secret never leaves this side.
   */
  private static handshake(
    socket: net.Socket,
    socketPath: string,
    secretFile: string,
    secret: string,
    options: ControlClientOptions,
  ): Promise<ControlClient> {
    const timeoutMs = options.connectTimeoutMs ?? CONTROL_CONNECT_TIMEOUT_MS;
    const decoder = new LineDecoder(MAX_CONTROL_LINE_BYTES);
    const timeoutError = () =>
      new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the cardlink daemon did not answer the hello in time', {
        socket: socketPath,
        timeoutMs,
      });
    return socketHandshake<ControlClient>(socket, timeoutMs, timeoutError, (handshake) => {
      let refusal: CardlinkError | undefined;
      const fail = (err: CardlinkError): void => handshake.fail(err);
      socket.on('error', (err: NodeJS.ErrnoException) =>
        fail(
          refusal ??
            new CardlinkError('ERR_CONTROL_UNAVAILABLE', 'the control connection failed during the hello', {
              socket: socketPath,
              errno: err.code ?? 'unknown',
            }),
        ),
      );
      socket.on('close', () =>
        fail(
          refusal ??
            new CardlinkError(
              'ERR_CONTROL_UNAVAILABLE',
              'the daemon closed the control connection during the hello',
              {
                socket: socketPath,
              },
            ),
        ),
      );
      const clientNonce = newControlNonce();
      let daemonNonce: string | undefined;
      /** One handshake line; true once hello-ok came (the lines after it are the client's). */
      const onHandshakeLine = (line: string): boolean => {
        const message = parseDaemonLine(line);
        if (message?.type === 'error') {
          // The daemon closes next; report its reason, not the close.
          refusal = remoteError(message.code, message.message);
          throw refusal;
        }
        if (daemonNonce === undefined) {
          if (message?.type !== 'challenge')
            throw new CardlinkError(
              'ERR_CONTROL_PROTOCOL',
              'the daemon did not answer the hello with a challenge',
            );
          // Nothing worth having is sent before the other side has shown it knows the secret.
          if (!isControlProof(message.proof, secret, 'daemon', clientNonce, message.nonce))
            throw new CardlinkError(
              'ERR_CONTROL_AUTH',
              `what answers on ${socketPath} cannot prove it knows the secret in ${secretFile}: ` +
                'it is not the cardlink daemon that wrote that file',
              { socket: socketPath, path: secretFile },
            );
          daemonNonce = message.nonce;
          const proof = controlProof(secret, 'client', clientNonce, daemonNonce);
          socket.write(encodeControlLine({ type: 'auth', proof }));
          return false;
        }
        if (message?.type !== 'hello-ok')
          throw new CardlinkError(
            'ERR_CONTROL_PROTOCOL',
            'the daemon did not end the handshake with hello-ok',
          );
        if (message.version !== CONTROL_PROTOCOL_VERSION)
          throw new CardlinkError(
            'ERR_CONTROL_PROTOCOL',
            `the daemon speaks control protocol version ${message.version}`,
            { version: message.version },
          );
        return true;
      };
      socket.on('data', (chunk: Buffer) => {
        if (handshake.settled) return;
        const { lines, error } = decoder.push(chunk);
        for (let i = 0; i < lines.length; i++) {
          let done: boolean;
          try {
            done = onHandshakeLine(lines[i]!);
          } catch (err) {
            fail(err as CardlinkError);
            return;
          }
          if (!done) continue;
          if (error) {
            fail(error);
            return;
          }
          handshake.succeed(() => new ControlClient(socket, decoder, socketPath, lines.slice(i + 1)));
          return;
        }
        if (error) fail(error);
      });
      socket.write(encodeControlLine({ type: 'hello', client: options.clientName, nonce: clientNonce }));
    });
  }
}

function connectSocket(socketPath: string, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ path: socketPath });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(
        new CardlinkError(
          'ERR_CONTROL_UNAVAILABLE',
          `the cardlink daemon did not accept the connection in time`,
          {
            socket: socketPath,
            timeoutMs,
          },
        ),
      );
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      socket.destroy();
      const errno = err.code ?? 'unknown';
      if (errno === 'ENOENT' || errno === 'ECONNREFUSED') reject(notRunning(socketPath, errno));
      else
        reject(
          new CardlinkError(
            'ERR_CONTROL_UNAVAILABLE',
            errno === 'EACCES'
              ? `permission denied on the control socket ${socketPath} (is the daemon run by another user?)`
              : `cannot connect to the control socket ${socketPath}: ${errno}`,
            { socket: socketPath, errno },
          ),
        );
    });
  });
}
