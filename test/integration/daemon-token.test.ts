/**
 * End to end, all parts real, with short-lived access tokens (10 s): a token handed over in time
 * renews the session and the card stays; a headless login's refresh token lets the daemon renew by
 * itself; a token that expires without renewal takes the card out of the reader.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { decodeJwt } from 'jose';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { createTestCard, startTestCardServer, type TestCardServer } from '../support/card-server.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { startTestIdp, type TestIdp } from '../support/oidc-provider.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';

const TTL_SECONDS = 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const expiryOf = (token: string) => decodeJwt(token).exp!;

describe('the daemon and access token lifetime', () => {
  let idp: TestIdp;
  let dir: string;
  let cardServer: TestCardServer;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;

  before(async () => {
    idp = await startTestIdp({ accessTokenTtlSeconds: TTL_SECONDS });
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-daemon-token-'));
    fs.mkdirSync(path.join(dir, 'server'));
    cardServer = await startTestCardServer(path.join(dir, 'server'), idp, {
      clockToleranceSeconds: 0,
      limits: { tokenWarningSeconds: 5 },
    });
    await createTestCard(cardServer, idp, { pin: '111222', puk: '33344455' });
    pcscd = await startPcscd({ cardlink: { slots: 2, friendlyName: 'cardlink Token Reader' } });
    daemon = await startTestDaemon({
      dir: path.join(dir, 'daemon'),
      serverUrl: `https://127.0.0.1:${cardServer.server.port}/`,
      serverCaFile: cardServer.config.tls.certFile,
      idp,
      pcscd,
      deviceName: 'alice-laptop',
    });
  });

  after(async () => {
    await daemon?.stop();
    await pcscd?.stop();
    await cardServer?.stop();
    await idp?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a fresh token handed over before expiry renews the session; the card stays', async () => {
    const first = (await idp.login()).accessToken;
    await daemon.handOver(first);
    await daemon.waitForCards((cards) => cards[0]?.state === 'inserted');
    await waitForCardPresent(pcscd.readerName(0));
    const events = await daemon.events();
    try {
      await sleep(3000);
      const second = (await idp.login()).accessToken;
      assert.ok(expiryOf(second) > expiryOf(first));
      await daemon.handOver(second);
      // Past the first token's expiry: the session lives on the second one.
      await sleep(Math.max(0, expiryOf(first) * 1000 - Date.now()) + 2000);
      const status = await daemon.status();
      assert.equal(status.state, 'connected');
      assert.equal(status.tokenExpiresAt, expiryOf(second));
      assert.equal(status.cards[0]!.state, 'inserted');
      assert.deepEqual(
        events.seen.filter((e) => e.event === 'card-removed' || e.event === 'disconnected'),
        [],
      );
    } finally {
      await events.close();
    }
  });

  it('after a headless login the daemon renews the token by itself with the refresh token', async () => {
    await daemon.login('alice');
    const loggedIn = (await daemon.status()).tokenExpiresAt!;
    await sleep(TTL_SECONDS * 1000 + 3000);
    const status = await daemon.status();
    assert.equal(status.state, 'connected');
    assert.ok(status.tokenExpiresAt! > loggedIn, 'the session runs on a refreshed token');
    assert.equal(status.cards[0]!.state, 'inserted');
    assert.match(fs.readFileSync(path.join(dir, 'daemon', 'daemon.log'), 'utf8'), /access token refreshed/);
  });

  it('a token that expires without renewal takes the card out of the reader', async () => {
    const token = (await idp.login()).accessToken; // no refresh token handed over
    await daemon.handOver(token);
    const events = await daemon.events();
    try {
      await sleep(Math.max(0, expiryOf(token) * 1000 - Date.now()) + 1000);
      await waitForCardAbsent(pcscd.readerName(0), 10_000);
      const status = await daemon.status();
      assert.equal(status.state, 'logged-out');
      assert.equal(status.cards[0]!.state, 'removed');
      assert.equal(status.lastError?.code, 'ERR_AUTH_TOKEN_INVALID');
      assert.ok(
        events.seen.some((e) => e.event === 'token-expiring'),
        JSON.stringify(events.seen),
      );
      assert.ok(
        events.seen.some((e) => e.event === 'card-removed'),
        JSON.stringify(events.seen),
      );
    } finally {
      await events.close();
    }
  });
});
