/**
 * The platform's floor for an idle connection: what Node's TLS and `ws` alone keep per connection,
 * with no cardlink code in the process. Measured so the card server's figure can be read against
 * it (bench/server-throughput.ts): nothing a server built on node:tls does can go below it.
 *
 *   measureTlsWsFloor({ count, certFile, keyFile })
 *
 * Two processes, forked from this file: a bare https server with a `ws` WebSocketServer that
 * echoes, and a client that opens `count` wss connections (50 at a time) and exchanges one
 * 100-byte message on each (so both TLS record buffers are in use, as on a session after its
 * HELLO). The server process reports process.memoryUsage() after a full GC before and after.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import { fileURLToPath } from 'node:url';
import v8 from 'node:v8';
import vm from 'node:vm';
import WebSocket, { WebSocketServer } from 'ws';
import { nextMessage } from './child-message.js';

const SELF = fileURLToPath(import.meta.url);
const OPEN_CONCURRENCY = 50;
const MESSAGE_BYTES = 100;

export interface FloorResult {
  readonly connections: number;
  readonly kib_per_connection: { readonly rss: number; readonly heap_used: number };
}

interface ServerReport {
  readonly connections: number;
  readonly rssDelta: number;
  readonly heapDelta: number;
}

export async function measureTlsWsFloor(options: {
  readonly count: number;
  readonly certFile: string;
  readonly keyFile: string;
}): Promise<FloorResult> {
  const server = fork(SELF, ['--floor-server', options.certFile, options.keyFile], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const port = await nextMessage<number>(server);
    const client = fork(SELF, ['--floor-client', String(port), String(options.count)], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    try {
      const opened = await nextMessage<number>(client);
      server.send('measure');
      const report = await nextMessage<ServerReport>(server);
      if (opened !== options.count || report.connections !== options.count) {
        throw new Error(`floor: ${opened} opened, ${report.connections} seen by the server`);
      }
      const kib = (bytes: number) => Math.round((bytes / 1024 / options.count) * 100) / 100;
      return {
        connections: report.connections,
        kib_per_connection: { rss: kib(report.rssDelta), heap_used: kib(report.heapDelta) },
      };
    } finally {
      client.kill();
    }
  } finally {
    server.kill();
  }
}

function fullGc(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

async function serve(certFile: string, keyFile: string): Promise<void> {
  const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 4096 });
  const open = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    open.add(ws);
    ws.on('message', (data) => ws.send(data as Buffer));
    ws.on('close', () => open.delete(ws));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  fullGc();
  const before = process.memoryUsage();
  process.once('message', () => {
    fullGc();
    const after = process.memoryUsage();
    process.send!({
      connections: open.size,
      rssDelta: after.rss - before.rss,
      heapDelta: after.heapUsed - before.heapUsed,
    } satisfies ServerReport);
  });
  const address = server.address();
  process.send!(typeof address === 'object' && address ? address.port : 0);
}

async function connect(port: number, count: number): Promise<void> {
  const keep: WebSocket[] = [];
  const one = () =>
    new Promise<void>((resolve, reject) => {
      const ws = new WebSocket(`wss://127.0.0.1:${port}/`, {
        rejectUnauthorized: false,
        perMessageDeflate: false,
      });
      ws.once('open', () => {
        keep.push(ws);
        ws.send(Buffer.alloc(MESSAGE_BYTES));
        ws.once('message', () => resolve());
      });
      ws.once('error', reject);
    });
  for (let i = 0; i < count; i += OPEN_CONCURRENCY) {
    await Promise.all(Array.from({ length: Math.min(OPEN_CONCURRENCY, count - i) }, one));
  }
  process.send!(keep.length);
  setInterval(() => undefined, 60_000); // hold the connections until killed
}

if (process.argv[2] === '--floor-server') await serve(process.argv[3]!, process.argv[4]!);
if (process.argv[2] === '--floor-client') await connect(Number(process.argv[3]), Number(process.argv[4]));
