/**
 * The device key in a real desktop keyring: GNOME Keyring's Secret Service on a private D-Bus
 * session bus (test/support/secret-service.ts), reached through the same library the daemon uses.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AsyncEntry, findCredentialsAsync } from '@napi-rs/keyring';
import {
  DEVICE_KEY_FILE,
  DEVICE_KEY_KEYRING_MARKER,
  KEYRING_SERVICE,
  loadOrCreateDeviceKey,
} from '../../../daemon/device/device-key.js';
import { CardlinkError } from '../../../protocol/errors.js';
import { keyringForThisProcess } from '../../support/secret-service.js';

const { dir: testDir, keyring } = keyringForThisProcess('cardlink-device-keyring-');
let states = 0;

function newStateDir(): string {
  return path.join(testDir(), `state-${++states}`);
}

function markerOf(stateDir: string): { service: string; account: string } {
  return JSON.parse(fs.readFileSync(path.join(stateDir, DEVICE_KEY_KEYRING_MARKER), 'utf8')) as {
    service: string;
    account: string;
  };
}

function entryOf(stateDir: string): AsyncEntry {
  const { service, account } = markerOf(stateDir);
  return new AsyncEntry(service, account, { linux: { store: 'secret-service' } });
}

/** An assert.rejects validator: ERR_DEVICE_KEY_UNAVAILABLE whose message matches `problem`. */
function unavailable(problem: RegExp) {
  return (error: unknown): boolean => {
    assert.ok(error instanceof CardlinkError, `expected a CardlinkError, got ${String(error)}`);
    assert.equal(error.code, 'ERR_DEVICE_KEY_UNAVAILABLE');
    assert.match(error.message, problem);
    return true;
  };
}

describe('device key in the desktop keyring (GNOME Keyring, Secret Service)', () => {
  it('auto puts a new key into the keyring: no key file, a 0600 marker without key material', async () => {
    const stateDir = newStateDir();
    const key = await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.equal(key.created, true);
    assert.equal(key.store, 'keyring');
    assert.equal(key.keyringUnavailable, undefined);
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_KEYRING_MARKER]);
    const markerFile = path.join(stateDir, DEVICE_KEY_KEYRING_MARKER);
    assert.equal(fs.statSync(markerFile).mode & 0o777, 0o600);
    const marker = markerOf(stateDir);
    assert.equal(marker.service, KEYRING_SERVICE);
    assert.ok(marker.account.startsWith(`${stateDir}#`), marker.account);
    assert.equal(key.location, `keyring: ${KEYRING_SERVICE} / ${marker.account}`);

    // The keyring holds the PKCS#8 DER of that very key; the marker holds none of it.
    const secret = Buffer.from((await entryOf(stateDir).getSecret())!);
    const stored = createPrivateKey({ key: secret, format: 'der', type: 'pkcs8' });
    assert.deepEqual(createPublicKey(stored).export({ type: 'spki', format: 'der' }), Buffer.from(key.spki));
    const markerText = fs.readFileSync(markerFile, 'utf8');
    for (const part of [secret.toString('base64'), secret.toString('hex')])
      assert.ok(!markerText.includes(part.slice(-40)));
  });

  it('the next start loads the same key from the keyring, under auto and under keyring', async () => {
    const stateDir = newStateDir();
    const first = await loadOrCreateDeviceKey(stateDir, 'auto');
    for (const setting of ['auto', 'keyring'] as const) {
      const again = await loadOrCreateDeviceKey(stateDir, setting);
      assert.equal(again.created, false);
      assert.equal(again.store, 'keyring');
      assert.deepEqual(again.spki, first.spki);
    }
  });

  it('gives each state directory a key of its own', async () => {
    const a = await loadOrCreateDeviceKey(newStateDir(), 'keyring');
    const b = await loadOrCreateDeviceKey(newStateDir(), 'keyring');
    assert.notDeepEqual(a.spki, b.spki);
  });

  it('two first starts racing end with one key, the one the keyring keeps', async () => {
    const stateDir = newStateDir();
    const keys = await Promise.all([
      loadOrCreateDeviceKey(stateDir, 'auto'),
      loadOrCreateDeviceKey(stateDir, 'auto'),
    ]);
    assert.deepEqual(keys[0].spki, keys[1].spki);
    const again = await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.deepEqual(again.spki, keys[0].spki);
    // The loser took its own entry out again: the keyring keeps one for this state directory.
    const entries = (await findCredentialsAsync(KEYRING_SERVICE)).filter((c) =>
      c.account.startsWith(`${stateDir}#`),
    );
    assert.deepEqual(
      entries.map((c) => c.account),
      [markerOf(stateDir).account],
    );
  });

  it('an existing key file stays the device key under auto, and no marker appears', async () => {
    const stateDir = newStateDir();
    const fileKey = await loadOrCreateDeviceKey(stateDir, 'file');
    const key = await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.equal(key.store, 'file');
    assert.deepEqual(key.spki, fileKey.spki);
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_FILE]);
  });

  it('a marker whose keyring entry is gone is an error, and no new key is made', async () => {
    const stateDir = newStateDir();
    await loadOrCreateDeviceKey(stateDir, 'auto');
    assert.equal(await entryOf(stateDir).deleteCredential(), true);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), unavailable(/has no such entry/));
    assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_KEYRING_MARKER]);
  });

  it('an entry that holds no P-256 key is refused', async () => {
    const stateDir = newStateDir();
    await loadOrCreateDeviceKey(stateDir, 'auto');
    await entryOf(stateDir).setSecret(Buffer.from('not a key'));
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), unavailable(/does not hold a private key/));
  });

  it('a marker others can read is refused', async () => {
    const stateDir = newStateDir();
    await loadOrCreateDeviceKey(stateDir, 'auto');
    fs.chmodSync(path.join(stateDir, DEVICE_KEY_KEYRING_MARKER), 0o644);
    await assert.rejects(loadOrCreateDeviceKey(stateDir, 'auto'), (error: unknown) => {
      assert.ok(error instanceof CardlinkError);
      assert.equal(error.code, 'ERR_KEY_FILE_INSECURE');
      return true;
    });
  });

  // These lock the keyring, and the test cannot unlock it again without a prompt: keep them last.
  describe('when the keyring is locked', () => {
    let enrolled: string;
    before(async () => {
      enrolled = newStateDir();
      await loadOrCreateDeviceKey(enrolled, 'auto');
      await keyring().lock();
    });

    it('the enrolled key cannot be read: an error that says to unlock, and no file key instead', async () => {
      for (const setting of ['auto', 'keyring'] as const)
        await assert.rejects(loadOrCreateDeviceKey(enrolled, setting), unavailable(/Unlock the keyring/));
      assert.deepEqual(fs.readdirSync(enrolled), [DEVICE_KEY_KEYRING_MARKER]);
    });

    it('a new device under auto gets a file key and the keyring reason', async () => {
      const stateDir = newStateDir();
      const key = await loadOrCreateDeviceKey(stateDir, 'auto');
      assert.equal(key.created, true);
      assert.equal(key.store, 'file');
      assert.match(key.keyringUnavailable ?? '', /cannot store the device key/);
      assert.deepEqual(fs.readdirSync(stateDir), [DEVICE_KEY_FILE]);
    });

    it('a new device under keyring fails and writes nothing', async () => {
      const stateDir = newStateDir();
      await assert.rejects(loadOrCreateDeviceKey(stateDir, 'keyring'), unavailable(/cannot store/));
      assert.deepEqual(fs.readdirSync(stateDir), []);
    });
  });
});
