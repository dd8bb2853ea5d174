/**
 * The device key kept in a file: `<stateDir>/device-key.pem`, PKCS#8 PEM, mode 0600, in a 0700
 * directory owned by the user. An existing file that others could read is refused rather than used
 * (a copied key would let another local user pass the device proof).
 */
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { hasPosixPermissions } from '../control/control-paths.js';
import { deviceKeyOf, type DeviceKey } from './device-key-material.js';

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
 * Generates a key into `file` (0600, fsynced, linked into place so a reader never sees half a key)
 * unless another start got there first; returns the key the file then holds.
 */
export function createDeviceKeyFile(file: string): DeviceKey {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  // A random name: a crashed earlier start may have left its temp file behind.
  const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    fs.writeSync(fd, String(pem));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    // link() fails if another start won the race; then its key is the one.
    fs.linkSync(temp, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    fs.rmSync(temp, { force: true });
  }
  return readDeviceKeyFile(file);
}
