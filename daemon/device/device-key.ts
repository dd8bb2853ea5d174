/**
 * The device key: an ECDSA P-256 key pair that identifies this installation to the card server
 * (docs/protocol.md, "Device proof"). Generated on first start; the private key never leaves the
 * user's state directory.
 *
 * Storage: a PKCS#8 PEM file, mode 0600, in a 0700 directory owned by the user. An existing file
 * or directory that others could read is refused rather than used (a copied key would let another
 * local user pass the device proof). Linux desktops without a running Secret Service are the
 * common case for this daemon, so the file is the one store; docs/security-model.md says why.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { ensurePrivateDirectory } from '../control/control-paths.js';

export const DEVICE_KEY_FILE = 'device-key.pem';

export interface DeviceKey {
  readonly privateKey: KeyObject;
  /** DER SubjectPublicKeyInfo, as sent in AUTH. */
  readonly spki: Uint8Array;
  /** Where it is kept. */
  readonly file: string;
}

function insecure(file: string, why: string): CardlinkError {
  return new CardlinkError('ERR_KEY_FILE_INSECURE', `${file} ${why}`, { file });
}

function readKey(file: string): DeviceKey {
  const stat = fs.lstatSync(file);
  if (!stat.isFile()) throw insecure(file, 'is not a regular file');
  if ((stat.mode & 0o077) !== 0)
    throw insecure(
      file,
      `is readable by other users (mode ${(stat.mode & 0o777).toString(8)}); run chmod 600 on it`,
    );
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(fs.readFileSync(file));
  } catch {
    throw new CardlinkError('ERR_KEY_FILE_INSECURE', `${file} does not hold a private key`, { file });
  }
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    throw new CardlinkError('ERR_KEY_FILE_INSECURE', `${file} is not a P-256 key`, { file });
  return { privateKey, spki: spkiOf(privateKey), file };
}

function spkiOf(privateKey: KeyObject): Uint8Array {
  return new Uint8Array(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }));
}

/** The device key in `stateDir`, generated (and written 0600, atomically) when there is none. */
export async function loadOrCreateDeviceKey(stateDir: string): Promise<DeviceKey & { created: boolean }> {
  await ensurePrivateDirectory(stateDir);
  const file = path.join(stateDir, DEVICE_KEY_FILE);
  if (fs.existsSync(file)) return { ...readKey(file), created: false };
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
  return { ...readKey(file), created: true };
}
