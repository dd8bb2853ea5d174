/**
 * The part of a client's handshake on a stream socket that the control client and the reader
 * bridge client share: one outcome, whichever comes first, within a deadline.
 *
 * - `fail(err)` (or the deadline): the socket is destroyed and the handshake rejects with `err`;
 * - `succeed(make)`: the handshake's listeners come off the socket, then `make()` builds the
 *   client, which puts on its own, and the handshake resolves with it;
 * - whatever arrives after the outcome is ignored (`settled`).
 */
import type net from 'node:net';
import type { CardlinkError } from '../../protocol/errors.js';

export interface SocketHandshake<T> {
  /** Whether the outcome is decided (data handlers stop looking at the socket then). */
  readonly settled: boolean;
  fail(err: CardlinkError): void;
  succeed(make: () => T): void;
}

/**
 * Runs `start` (which puts the handshake's listeners on `socket` and sends the first message) with
 * a deadline of `timeoutMs`; `timeoutError` is the rejection when nothing decided it by then.
 */
export function socketHandshake<T>(
  socket: net.Socket,
  timeoutMs: number,
  timeoutError: () => CardlinkError,
  start: (handshake: SocketHandshake<T>) => void,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => handshake.fail(timeoutError()), timeoutMs);
    const handshake: SocketHandshake<T> = {
      get settled() {
        return settled;
      },
      fail(err) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.destroy();
        reject(err);
      },
      succeed(make) {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners();
        resolve(make());
      },
    };
    start(handshake);
  });
}
