/**
 * A TCP proxy for tests and benchmarks that adds latency and drops connections on demand.
 *
 * - Latency: every chunk is held `delayMs` in each direction (one-way delay), so a request/answer
 *   round trip through the proxy takes at least `2 * delayMs` more than a direct one. Chunks keep
 *   their order and boundaries within a direction; end-of-stream (FIN) is delayed like data.
 * - `cutAll()` resets both sockets of every current connection (both peers see ECONNRESET), as an
 *   abrupt network drop would; data still held for delay is discarded.
 * - `pause()` keeps the port but resets every new connection as soon as it is accepted (the client
 *   sees ECONNRESET or a close before any data) until `resume()`; open connections go on working.
 * - `armCut()` cuts everything when the client next sends (after N bytes or on the next chunk),
 *   with or without forwarding that chunk first: the proxy sees only sizes and timing (the payload
 *   is TLS), which is enough to cut while a command is in flight.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface TcpProxyOptions {
  targetHost: string;
  targetPort: number;
  /** One-way delay added to each direction, in ms (RTT grows by twice this). Default 0. */
  delayMs?: number;
  /** Address to listen on; the port is chosen by the system. Default 127.0.0.1. */
  listenHost?: string;
}

export interface ArmCutOptions {
  /** Cut once this many client->server bytes have arrived since arming (the chunk reaching it). */
  afterClientBytes?: number;
  /** Cut on the next client->server chunk (the same as `afterClientBytes: 1`). */
  onNextClientChunk?: true;
  /**
   * true: the triggering chunk is delivered to the server (after the delay, written to its
   * socket) and then everything is cut. false: the chunk is dropped and everything is cut at once.
   */
  forwardFirst: boolean;
}

export interface TcpProxy {
  readonly host: string;
  readonly port: number;
  /** `scheme://host:port` + `path`, for clients that take a URL (`proxy.url('wss', '/v1')`). */
  url(scheme?: string, path?: string): string;
  /** Connections currently open through the proxy. */
  readonly connections: number;
  /** Connections accepted (and forwarded) since the start. */
  readonly acceptedConnections: number;
  /** Bytes received from clients / from the server since the start. */
  readonly clientBytes: number;
  readonly serverBytes: number;
  /** Changes the one-way delay for chunks arriving from now on (order is still kept). */
  setDelay(oneWayMs: number): void;
  /** Resets every current connection, both sides. */
  cutAll(): void;
  /** Resets new connections until `resume()`. */
  pause(): void;
  resume(): void;
  /**
   * Arms a one-shot cut; resolves once the cut has happened (never, if the proxy closes first).
   * Throws while an earlier cut is still armed.
   */
  armCut(options: ArmCutOptions): Promise<void>;
  /** Stops listening and resets every connection. */
  close(): Promise<void>;
}

interface Held {
  due: number;
  /** `null` is the end of the stream. */
  chunk: Buffer | null;
  /** Called once the chunk is written to the destination socket. */
  written?: () => void;
}

/** One direction of one connection: chunks held until their due time, then written in order. */
class DelayLine {
  private readonly held: Held[] = [];
  private timer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private lastDue = 0;

  constructor(
    private readonly dest: net.Socket,
    private readonly src: net.Socket,
  ) {}

  push(chunk: Buffer | null, delayMs: number, written?: () => void): void {
    // Never earlier than the chunk before it, so lowering the delay cannot reorder.
    const due = Math.max(performance.now() + delayMs, this.lastDue);
    this.lastDue = due;
    const item: Held = written ? { due, chunk, written } : { due, chunk };
    if (delayMs <= 0 && this.held.length === 0) {
      this.release(item);
      return;
    }
    this.held.push(item);
    if (this.held.length === 1) this.schedule();
  }

  discard(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.immediate) clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
    this.held.length = 0;
  }

  private schedule(): void {
    const head = this.held[0];
    if (!head) return;
    // Timers count whole ms and may fire up to 1 ms early or late: sleep the whole ms left, then
    // poll with setImmediate through the last fraction, so a chunk leaves within a fraction of a
    // millisecond of its due time and never before it.
    const wait = Math.floor(head.due - performance.now());
    if (wait >= 1) {
      this.timer = setTimeout(() => this.flush(), wait);
    } else {
      this.immediate = setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.timer = undefined;
    this.immediate = undefined;
    const now = performance.now();
    while (this.held.length > 0 && this.held[0]!.due <= now) this.release(this.held.shift()!);
    this.schedule();
  }

  private release(item: Held): void {
    if (this.dest.destroyed) return;
    if (item.chunk === null) {
      this.dest.end();
      item.written?.();
      return;
    }
    const ok = this.dest.write(item.chunk, () => item.written?.());
    // Backpressure: stop reading the source until the destination drains.
    if (!ok && !this.src.isPaused()) {
      this.src.pause();
      this.dest.once('drain', () => this.src.resume());
    }
  }
}

