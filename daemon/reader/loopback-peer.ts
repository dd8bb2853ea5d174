/**
 * Who is on the other end of a loopback TCP connection, on Linux: the uid owning the peer's socket,
 * read from /proc/net/tcp. Node has no SO_PEERCRED for TCP (and TCP has none); the kernel's socket
 * table names the owner of each socket, and on loopback both ends are in it.
 *
 * The vpcd transport uses it so that only pcscd (root) or this user can play vpcd: a loopback port is
 * open to every local user, and whoever talks to it talks to the card in that slot.
 */
import fs from 'node:fs';
import os from 'node:os';
import type net from 'node:net';

/** The kernel's IPv4 TCP socket table (this network namespace). */
const PROC_NET_TCP = '/proc/net/tcp';
/** Columns of /proc/net/tcp (net/ipv4/tcp_ipv4.c, get_tcp4_sock): local, remote, ..., uid. */
const LOCAL_COLUMN = 1;
const REMOTE_COLUMN = 2;
const UID_COLUMN = 7;

/** "a.b.c.d" and a port as /proc/net/tcp prints them: the address word in host byte order, hex. */
function procAddress(address: string, port: number): string | undefined {
  const bytes = address
    .replace(/^::ffff:/, '')
    .split('.')
    .map(Number);
  if (bytes.length !== 4 || bytes.some((b) => !Number.isInteger(b) || b < 0 || b > 255)) return undefined;
  const ordered = os.endianness() === 'LE' ? bytes.reverse() : bytes;
  const hex = (n: number, width: number) => n.toString(16).toUpperCase().padStart(width, '0');
  return `${ordered.map((b) => hex(b, 2)).join('')}:${hex(port, 4)}`;
}

/**
 * The uid owning the peer's end of `socket` (a connection accepted on IPv4 loopback), or undefined
 * when it cannot be told (not Linux, no /proc, IPv6, the peer already gone).
 */
export function loopbackPeerUid(socket: net.Socket, table = PROC_NET_TCP): number | undefined {
  const { remoteAddress, remotePort, localAddress, localPort } = socket;
  if (!remoteAddress || !remotePort || !localAddress || !localPort) return undefined;
  // The peer's socket: its local end is our remote end and the other way round.
  const peerLocal = procAddress(remoteAddress, remotePort);
  const peerRemote = procAddress(localAddress, localPort);
  if (!peerLocal || !peerRemote) return undefined;
  let text: string;
  try {
    text = fs.readFileSync(table, 'latin1');
  } catch {
    return undefined;
  }
  for (const line of text.split('\n')) {
    const columns = line.trim().split(/\s+/);
    if (columns[LOCAL_COLUMN] === peerLocal && columns[REMOTE_COLUMN] === peerRemote) {
      const uid = Number(columns[UID_COLUMN]);
      return Number.isInteger(uid) && uid >= 0 ? uid : undefined;
    }
  }
  return undefined;
}
