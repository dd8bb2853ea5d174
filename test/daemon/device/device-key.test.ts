import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DEVICE_KEY_FILE, loadOrCreateDeviceKey } from '../../../daemon/device/device-key.js';
import { CardlinkError } from '../../../protocol/errors.js';

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
    const key = await loadOrCreateDeviceKey(stateDir);
    assert.equal(key.created, true);
    assert.equal(key.file, path.join(stateDir, DEVICE_KEY_FILE));
    assert.equal(mode(stateDir), 0o700);
    assert.equal(mode(key.file), 0o600);
    assert.equal(key.privateKey.type, 'private');
    assert.equal(key.privateKey.asymmetricKeyType, 'ec');
    assert.equal(key.privateKey.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    // Only the key file is left (no temporary file).
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_FILE]);
    // The file is PKCS#8 PEM, and spki is the DER SubjectPublicKeyInfo of that key.
    const pem = fs.readFileSync(key.file, 'utf8');
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);
    const expectedSpki = createPublicKey(createPrivateKey(pem)).export({ type: 'spki', format: 'der' });
    assert.deepEqual(Buffer.from(key.spki), expectedSpki);
    assert.ok(key.spki instanceof Uint8Array);
  });

  it('the key signs, and the spki verifies its signatures', async () => {
    const key = await loadOrCreateDeviceKey(path.join(dir, 'state'));
    const data = Buffer.from('device proof');
    const signature = sign('sha256', data, key.privateKey);
    const publicKey = createPublicKey({ key: Buffer.from(key.spki), format: 'der', type: 'spki' });
    assert.ok(verify('sha256', data, publicKey, signature));
  });

  it('the modes are exact whatever the umask', async () => {
    const old = process.umask(0);
    try {
      const key = await loadOrCreateDeviceKey(path.join(dir, 'state'));
      assert.equal(mode(path.dirname(key.file)), 0o700);
      assert.equal(mode(key.file), 0o600);
    } finally {
      process.umask(old);
    }
  });

  it('a second call loads the same key with created=false', async () => {
    const stateDir = path.join(dir, 'state');
    const first = await loadOrCreateDeviceKey(stateDir);
    const second = await loadOrCreateDeviceKey(stateDir);
    assert.equal(second.created, false);
    assert.equal(second.file, first.file);
    assert.deepEqual(second.spki, first.spki);
    assert.deepEqual(
      second.privateKey.export({ type: 'pkcs8', format: 'der' }),
      first.privateKey.export({ type: 'pkcs8', format: 'der' }),
    );
  });

  it('two state dirs get different keys', async () => {
    const a = await loadOrCreateDeviceKey(path.join(dir, 'a'));
    const b = await loadOrCreateDeviceKey(path.join(dir, 'b'));
    assert.notDeepEqual(a.spki, b.spki);
  });

  it('concurrent first starts end with one key', async () => {
    const stateDir = path.join(dir, 'state');
    const keys = await Promise.all([loadOrCreateDeviceKey(stateDir), loadOrCreateDeviceKey(stateDir)]);
    const again = await loadOrCreateDeviceKey(stateDir);
    for (const k of keys) assert.deepEqual(k.spki, again.spki);
  });

  it('loads an existing P-256 PKCS#8 key it did not create', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' });
    const { stateDir } = stateWithKeyFile(pem);
    const key = await loadOrCreateDeviceKey(stateDir);
    assert.equal(key.created, false);
    assert.deepEqual(
      Buffer.from(key.spki),
      createPublicKey(privateKey).export({ type: 'spki', format: 'der' }),
    );
  });

  it('refuses a key file with mode 0644, naming the file', async () => {
    const stateDir = path.join(dir, 'state');
    const { file } = await loadOrCreateDeviceKey(stateDir);
    fs.chmodSync(file, 0o644);
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /mode 644.*chmod 600/));
    await assert.rejects(loadOrCreateDeviceKey(stateDir), (e: CardlinkError) => e.context.file === file);
  });

  it('refuses a key file that only the group can read (0640)', async () => {
    const stateDir = path.join(dir, 'state');
    const { file } = await loadOrCreateDeviceKey(stateDir);
    fs.chmodSync(file, 0o640);
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file));
  });

  it('refuses a state dir with mode 0755, naming the dir', async () => {
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir);
    fs.chmodSync(stateDir, 0o755);
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(stateDir, /0755/));
    assert.equal(fs.existsSync(path.join(stateDir, DEVICE_KEY_FILE)), false, 'no key written there');
  });

  it('refuses a state dir that became 0755 after the key was made', async () => {
    const stateDir = path.join(dir, 'state');
    await loadOrCreateDeviceKey(stateDir);
    fs.chmodSync(stateDir, 0o755);
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(stateDir));
  });

  it('refuses a state dir that is a symlink', async () => {
    const real = path.join(dir, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    const link = path.join(dir, 'link');
    fs.symlinkSync(real, link);
    await assert.rejects(loadOrCreateDeviceKey(link), insecure(link));
  });

  it('refuses a key file that is a symlink', async () => {
    const other = await loadOrCreateDeviceKey(path.join(dir, 'other'));
    const stateDir = path.join(dir, 'state');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const file = path.join(stateDir, DEVICE_KEY_FILE);
    fs.symlinkSync(other.file, file);
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /not a regular file/));
  });

  it('refuses a key file holding garbage', async () => {
    const { stateDir, file } = stateWithKeyFile('this is not a key\n');
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /does not hold a private key/));
  });

  it('refuses an empty key file', async () => {
    const { stateDir, file } = stateWithKeyFile('');
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file));
  });

  it('refuses an RSA key', async () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const { stateDir, file } = stateWithKeyFile(privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /is not a P-256 key/));
  });

  it('refuses an EC key on another curve (P-384)', async () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const { stateDir, file } = stateWithKeyFile(privateKey.export({ type: 'pkcs8', format: 'pem' }));
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /is not a P-256 key/));
  });

  it('refuses a file holding only a public key', async () => {
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const { stateDir, file } = stateWithKeyFile(publicKey.export({ type: 'spki', format: 'pem' }));
    await assert.rejects(loadOrCreateDeviceKey(stateDir), insecure(file, /does not hold a private key/));
  });

  it('never replaces a key file it refuses', async () => {
    const { stateDir, file } = stateWithKeyFile('garbage');
    await assert.rejects(loadOrCreateDeviceKey(stateDir));
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
    const key = await loadOrCreateDeviceKey(stateDir);
    assert.equal(key.created, true);
  });
});
