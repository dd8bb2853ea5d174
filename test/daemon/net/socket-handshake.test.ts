/**
 * The shared handshake deadline of the control client and the reader bridge client: against real
 * Unix sockets whose other end accepts and then says nothing (or closes), each client gives up
 * with its own error, and the helper settles once, destroying the socket on failure and handing a
 * clean socket to the client on success.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ControlClient } from '../../../daemon/control/control-client.js';
import { socketHandshake } from '../../../daemon/net/socket-handshake.js';
import { BridgeSocketClient } from '../../../daemon/reader/bridge-socket-client.js';
import { CardlinkError } from '../../../protocol/errors.js';

/** A deadline short enough to keep the test quick, long enough for a loaded machine to connect. */
const DEADLINE_MS = 300;

/** A Unix socket server that accepts and never writes; `close` ends its connections at once. */
async function silentServer(socketPath: string, behaviour: 'silent' | 'close' = 'silent') {
  const peers = new Set<net.Socket>();
  const server = net.createServer((s) => {
    peers.add(s);
    s.on('error', () => undefined);
    if (behaviour === 'close') s.destroy();
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    async close() {
      for (const p of peers) p.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.createConnection({ path: socketPath }, () => resolve(s));
    s.once('error', reject);
  });
}

describe('socket handshake deadline', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-handshake-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('rejects with the timeout error and destroys the socket when nothing decides in time', async () => {
    const socketPath = path.join(dir, 'silent.sock');
    const server = await silentServer(socketPath);
    try {
      const socket = await connect(socketPath);
      const started = Date.now();
      await assert.rejects(
        socketHandshake<string>(
          socket,
          DEADLINE_MS,
          () => new CardlinkError('ERR_BRIDGE_CLOSED', 'no answer in time'),
          () => undefined,
        ),
        (e: unknown) => e instanceof CardlinkError && e.message === 'no answer in time',
      );
      assert.ok(Date.now() - started >= DEADLINE_MS - 20, 'not before the deadline');
      assert.equal(socket.destroyed, true);
    } finally {
      await server.close();
    }
  });

  it('settles once: a success takes the listeners off first, a later failure changes nothing', async () => {
    const socketPath = path.join(dir, 'once.sock');
    const server = await silentServer(socketPath);
    try {
      const socket = await connect(socketPath);
      const settledSeen: boolean[] = [];
      const result = await socketHandshake<string>(
        socket,
        DEADLINE_MS,
        () => new CardlinkError('ERR_BRIDGE_CLOSED', 'late'),
        (handshake) => {
          socket.on('data', () => undefined);
          settledSeen.push(handshake.settled);
          handshake.succeed(() => {
            // The client built here puts on its own listeners; the handshake's are gone.
            assert.equal(socket.listenerCount('data'), 0);
            return 'client';
          });
          settledSeen.push(handshake.settled);
          handshake.fail(new CardlinkError('ERR_BRIDGE_CLOSED', 'after the fact'));
        },
      );
      assert.equal(result, 'client');
      assert.deepEqual(settledSeen, [false, true]);
      assert.equal(socket.destroyed, false, 'a failure after success does not destroy the socket');
      // The deadline was cleared: nothing rejects later.
      await new Promise((r) => setTimeout(r, DEADLINE_MS + 100));
      socket.destroy();
    } finally {
      await server.close();
    }
  });

  it('the control client gives up on a daemon that never answers the hello', async () => {
    // The client checks that the socket's directory and the secret file are private.
    const runtime = path.join(dir, 'run');
    await mkdir(runtime, { mode: 0o700 });
    const socketPath = path.join(runtime, 'control.sock');
    const secretFile = path.join(runtime, 'control.secret');
    await writeFile(secretFile, 'a'.repeat(64), { mode: 0o600 });
    const server = await silentServer(socketPath);
    try {
      await assert.rejects(
        ControlClient.connect({ socketPath, secretFile, clientName: 'test', connectTimeoutMs: DEADLINE_MS }),
        (e: unknown) =>
          e instanceof CardlinkError &&
          e.code === 'ERR_CONTROL_UNAVAILABLE' &&
          /did not answer the hello in time/.test(e.message) &&
          e.context['timeoutMs'] === DEADLINE_MS,
      );
    } finally {
      await server.close();
    }
  });

  it('the bridge client gives up on a driver that never sends its welcome, and reports a close', async () => {
    const silentPath = path.join(dir, 'bridge-silent.sock');
    const silent = await silentServer(silentPath);
    const closingPath = path.join(dir, 'bridge-closing.sock');
    const closing = await silentServer(closingPath, 'close');
    try {
      await assert.rejects(
        BridgeSocketClient.connect({ socketPath: silentPath, connectTimeoutMs: DEADLINE_MS }),
        (e: unknown) =>
          e instanceof CardlinkError &&
          e.code === 'ERR_BRIDGE_CLOSED' &&
          /did not answer the bridge handshake in time/.test(e.message),
      );
      await assert.rejects(
        BridgeSocketClient.connect({ socketPath: closingPath, connectTimeoutMs: 30_000 }),
        (e: unknown) =>
          e instanceof CardlinkError &&
          e.code === 'ERR_BRIDGE_CLOSED' &&
          /closed the bridge during the handshake/.test(e.message),
      );
    } finally {
      await silent.close();
      await closing.close();
    }
  });
});
