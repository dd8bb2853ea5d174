import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  DEVICE_KEY_FILE,
  DEVICE_KEY_KEYRING_MARKER,
  loadOrCreateDeviceKey,
} from '../../../daemon/device/device-key.js';
import { CardlinkError } from '../../../protocol/errors.js';

// No desktop keyring in this file (device-key-keyring.test.ts has a real one): a session bus
// address where nothing listens, so `auto` never reaches the keyring of whoever runs the tests.
process.env['DBUS_SESSION_BUS_ADDRESS'] = 'unix:path=/nonexistent/cardlink-test-bus';

let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-device-key-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const mode = (p: string): number => fs.statSync(p).mode & 0o777;

/** A private state dir holding `content` as the key file with `fileMode`. */
function stateWithKeyFile(content: string | Buffer, fileMode = 0o600): { stateDir: string; file: string } {
  const stateDir = path.join(dir, 'state');
  fs.mkdirSync(stateDir, { mode: 0o700 });
  fs.chmodSync(stateDir, 0o700);
  const file = path.join(stateDir, DEVICE_KEY_FILE);
  fs.writeFileSync(file, content);
  fs.chmodSync(file, fileMode);
  return { stateDir, file };
}

/** An assert.rejects validator: ERR_KEY_FILE_INSECURE whose message names `where`. */
function insecure(where: string, problem?: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof CardlinkError, `expected a CardlinkError, got ${String(error)}`);
    assert.equal(error.code, 'ERR_KEY_FILE_INSECURE');
    assert.ok(error.message.includes(where), `message names ${where}: ${error.message}`);
    if (problem) assert.match(error.message, problem);
    return true;
  };
}

