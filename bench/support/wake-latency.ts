/**
 * The platform's floor for one request through a process boundary: what a bare `ws` round trip
 * over TLS on loopback costs between two Node processes, with no cardlink code in either. Measured
 * so the chain's latencies (bench/daemon-chain.ts) can be read against the machine they ran on.
 *
 *   measureWakeLatency({ certFile, keyFile, n })
 *
 * Two cases, `n` round trips each (64-byte messages, the first tenth unmeasured):
 * - `peer_busy`: the server answers at once, so the client is still running when the answer comes;
 * - `after_idle_1ms`: the server holds each request for 1 ms of its own CPU before it answers, as
 *   a card server does while it signs and commits; the client idles meanwhile. Reported is the
 *   round trip minus that 1 ms.
 * On a VM the second is dearer: a CPU left idle halts, and waking it costs the sender a VM exit
 * and the receiver a rescheduled vCPU. Every hop of the chain whose receiver waited pays it.
 */
import { fork } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import WebSocket, { WebSocketServer } from 'ws';
import { nextMessage } from './child-message.js';
import { percentile, round } from './stats.js';

const SELF = fileURLToPath(import.meta.url);
const MESSAGE_BYTES = 64;
/** CPU the server spends on a request in the `after_idle_1ms` case. */
const HOLD_MS = 1;

export interface WakeLatencyResult {
  readonly method: string;
  readonly n: number;
  readonly peer_busy: { readonly p50_ms: number; readonly p90_ms: number };
  readonly after_idle_1ms: { readonly p50_ms: number; readonly p90_ms: number };
  /** after_idle_1ms.p50 - peer_busy.p50: what waking an idle peer adds to one round trip. */
  readonly wake_penalty_p50_ms: number;
}

export async function measureWakeLatency(options: {
  readonly certFile: string;
  readonly keyFile: string;
  readonly n: number;
}): Promise<WakeLatencyResult> {
  const server = fork(SELF, ['--wake-server', options.certFile, options.keyFile], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  try {
    const port = await nextMessage<number>(server, 'wake-latency server');
    const ws = new WebSocket(`wss://127.0.0.1:${port}/`, {
      ca: fs.readFileSync(options.certFile),
      perMessageDeflate: false,
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    try {
      const busy = await roundTrips(ws, options.n, 0);
      const idle = await roundTrips(ws, options.n, HOLD_MS);
      return {
        method: `bare https + ws echo between two Node processes on 127.0.0.1, ${MESSAGE_BYTES}-byte messages; after_idle_1ms: the server spins ${HOLD_MS} ms before answering, subtracted`,
        n: options.n,
        peer_busy: busy,
        after_idle_1ms: idle,
        wake_penalty_p50_ms: round(idle.p50_ms - busy.p50_ms),
      };
    } finally {
      ws.terminate();
    }
  } finally {
    server.kill();
  }
}

async function roundTrips(ws: WebSocket, n: number, holdMs: number) {
  const message = Buffer.alloc(MESSAGE_BYTES);
  message[0] = holdMs;
  const warmup = Math.ceil(n / 10);
  const times: number[] = [];
  for (let i = 0; i < warmup + n; i++) {
    const t0 = performance.now();
    const answered = new Promise<void>((resolve) => ws.once('message', () => resolve()));
    ws.send(message);
    await answered;
    if (i >= warmup) times.push(performance.now() - t0 - holdMs);
  }
  times.sort((a, b) => a - b);
  return { p50_ms: round(percentile(times, 50)), p90_ms: round(percentile(times, 90)) };
}

function serverMain(certFile: string, keyFile: string): void {
  const server = https.createServer({ cert: fs.readFileSync(certFile), key: fs.readFileSync(keyFile) });
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on('connection', (ws) => {
    ws.on('message', (data: Buffer) => {
      const holdMs = data[0] ?? 0;
      // Busy, not asleep: the request is being worked on while the client waits.
      const until = performance.now() + holdMs;
      while (performance.now() < until);
      ws.send(data);
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    process.send!(typeof address === 'object' && address ? address.port : 0);
  });
  process.on('disconnect', () => process.exit(0));
}

if (process.argv[2] === '--wake-server') serverMain(process.argv[3]!, process.argv[4]!);
