/**
 * The key under which the connection guard counts a peer's sockets (`limits.maxSocketsPerAddress`).
 *
 * An IPv4 address counts as itself. An IPv6 address counts by its /64 prefix: one host, one
 * subscriber line, is usually given a whole /64 and may pick any address in it, so counting single
 * IPv6 addresses would let it multiply the cap at will. An IPv4-mapped IPv6 address
 * (`::ffff:192.0.2.1`, how a dual-stack listener reports IPv4 peers) counts as the IPv4 address, so
 * the same peer has the same key whichever way the listener was bound.
 */
import { isIPv4, isIPv6 } from 'node:net';

/** Leading 16-bit groups that name one host or subscriber: a /64 (RFC 4291: 64-bit interface ids). */
const IPV6_HOST_PREFIX_GROUPS = 4;

export function sourceAddressKey(address: string | undefined): string {
  // A socket reset before Node read its address; it closes at once and counts only that long.
  if (!address) return 'unknown';
  if (isIPv4(address) || !isIPv6(address)) return address;
  const groups = ipv6Groups(address);
  const mapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
  if (mapped) return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.');
  return `${groups
    .slice(0, IPV6_HOST_PREFIX_GROUPS)
    .map((g) => g.toString(16))
    .join(':')}::/64`;
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a dotted IPv4 tail converted). */
function ipv6Groups(address: string): number[] {
  let text = address.split('%')[0]!; // a zone index (fe80::1%eth0) is not part of the address
  const lastColon = text.lastIndexOf(':');
  const tail = text.slice(lastColon + 1);
  if (tail.includes('.')) {
    const [a, b, c, d] = tail.split('.').map(Number) as [number, number, number, number];
    text = `${text.slice(0, lastColon + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const parse = (part: string | undefined): number[] =>
    part ? part.split(':').map((g) => parseInt(g, 16)) : [];
  const front = parse(head);
  if (rest === undefined) return front;
  const back = parse(rest);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}