describe('loadOrCreateDeviceKey', () => {
  it('creates a P-256 key file 0600 in a state dir it creates 0700', async () => {
    const stateDir = path.join(dir, 'a', 'b', 'state');
    const key = await loadOrCreateDeviceKey(stateDir, 'file');
    assert.equal(key.created, true);
    assert.equal(key.location, path.join(stateDir, DEVICE_KEY_FILE));
    assert.equal(mode(stateDir), 0o700);
    assert.equal(mode(key.location), 0o600);
    assert.equal(key.privateKey.type, 'private');
    assert.equal(key.privateKey.asymmetricKeyType, 'ec');
    assert.equal(key.privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    // Only the key file is left (no temporary file).
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_FILE]);
    // The file is PKCS#8 PEM, and spki is the DER SubjectPublicKeyInfo of that key.
    const pem = fs.readFileSync(key.location, 'utf8');
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    const expectedSpki = createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' });
    assert.deepEqual(Buffer.from(key.spki), expectedSpki);
    assert.ok(key.spki instanceof Uint8Array);
  });

  it('the key signs, and the spki verifies its signatures', async () => {
    const key = await loadOrCreateDeviceKey(path.join(dir, 'state'), 'file');
    const data = Buffer.from('device proof');
    const signature = sign('sha256', data, key.privateKey);
    const publicKey = createPublicKey({ key: Buffer.from(key.spki), format: 'der', type: 'spki' });
    assert.ok(verify('sha256', data, publicKey, signature));
  });

  it('the modes are exact whatever the umask', async () => {
    const old = process.umask(0);
    try {
      const key = await loadOrCreateDeviceKey(path.join(dir, 'state'), 'file');
      assert.equal(mode(path.dirname(key.location)), 0o700);
      assert.equal(mode(key.location), 0o600);
    } finally {
      process.umask(old);
    }
  });

  it('a second call loads the same key with created=false', async () => {
    const stateDir = path.join(dir, 'state');
    const first = await loadOrCreateDeviceKey(stateDir, 'file');
    const second = await loadOrCreateDeviceKey(stateDir, 'file');
    assert.equal(second.created, false);
    assert.equal(second.location, first.location);
    assert.deepEqual(second.spki, first.spki);
    assert.deepEqual(
      second.privateKey.export({ type: 'pkcs8', format: 'der' }),
      first.privateKey.export({ type: 'pkcs8', format: 'der' }),
    );
  });

  it('two state dirs get different keys', async () => {
    const a = await loadOrCreateDeviceKey(path.join(dir, 'a'), 'file');
    const b = await loadOrCreateDeviceKey(path.join(dir, 'b'), 'file');
    assert.notDeepEqual(a.spki, b.spki);
  });

  it('concurrent first starts end with one key', async () => {
    const stateDir = path.join(dir, 'state');
    const keys = await Promise.all([
      loadOrCreateDeviceKey(stateDir, 'file'),
      loadOrCreateDeviceKey(stateDir, 'file'),
    ]);
    const again = await loadOrCreateDeviceKey(stateDir, 'file');
    for (const k of keys) assert.deepEqual(k.spki, again.spki);
  });

  it('loads an existing P-256 PKCS#8 key it did not create', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    const { stateDir } = stateWithKeyFile(pem);
    const key = await loadOrCreateDeviceKey(stateDir, 'file');
    assert.equal(key.created, false);
    assert.deepEqual(
      Buffer.from(key.spki),
      createPublicKey(privateKey).export({ type: 'spki', format: 'der' }),
    );
  });

  it('refuses a key file with mode 0644, naming the file', async () => {
    const stateDir = path.join(dir, 'state');
    const { location: file } = await loadOrCreateDeviceKey(stateDir, 'file');
    fs.chmodSync(file, 0o644);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file, /mode 644.*chmod 600/));
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'file'),
      (e: CardlinkError) => e.context.file === file,
    );
  });

  it('refuses a key file that only the group can read (0640)', async () => {
    const stateDir = path.join(dir, 'state');
    const { location: file } = await loadOrCreateDeviceKey(stateDir, 'file');
    fs.chmodSync(file, 0o640);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file));
  });

  it('refuses a state dir with mode 0755, naming the dir', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir);
    fs.chmodSync(stateDir, 0o755);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(stateDir, /0755/));
    assert.equal(fs.existsSync(path.join(stateDir, DEVICE_KEY_FILE)), false, 'no key written there');
  });

  it('refuses a state dir that became 0755 after the key was made', async () => {
    const stateDir = path.join(dir, 'state');
    await loadOrCreateDeviceKey(stateDir, 'file');
    fs.chmodSync(stateDir, 0o755);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(stateDir));
  });

  it('refuses a state dir that is a symlink', async () => {
    const real = path.join(dir, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(dir, 'link');
    fs.symlinkSync(real, link);
    await assert.rejects(loadOrCreateDeviceKey(link, 'file'), insecure(link));
  });

  it('refuses a key file that is a symlink', async () => {
    const other = await loadOrCreateDeviceKey(path.join(dir, 'other'), 'file');
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const file = path.join(stateDir, DEVICE_KEY_FILE);
    fs.symlinkSync(other.location, file);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file, /not a regular file/));
  });

  it('refuses a key file holding garbage', async () => {
    const { stateDir, file } = stateWithKeyFile('this is not a key\n');
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'file'),
      insecure(file, /does not hold a private key/),
    );
  });

  it('refuses an empty key file', async () => {
    const { stateDir, file } = stateWithKeyFile('');
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file));
  });

  it('refuses an RSA key', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const { stateDir, file } = stateWithKeyFile(privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file, /is not a P-256 key/));
  });

  it('refuses an EC key on another curve (P-384)', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const { stateDir, file } = stateWithKeyFile(privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'), insecure(file, /is not a P-256 key/));
  });

  it('refuses a file holding only a public key', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const { stateDir, file } = stateWithKeyFile(publicKey.export({ type: 'spki', format: 'pem' }));
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'file'),
      insecure(file, /does not hold a private key/),
    );
  });

  it('never replaces a key file it refuses', async () => {
    const { stateDir, file } = stateWithKeyFile('garbage');
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'file'));
    assert.equal(fs.readFileSync(file, 'utf8'), 'garbage');
  });
});

