/**
 * The one X.509 toolkit (docs/x509.md): @peculiar/x509, re-exported, plus the serial numbers
 * cardlink gives. Import the toolkit from here, never from the package: it finds its algorithms
 * through tsyringe, which refuses to load without the Reflect metadata API, so this module loads
 * that polyfill first (an ES module evaluates its imports in order). The polyfill only adds
 * functions to the global Reflect.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';

export * from '@peculiar/x509';

/** Serial number size: 16 random bytes, positive; RFC 5280 section 4.1.2.2 allows up to 20. */
export const CERTIFICATE_SERIAL_BYTES = 16;

/**
 * A random serial number as the toolkit takes it (hex): the top bit clear so the INTEGER is
 * positive without a 00 byte, the next one set so it is exactly CERTIFICATE_SERIAL_BYTES long.
 */
export function randomSerialNumber(): string {
  const serial = randomBytes(CERTIFICATE_SERIAL_BYTES);
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  return serial.toString('hex');
}