interface Connection {
  client: net.Socket;
  server: net.Socket;
  toServer: DelayLine;
  toClient: DelayLine;
}

interface ArmedCut {
  remaining: number;
  forwardFirst: boolean;
  resolve: () => void;
}

function reset(socket: net.Socket): void {
  if (socket.destroyed) return;
  // resetAndDestroy needs a connected handle; a socket still connecting is just destroyed.
  if (socket.connecting) socket.destroy();
  else socket.resetAndDestroy();
}

export async function startTcpProxy(options: TcpProxyOptions): Promise<TcpProxy> {
  const listenHost = options.listenHost ?? '127.0.0.1';
  let delayMs = options.delayMs ?? 0;
  let paused = false;
  let accepted = 0;
  let clientBytes = 0;
  let serverBytes = 0;
  let armed: ArmedCut | undefined;
  const open = new Set<Connection>();

  const checkDelay = (ms: number): number => {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay ${ms} ms is not a non-negative number`);
    return ms;
  };
  checkDelay(delayMs);

  const cutAll = (): void => {
    for (const c of [...open]) {
      open.delete(c);
      c.toServer.discard();
      c.toClient.discard();
      reset(c.client);
      reset(c.server);
    }
  };

  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (client) => {
    if (paused) {
      client.on('error', () => {});
      reset(client);
      return;
    }
    accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({
      host: options.targetHost,
      port: options.targetPort,
      allowHalfOpen: true,
      noDelay: true,
    });
    const c: Connection = {
      client,
      server: upstream,
      toServer: new DelayLine(upstream, client),
      toClient: new DelayLine(client, upstream),
    };
    open.add(c);
    const drop = (): void => {
      if (!open.delete(c)) return;
      c.toServer.discard();
      c.toClient.discard();
      reset(client);
      reset(upstream);
    };
    // An error on one side (reset, refused upstream) resets the other, like a broken path.
    client.on('error', drop);
    upstream.on('error', drop);
    let closed = 0;
    const onClose = (): void => {
      if (++closed === 2) open.delete(c);
    };
    client.on('close', onClose);
    upstream.on('close', onClose);

    client.on('data', (chunk: Buffer) => {
      clientBytes += chunk.length;
      const cut = armed;
      if (cut) {
        cut.remaining -= chunk.length;
        if (cut.remaining <= 0) {
          armed = undefined;
          if (!cut.forwardFirst) {
            cutAll();
            cut.resolve();
            return;
          }
          c.toServer.push(chunk, delayMs, () => {
            cutAll();
            cut.resolve();
          });
          return;
        }
      }
      c.toServer.push(chunk, delayMs);
    });
    upstream.on('data', (chunk: Buffer) => {
      serverBytes += chunk.length;
      c.toClient.push(chunk, delayMs);
    });
    client.on('end', () => c.toServer.push(null, delayMs));
    upstream.on('end', () => c.toClient.push(null, delayMs));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, listenHost, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as net.AddressInfo).port;
  const urlHost = listenHost.includes(':') ? `[${listenHost}]` : listenHost;

  return {
    host: listenHost,
    port,
    url: (scheme = 'http', path = '') => `${scheme}://${urlHost}:${port}${path}`,
    get connections() {
      return open.size;
    },
    get acceptedConnections() {
      return accepted;
    },
    get clientBytes() {
      return clientBytes;
    },
    get serverBytes() {
      return serverBytes;
    },
    setDelay(oneWayMs: number) {
      delayMs = checkDelay(oneWayMs);
    },
    cutAll,
    pause() {
      paused = true;
    },
    resume() {
      paused = false;
    },
    armCut(cut: ArmCutOptions) {
      const bytes = cut.onNextClientChunk ? 1 : cut.afterClientBytes;
      if (bytes === undefined || !Number.isSafeInteger(bytes) || bytes < 1)
        throw new RangeError('armCut needs onNextClientChunk or a positive afterClientBytes');
      if (armed) throw new Error('a cut is already armed');
      return new Promise<void>((resolve) => {
        armed = { remaining: bytes, forwardFirst: cut.forwardFirst, resolve };
      });
    },
    close() {
      armed = undefined;
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        cutAll();
      });
    },
  };
}
