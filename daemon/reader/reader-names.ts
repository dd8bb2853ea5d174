/**
 * Where the cardlink reader is unless configured otherwise, and the names pcscd gives its slots.
 * Read by the daemon (its settings, BridgeReader) and by `cardlink local-card`'s options, none of
 * which may load the PC/SC client (serve-card.ts, native pcsclite) just to know them.
 */

/** Where install-scripts/debian/setup.sh points the cardlink reader driver. */
export const DEFAULT_BRIDGE_SOCKET = '/run/cardlink/bridge.sock';
/** FRIENDLYNAME of the cardlink reader (daemon/ifd-handler/reader.conf.in). */
export const DEFAULT_READER_NAME = 'cardlink Virtual Reader';

/** FRIENDLYNAME of vsmartcard's vpcd reader (its /etc/reader.conf.d/vpcd). */
export const DEFAULT_VPCD_READER_NAME = 'Virtual PCD';
/** vpcd's standard port (VPCDPORT, virtualsmartcard src/vpcd/vpcd.h): slot 0; slot i is this + i. */
export const DEFAULT_VPCD_PORT = 35963;
/** Where the daemon listens for vpcd unless `reader.vpcdHost` says another loopback address. */
export const DEFAULT_VPCD_HOST = '127.0.0.1';

/**
 * Whether `host` may be listened on for vpcd: IPv4 loopback (127.0.0.0/8) or `localhost`. Whoever
 * reaches the port talks to the cards in its slots, and vpcd connects over IPv4 only.
 */
export function isVpcdLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true;
  const parts = host.split('.');
  return (
    parts.length === 4 && parts[0] === '127' && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)
  );
}

/** pcsc-lite names the slots of a reader.conf reader "<FRIENDLYNAME> <reader index> <slot>" in hex. */
export function pcscReaderName(friendlyName: string, slot: number, index = 0): string {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
  return `${friendlyName} ${hex(index)} ${hex(slot)}`;
}
