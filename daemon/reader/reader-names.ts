/**
 * Where the cardlink reader is unless configured otherwise, and the names pcscd gives its slots.
 * Read by the daemon (its settings, BridgeReader) and by `cardlink local-card`'s options, none of
 * which may load the PC/SC client (serve-card.ts, native pcsclite) just to know them.
 */

/** Where install-scripts/debian/setup.sh points the cardlink reader driver. */
export const DEFAULT_BRIDGE_SOCKET = '/run/cardlink/bridge.sock';
/** FRIENDLYNAME of the cardlink reader (daemon/ifd-handler/reader.conf.in). */
export const DEFAULT_READER_NAME = 'cardlink Virtual Reader';

/** pcsc-lite names the slots of a reader.conf reader "<FRIENDLYNAME> <reader index> <slot>" in hex. */
export function pcscReaderName(friendlyName: string, slot: number, index = 0): string {
  const hex = (n: number) => n.toString(16).toUpperCase().padStart(2, '0');
  return `${friendlyName} ${hex(index)} ${hex(slot)}`;
}
