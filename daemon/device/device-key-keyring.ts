/**
 * The device key kept in the desktop keyring: the Secret Service on Linux (gnome-keyring, KWallet,
 * KeePassXC), the Keychain on macOS, the Credential Manager on Windows, through @napi-rs/keyring.
 *
 * The keyring holds the PKCS#8 DER under a service and account; `<stateDir>/device-key.keyring`
 * (0600, no secret in it) says that this state directory's key is there and under which account.
 * That marker is what keeps the device's identity stable: with it, a locked or absent keyring is an
 * error to fix, never a reason to make a new key.
 *
 * Each attempt to create stores its key under an account of its own and then links the marker into
 * place: when two first starts race, the one whose marker landed wins and the other deletes its
 * entry and uses the winner's key, so no start runs with a key the keyring no longer holds.
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { AsyncEntry } from '@napi-rs/keyring';
import { CardlinkError } from '../../protocol/errors.js';
import { hasPosixPermissions } from '../control/control-paths.js';
import { deviceKeyOf, type DeviceKey } from './device-key-material.js';
import { linkNewPrivateFile } from './link-private-file.js';

export const DEVICE_KEY_KEYRING_MARKER = 'device-key.keyring';
export const KEYRING_SERVICE = 'cardlink device key';
/** A keyring call may wait for the user to type the keyring's password into an unlock prompt. */
export const KEYRING_TIMEOUT_MS = 30_000;
const MAX_MARKER_BYTES = 4096;

interface KeyringMarker {
  readonly service: string;
  readonly account: string;
}

export function keyringMarkerIn(stateDir: string): string {
  return path.join(stateDir, DEVICE_KEY_KEYRING_MARKER);
}

function locationOf(marker: KeyringMarker): string {
  return `keyring: ${marker.service} / ${marker.account}`;
}

function unavailable(message: string, context: Record<string, string>, cause?: unknown): CardlinkError {
  return new CardlinkError('ERR_DEVICE_KEY_UNAVAILABLE', message, context, { cause });
}

/** The keyring could not take a new key (none running, none unlocked, prompt dismissed): nothing was stored. */
export class KeyringStoreError extends CardlinkError {
  constructor(reason: string, cause: unknown) {
    super(
      'ERR_DEVICE_KEY_UNAVAILABLE',
      `the desktop keyring cannot store the device key: ${reason}`,
      {},
      { cause },
    );
    this.name = 'KeyringStoreError';
  }
}

/** What the keyring library said, without its stack: the reason shown to the user. */
function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * The keyring entry; on Linux only the Secret Service, never the kernel keyring (gone at reboot).
 * The library is loaded on first use: on a platform it has no binary for, that is a keyring that
 * cannot be used (a reason to fall back), not a daemon that cannot start.
 */
async function entryOf(marker: KeyringMarker): Promise<AsyncEntry> {
  const { AsyncEntry } = await import('@napi-rs/keyring');
  return new AsyncEntry(marker.service, marker.account, { linux: { store: 'secret-service' } });
}

/** The marker in `file`: a private regular file naming the entry, else ERR_DEVICE_KEY_UNAVAILABLE. */
export function readKeyringMarker(file: string): KeyringMarker {
  const bad = (why: string) => unavailable(`${file} ${why}; delete it to enrol a new device key`, { file });
  const stat = fs.lstatSync(file);
  if (!stat.isFile() || stat.size > MAX_MARKER_BYTES) throw bad('is not a cardlink keyring marker');
  if (hasPosixPermissions() && (stat.mode & 0o077) !== 0)
    throw new CardlinkError(
      'ERR_KEY_FILE_INSECURE',
      `${file} is writable or readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 on it`,
      { file },
    );
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    throw bad('is not JSON');
  }
  const { service, account } = (parsed ?? {}) as Record<string, unknown>;
  if (typeof service !== 'string' || typeof account !== 'string' || !service || !account)
    throw bad('does not name a keyring service and account');
  return { service, account };
}

/** The key the marker in `stateDir` points to; ERR_DEVICE_KEY_UNAVAILABLE when it cannot be read. */
export async function readDeviceKeyFromKeyring(stateDir: string): Promise<DeviceKey> {
  const file = keyringMarkerIn(stateDir);
  const marker = readKeyringMarker(file);
  const context = { file, service: marker.service, account: marker.account };
  let secret: number[] | null;
  try {
    secret = await (await entryOf(marker)).getSecret(AbortSignal.timeout(KEYRING_TIMEOUT_MS));
  } catch (error) {
    throw unavailable(
      `this device's key is in the desktop keyring (${file} says so), which cannot be read: ${reasonOf(error)}. ` +
        'Unlock the keyring (or start it) and try again',
      context,
      error,
    );
  }
  if (secret === null)
    throw unavailable(
      `this device's key should be in the desktop keyring (${file} says so) but the keyring has no such entry; ` +
        'delete that file to enrol a new device key',
      context,
    );
  const bytes = Buffer.from(secret);
  secret.fill(0);
  try {
    const key = deviceKeyOf(bytes, 'der', { store: 'keyring', location: locationOf(marker) });
    if (typeof key === 'string')
      throw unavailable(`the desktop keyring's entry for this device ${key}`, context);
    return key;
  } finally {
    bytes.fill(0);
  }
}

/**
 * Generates a key into the keyring and links the marker in `stateDir`; returns the key that marker
 * then names. Throws KeyringStoreError, with the keyring's reason, when it cannot store the key.
 */
export async function createDeviceKeyInKeyring(stateDir: string): Promise<DeviceKey> {
  const file = keyringMarkerIn(stateDir);
  // The state directory names the installation; the random part keeps racing starts apart.
  const marker = { service: KEYRING_SERVICE, account: `${stateDir}#${randomBytes(6).toString('hex')}` };
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const der = privateKey.export({ type: 'pkcs8', format: 'der' });
  let entry: AsyncEntry;
  try {
    entry = await entryOf(marker);
    await entry.setSecret(der, AbortSignal.timeout(KEYRING_TIMEOUT_MS));
  } catch (error) {
    throw new KeyringStoreError(reasonOf(error), error);
  } finally {
    der.fill(0);
  }
  // Our entry goes unless our marker names it; when another start linked its marker first, its
  // key is this device's.
  const forget = () => entry.deleteCredential(AbortSignal.timeout(KEYRING_TIMEOUT_MS)).catch(() => undefined);
  let linked: boolean;
  try {
    linked = linkNewPrivateFile(file, `${JSON.stringify(marker)}\n`);
  } catch (error) {
    await forget();
    throw error;
  }
  if (!linked) await forget();
  return readDeviceKeyFromKeyring(stateDir);
}
