/**
 * End to end, all parts real, with short-lived access tokens (10 s): a token handed over in time
 * renews the session and the card stays; a headless login's refresh token lets the daemon renew by
 * itself; a token that expires without renewal takes the card out of the reader.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { decodeJwt } from 'jose';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import type { TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import type { TestIdp } from '../support/oidc-provider.js';
import type { PcscdInstance } from '../support/pcscd.js';

const TTL_SECONDS = 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const expiryOf = (token: string) => decodeJwt(token).exp!;

describe('the daemon and access token lifetime', () => {
  let stack: DaemonStack;
  let idp: TestIdp;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-token',
      idp: { accessTokenTtlSeconds: TTL_SECONDS },
      server: { clockToleranceSeconds: 0, limits: { tokenWarningSeconds: 5 } },
      cards: [{ pin: '111222', puk: '33344455' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink Token Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    ({ idp, pcscd, daemon } = stack);
  });

  after(async () => {
    await stack?.stop();
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
    assert.match(stack.daemonLog(), /access token refreshed/);
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
      // The tray hears why, as an error event.
      assert.ok(
        events.seen.some((e) => e.event === 'error' && e.data.code === 'ERR_AUTH_TOKEN_INVALID'),
        JSON.stringify(events.seen),
      );
    } finally {
      await events.close();
    }
  });
});
