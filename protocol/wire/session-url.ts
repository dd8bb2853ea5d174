/**
 * The session endpoint of a card server. The device proof signs this exact string, so the daemon
 * and the server derive it from the server's public URL with this one function.
 */
import { SESSION_PATH } from './limits.js';

/** `https://host:port/anything` -> `wss://host:port/v1/session` (same host and port, always TLS). */
export function sessionUrlFor(publicUrl: string): string {
  const url = new URL(publicUrl);
  url.protocol = 'wss:';
  url.pathname = SESSION_PATH;
  url.search = '';
  url.hash = '';
  return url.href;
}
