/**
 * The device key kept in a file: `<stateDir>/device-key.pem`, PKCS#8 PEM, mode 0600, in a 0700
 * directory owned by the user. An existing file that others could read is refused rather than used
 * (a copied key would let another local user pass the device proof).
 */
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { hasPosixPermissions } from '../control/control-paths.js';
import { deviceKeyOf, type DeviceKey } from './device-key-material.js';
import { linkNewPrivateFile } from './link-private-file.js';

export const DEVICE_KEY_FILE = 'device-key.pem';

function insecure(file: string, why: string): CardlinkError {
  return new CardlinkError('ERR_KEY_FILE_INSECURE', `${file} ${why}`, { file });
}

export function deviceKeyFileIn(stateDir: string): string {
  return path.join(stateDir, DEVICE_KEY_FILE);
}

/** The key in `file`; ERR_KEY_FILE_INSECURE when it is not a private regular file with a P-256 key. */
export function readDeviceKeyFile(file: string): DeviceKey {
  const stat = fs.lstatSync(file);
  if (!stat.isFile()) throw insecure(file, 'is not a regular file');
  if (hasPosixPermissions() && (stat.mode & 0o077) !== 0)
    throw insecure(
      file,
      `is readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 on it`,
    );
  const key = deviceKeyOf(fs.readFileSync(file), 'pem', { store: 'file', location: file });
  if (typeof key === 'string') throw insecure(file, key);
  return key;
}

/**
 * Generates a key into `file` (linkNewPrivateFile: 0600, never half a key) unless another start got
 * there first; returns the key the file then holds.
 */
export function createDeviceKeyFile(file: string): DeviceKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  linkNewPrivateFile(file, String(privateKey.export({ type: 'pkcs8', format: 'pem' })));
  return readDeviceKeyFile(file);
}
