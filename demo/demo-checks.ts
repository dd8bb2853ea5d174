/**
 * What `cardlink demo` checks before it starts anything, each failure with the fix in its message:
 * pcscd answers, the cardlink reader driver is registered with it and free, and the demo's ports on
 * 127.0.0.1 are free.
 */
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { CardlinkError } from '../protocol/errors.js';
import { assertPcscdAvailable } from '../daemon/reader/pcsc-presence.js';
import { BridgeSocketClient } from '../daemon/reader/bridge-socket-client.js';

/** The set-up command that installs pcscd and registers the reader (README). */
export const SETUP_COMMAND = 'bash install-scripts/debian/setup.sh';
/** How long the reader driver may take to appear after pcscd was started by its socket. */
const DRIVER_APPEAR_MS = 5000;

/** Throws ERR_PCSCD_UNAVAILABLE, naming the fix, unless pcscd answers a PC/SC client. */
export function checkPcscd(): void {
  const custom = process.env['PCSCLITE_CSOCK_NAME'];
  if (!custom && !fs.existsSync('/usr/sbin/pcscd') && !fs.existsSync('/run/pcscd/pcscd.comm'))
    throw new CardlinkError(
      'ERR_PCSCD_UNAVAILABLE',
      `pcscd is not installed: run '${SETUP_COMMAND}' as root (it installs pcscd and registers the cardlink reader)`,
    );
  try {
    assertPcscdAvailable();
  } catch (error) {
    throw new CardlinkError(
      'ERR_PCSCD_UNAVAILABLE',
      `pcscd is not running: start it ('systemctl start pcscd.socket', or run 'pcscd' as root), or run '${SETUP_COMMAND}' as root`,
      { socket: custom ?? '/run/pcscd/pcscd.comm' },
      { cause: error },
    );
  }
}

/**
 * Connects to the cardlink reader driver once (the bridge handshake) and lets go again: throws
 * ERR_READER_DRIVER_MISSING when pcscd runs without it, ERR_SLOT_UNAVAILABLE when another program
 * already serves cards into it.
 */
export async function checkCardlinkReader(socketPath: string): Promise<void> {
  const deadline = Date.now() + DRIVER_APPEAR_MS;
  for (;;) {
    try {
      const client = await BridgeSocketClient.connect({ socketPath });
      await client.close();
      return;
    } catch (error) {
      const e = error as CardlinkError;
      const errno = e.context?.['errno'];
      const message = e.message ?? '';
      if (/another client is connected/.test(message))
        throw new CardlinkError(
          'ERR_SLOT_UNAVAILABLE',
          'the cardlink reader is in use by another program (a cardlink daemon, cardlink local-card or another ' +
            "cardlink demo): stop it (for the daemon: 'systemctl --user stop cardlink-daemon' or Ctrl-C), then run cardlink demo again",
          { socket: socketPath },
        );
      if (errno === 'EACCES' || /not root or the configured uid/.test(message))
        throw new CardlinkError(
          'ERR_READER_DRIVER_MISSING',
          `the cardlink reader at ${socketPath} is registered for another user: run ` +
            `'CARDLINK_USER=$(id -un) ${SETUP_COMMAND}' as root, or run the demo as that user`,
          { socket: socketPath },
        );
      // Started by socket activation just now, pcscd may still be loading the driver.
      if ((errno === 'ENOENT' || errno === 'ECONNREFUSED') && Date.now() < deadline) {
        await sleep(100);
        continue;
      }
      throw new CardlinkError(
        'ERR_READER_DRIVER_MISSING',
        `pcscd runs without the cardlink reader (nothing listens on ${socketPath}): run '${SETUP_COMMAND}' ` +
          'as root; it registers the reader in /etc/reader.conf.d/cardlink and restarts pcscd',
        { socket: socketPath, ...(typeof errno === 'string' ? { errno } : {}) },
        { cause: error },
      );
    }
  }
}

/**
 * The error for a taken port, with how to find who holds it and the fix. `resetWith` is the
 * command that starts over on another port (`<port>` stands for the number).
 */
export function portInUseError(what: string, port: number, resetWith: string): CardlinkError {
  return new CardlinkError(
    'ERR_PORT_IN_USE',
    `port ${port} on 127.0.0.1 (the ${what}) is in use, by another cardlink demo or another program ` +
      `("ss -ltnp 'sport = :${port}'" shows which): stop it, or start over on another port with ` +
      `'${resetWith}' (0: any free port)`,
    { port, what },
  );
}

/** Resolves when nothing listens on 127.0.0.1:`port`, else rejects with portInUseError. */
export async function checkPortFree(what: string, port: number, resetWith: string): Promise<void> {
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? portInUseError(what, port, resetWith) : error),
    );
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () => resolve());
  });
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** Ports tried below the system's ephemeral range before giving up on it. */
const PICK_ATTEMPTS = 50;
/** Lowest port picked (above the well-known and most registered service ports). */
const PICK_FROM = 10_000;

/** The first port of the range the system hands out for outgoing connections and port 0. */
function ephemeralRangeStart(): number {
  try {
    const first = Number(
      fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0],
    );
    if (Number.isInteger(first) && first > PICK_FROM) return first;
  } catch {
    // not Linux: the IANA dynamic range
  }
  return 49_152;
}

async function tryListen(port: number): Promise<number | undefined> {
  const server = net.createServer();
  const bound = await new Promise<number | undefined>((resolve) => {
    server.once('error', () => resolve(undefined));
    server.listen({ port, host: '127.0.0.1', exclusive: true }, () =>
      resolve((server.address() as net.AddressInfo).port),
    );
  });
  if (bound !== undefined) await new Promise<void>((resolve) => server.close(() => resolve()));
  return bound;
}

/**
 * A port on 127.0.0.1 that is free now, for a first run asked to pick one (0). It is kept for later
 * runs, so it comes from below the ephemeral range, where no outgoing connection can take it in the
 * meantime; only when none is free there does the system choose.
 */
export async function pickFreePort(): Promise<number> {
  const end = ephemeralRangeStart();
  for (let i = 0; i < PICK_ATTEMPTS; i++) {
    const port = await tryListen(PICK_FROM + Math.floor(Math.random() * (end - PICK_FROM)));
    if (port !== undefined) return port;
  }
  const port = await tryListen(0);
  if (port === undefined) throw new Error('no free port on 127.0.0.1');
  return port;
}
