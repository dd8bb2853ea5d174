/**
 * The tray's refresh token store against a real desktop keyring (GNOME Keyring's Secret Service on
 * a private session bus, test/support/secret-service.ts), and its 0600 file where no keyring is.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { AsyncEntry } from '@napi-rs/keyring';
import { CardlinkError } from '../../protocol/errors.js';
import {
  REFRESH_TOKEN_FILE,
  REFRESH_TOKEN_KEYRING_SERVICE,
  RefreshTokenStore,
} from '../../tray/refresh-token-store.js';
import { keyringForThisProcess } from '../support/secret-service.js';

const { dir: testDir } = keyringForThisProcess('cardlink-token-store-');
let count = 0;

function newStateDir(): string {
  const stateDir = path.join(testDir(), `state-${++count}`);
  fs.mkdirSync(stateDir, { mode: 0o700 });
  return stateDir;
}

const signIn = (token: string) => ({
  issuer: 'http://127.0.0.1:1/',
  clientId: 'cardlink',
  refreshToken: token,
});

describe('the refresh token store', () => {
  it('auto keeps the sign-in in the keyring under the installation’s entry, nothing on disk; a save replaces it; clear empties it', async () => {
    const stateDir = newStateDir();
    const store = new RefreshTokenStore({ stateDir });
    assert.equal(await store.load(), undefined);
    assert.equal(await store.save(signIn('first-token')), 'keyring');
    assert.deepEqual(fs.readdirSync(stateDir), []);
    const entry = new AsyncEntry(REFRESH_TOKEN_KEYRING_SERVICE, stateDir, {
      linux: { store: 'secret-service' },
    });
    assert.deepEqual(JSON.parse((await entry.getPassword())!), signIn('first-token'));

    // A rotation overwrites; another store object (the next start of the tray) reads it back.
    await store.save(signIn('rotated-token'));
    assert.deepEqual(await new RefreshTokenStore({ stateDir }).load(), signIn('rotated-token'));
    // Another installation's entry is another one.
    assert.equal(await new RefreshTokenStore({ stateDir: newStateDir() }).load(), undefined);

    await store.clear();
    assert.equal(await entry.getPassword(), null);
    assert.equal(await new RefreshTokenStore({ stateDir }).load(), undefined);
  });

  it('a save into the keyring deletes a file an earlier start left (no keyring then)', async () => {
    const stateDir = newStateDir();
    const file = path.join(stateDir, REFRESH_TOKEN_FILE);
    await new RefreshTokenStore({ stateDir, setting: 'file' }).save(signIn('file-token'));
    const store = new RefreshTokenStore({ stateDir });
    assert.deepEqual(await store.load(), signIn('file-token'));
    assert.equal(await store.save(signIn('keyring-token')), 'keyring');
    assert.equal(fs.existsSync(file), false);
    assert.deepEqual(await store.load(), signIn('keyring-token'));
    await store.clear();
  });

  it('file only: never the keyring', async () => {
    const stateDir = newStateDir();
    const fileOnly = new RefreshTokenStore({ stateDir, setting: 'file' });
    assert.equal(await fileOnly.save(signIn('only-in-file')), 'file');
    assert.equal(fs.statSync(path.join(stateDir, REFRESH_TOKEN_FILE)).mode & 0o777, 0o600);
    const entry = new AsyncEntry(REFRESH_TOKEN_KEYRING_SERVICE, stateDir, {
      linux: { store: 'secret-service' },
    });
    assert.equal(await entry.getPassword(), null);
    await fileOnly.clear();
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });

  it('a file others can read is refused without quoting it; a damaged one is no sign-in', async () => {
    const stateDir = newStateDir();
    const file = path.join(stateDir, REFRESH_TOKEN_FILE);
    const store = new RefreshTokenStore({ stateDir, setting: 'file' });
    await store.save(signIn('secret-refresh-token'));
    fs.chmodSync(file, 0o644);
    await assert.rejects(store.load(), (e: unknown) => {
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, 'ERR_KEY_FILE_INSECURE');
      assert.doesNotMatch(e.message, /secret-refresh-token/);
      return true;
    });
    fs.writeFileSync(file, '{"issuer": "x"', { mode: 0o600 });
    fs.chmodSync(file, 0o600);
    assert.equal(await store.load(), undefined);
  });
});
