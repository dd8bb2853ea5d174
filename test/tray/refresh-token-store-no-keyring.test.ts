/**
 * The tray's refresh token store where no desktop keyring can be reached (no session bus: a
 * headless machine, an SSH session): `auto` falls back to the 0600 file and keeps the keyring's
 * reason, `keyring` fails and writes nothing. Its own process: the keyring library keeps the
 * session bus it first saw (refresh-token-store.test.ts has the real keyring).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { REFRESH_TOKEN_FILE, RefreshTokenStore } from '../../tray/refresh-token-store.js';

let dir: string;
const signIn = { issuer: 'http://127.0.0.1:1/', clientId: 'cardlink', refreshToken: 'file-token' };

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-token-store-nokeyring-'));
  process.env['DBUS_SESSION_BUS_ADDRESS'] = 'unix:path=/nonexistent/cardlink-test-bus';
  delete process.env['DISPLAY'];
  delete process.env['WAYLAND_DISPLAY'];
});
after(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('the refresh token store without a keyring', () => {
  it('auto falls back to a 0600 file in the state directory and says why', async () => {
    const stateDir = path.join(dir, 'auto');
    const store = new RefreshTokenStore({ stateDir });
    assert.equal(await store.save(signIn), 'file');
    assert.ok(store.keyringProblem, 'the keyring’s reason is kept for the tray to show');
    const file = path.join(stateDir, REFRESH_TOKEN_FILE);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    assert.equal(fs.statSync(stateDir).mode & 0o777, 0o700);
    assert.deepEqual(await new RefreshTokenStore({ stateDir }).load(), signIn);
    await store.clear();
    assert.equal(fs.existsSync(file), false);
  });

  it('keyring only: an error, and nothing on disk', async () => {
    const stateDir = path.join(dir, 'keyring');
    fs.mkdirSync(stateDir, { mode: 0o700 });
    const store = new RefreshTokenStore({ stateDir, setting: 'keyring' });
    await assert.rejects(store.save(signIn), (e: unknown) => {
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, 'ERR_TOKEN_STORE_UNAVAILABLE');
      assert.doesNotMatch(e.message, /file-token/);
      return true;
    });
    await assert.rejects(
      store.load(),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_TOKEN_STORE_UNAVAILABLE',
    );
    assert.deepEqual(fs.readdirSync(stateDir), []);
  });
});