describe('loadOrCreateDeviceKey after a crash', () => {
  it('a temporary file left by an earlier run with the same pid does not block key creation', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    fs.writeFileSync(path.join(stateDir, `${DEVICE_KEY_FILE}.${process.pid}.tmp`), 'half-written', {
      mode: 0o600,
    });
    const key = await loadOrCreateDeviceKey(stateDir, 'file');
    assert.equal(key.created, true);
  });
});

describe('loadOrCreateDeviceKey without a desktop keyring', () => {
  const unavailable = (problem: RegExp) => (error: unknown) => {
    assert.ok(error instanceof CardlinkError, `expected a CardlinkError, got ${String(error)}`);
    assert.equal(error.code, 'ERR_DEVICE_KEY_UNAVAILABLE');
    assert.match(error.message, problem);
    return true;
  };

  it('auto keeps a new key in the file and says why not in the keyring', async () => {
    const stateDir = path.join(dir, 'state');
    const key = await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.equal(key.created, true);
    assert.equal(key.store, 'file');
    assert.equal(key.location, path.join(stateDir, DEVICE_KEY_FILE));
    assert.match(key.keyringUnavailable ?? '', /the desktop keyring cannot store the device key: .+/);
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_FILE]);
    const again = await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.equal(again.created, false);
    assert.equal(again.keyringUnavailable, undefined, 'an existing file key does not try the keyring');
    assert.deepEqual(again.spki, key.spki);
  });

  it('keyring fails with the reason and writes no key anywhere', async () => {
    const stateDir = path.join(dir, 'state');
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'keyring'),
      unavailable(/cannot store the device key/),
    );
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });

  it('keyring refuses a state dir whose key is in a file, and leaves the file alone', async () => {
    const stateDir = path.join(dir, 'state');
    const { location } = await loadOrCreateDeviceKey(stateDir, 'file');
    const pem = fs.readFileSync(location, 'utf8');
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'keyring'),
      unavailable(/deviceKeyStore is "keyring".*in .*device-key\.pem/),
    );
    assert.equal(fs.readFileSync(location, 'utf8'), pem);
  });

  it('file refuses a state dir whose key is in the keyring instead of making a second key', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const marker = path.join(stateDir, DEVICE_KEY_KEYRING_MARKER);
    fs.writeFileSync(marker, JSON.stringify({ service: 's', account: 'a' }), { mode: 0o600 });
    await assert.rejects(
      loadOrCreateDeviceKey(stateDir, 'file'),
      unavailable(/deviceKeyStore is "file".*keyring/),
    );
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_KEYRING_MARKER]);
  });

  it('a keyring marker with the keyring unreachable is an error, never a new file key', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    fs.writeFileSync(
      path.join(stateDir, DEVICE_KEY_KEYRING_MARKER),
      JSON.stringify({ service: 's', account: 'a' }),
      {
        mode: 0o600,
      },
    );
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), unavailable(/cannot be read/));
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_KEYRING_MARKER]);
  });

  it('a marker that is not JSON naming an entry is refused', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const marker = path.join(stateDir, DEVICE_KEY_KEYRING_MARKER);
    for (const content of ['not json', '{}', '{"service":"s","account":7}', 'null']) {
      fs.writeFileSync(marker, content, { mode: 0o600 });
      await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), unavailable(/delete it to enrol/));
    }
  });

  it('a key file and a marker together are refused: which key is registered is for the user to say', async () => {
    const stateDir = path.join(dir, 'state');
    await loadOrCreateDeviceKey(stateDir, 'file');
    fs.writeFileSync(path.join(stateDir, DEVICE_KEY_KEYRING_MARKER), '{}', { mode: 0o600 });
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), unavailable(/has both/));
  });
});
