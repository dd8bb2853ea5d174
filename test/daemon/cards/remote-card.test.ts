/**
 * The daemon's RemoteCard over a real ServerLink session to a real card server (tokens from the
 * test IdP): when another device takes the card, a command on the old handle is refused with
 * ERR_CARD_TAKEN_OVER and RemoteCard reports the device that took it, from the ERROR frame's
 * `byDeviceName` field. There is no card manager here, so nothing acts on the TAKEN_OVER push: this
 * is the path of a daemon whose connection lost the push.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RemoteCard } from '../../../daemon/cards/remote-card.js';
import { ServerLink } from '../../../daemon/session/server-link.js';
import { createLogger } from '../../../protocol/log.js';
import { CardlinkError } from '../../../protocol/errors.js';
import type { Frame, FrameOf } from '../../../protocol/wire/frames.js';
import { createTestCard, startTestCardServer, type TestCardServer } from '../../support/card-server.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { newDeviceKey, SessionClient } from '../../support/session-client.js';

const SELECT_PIV = Buffer.from('00A4040009A00000030800001000', 'hex');

describe('RemoteCard on a card another device takes over', () => {
  let idp: TestIdp;
  let dir: string;
  let server: TestCardServer;
  let link: ServerLink;
  let cardId: string;
  const pushes: Frame[] = [];

  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-remote-card-'));
    // Every device approved at once: the second device may open the card without an administrator.
    server = await startTestCardServer(dir, idp, { deviceRegistration: 'automatic' });
    cardId = (await createTestCard(server, idp, { pin: '246810', puk: '13572468' })).cardId;
    const device = newDeviceKey();
    link = new ServerLink({
      sessionUrl: server.server.sessionUrl,
      ca: server.tls.cert,
      device: { ...device, store: 'file', location: 'test' },
      deviceName: 'alice-laptop',
      clientName: 'remote-card-test',
      connectTimeoutMs: 10_000,
      commandTimeoutMs: 30_000,
      reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
      logger: createLogger({ component: 'test-daemon', level: 'error' }),
    });
    link.on('push', (frame) => pushes.push(frame));
    const session = once(link, 'session');
    await link.setToken((await idp.login()).accessToken);
    await session;
  });

  after(async () => {
    await link?.stop();
    await server?.stop();
    await idp?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('reports the name from the ERROR frame and fails the command with ERR_CARD_TAKEN_OVER', async () => {
    const opened = await link.request({ type: 'OPEN_CARD', cardId, takeOver: true });
    assert.equal(opened.type, 'CARD_OPENED', JSON.stringify(opened));
    const takenBy: string[] = [];
    const remote = new RemoteCard(link, cardId, (name) => takenBy.push(name));
    remote.attach((opened as FrameOf<'CARD_OPENED'>).handle);
    const selected = await remote.transmit(SELECT_PIV, false);
    assert.equal(Buffer.from(selected.subarray(-2)).toString('hex'), '9000');

    const desktop = await SessionClient.connect(server.server.sessionUrl, server.tls.cert);
    try {
      await desktop.hello();
      const ok = await desktop.auth((await idp.login()).accessToken, newDeviceKey(), 'alice-desktop');
      assert.equal(ok.type, 'AUTH_OK', JSON.stringify(ok));
      const took = await desktop.request({ type: 'OPEN_CARD', cardId, takeOver: true });
      assert.equal(took.type, 'CARD_OPENED', JSON.stringify(took));

      await assert.rejects(
        remote.transmit(SELECT_PIV, false),
        (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_CARD_TAKEN_OVER',
      );
      assert.deepEqual(takenBy, ['alice-desktop']);
      // The push said the same, in its own field.
      const push = pushes.find((p): p is FrameOf<'TAKEN_OVER'> => p.type === 'TAKEN_OVER');
      assert.equal(push?.byDeviceName, 'alice-desktop');
    } finally {
      desktop.close();
    }
  });
});
