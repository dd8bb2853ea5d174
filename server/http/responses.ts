/**
 * Every HTTP answer of the public listener, both the ones written through a ServerResponse and
 * the ones written straight onto a socket (refused upgrades, malformed or timed-out requests), so
 * that each carries the same security headers.
 */
import { STATUS_CODES, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';

/**
 * HSTS: a browser that once reached the server over HTTPS refuses plain HTTP to that host for a
 * year (RFC 6797), so a later visit cannot be downgraded. No `includeSubDomains`: the card server
 * does not know what else runs under its host name. Browsers ignore it for IP-address hosts.
 */
export const HSTS_MAX_AGE_SECONDS = 31_536_000;

const SECURITY_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'Strict-Transport-Security': `max-age=${HSTS_MAX_AGE_SECONDS}`,
  'X-Content-Type-Options': 'nosniff',
  'Cache-Control': 'no-store',
});

/** A JSON answer. */
export function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

/**
 * An empty answer written onto a socket that HTTP no longer manages (an upgrade request, a
 * client error), then the socket is closed: at once when the answer has gone out, and in any case
 * by the connection guard's idle timeout if the peer never reads it.
 */
export function refuse(socket: Duplex, status: number, headers: Readonly<Record<string, string>> = {}): void {
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const lines = Object.entries({ ...SECURITY_HEADERS, ...headers }).map(([k, v]) => `${k}: ${v}\r\n`);
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n${lines.join('')}Content-Length: 0\r\nConnection: close\r\n\r\n`,
    () => socket.destroy(),
  );
}

/**
 * A binary answer (a certificate or CRL). Public data meant to be cached by relying parties, so
 * `Cache-Control` says how long instead of `no-store`.
 */
export function replyBytes(
  res: ServerResponse,
  body: Uint8Array,
  contentType: string,
  maxAgeSeconds: number,
  head = false,
): void {
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    'Cache-Control': `public, max-age=${maxAgeSeconds}`,
    'Content-Type': contentType,
    'Content-Length': body.byteLength,
  });
  res.end(head ? undefined : Buffer.from(body.buffer, body.byteOffset, body.byteLength));
}
