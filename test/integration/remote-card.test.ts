/**
 * A card on the card server used by OpenSC through pcscd: the daemon's front card in our reader,
 * its remote commands carried over a real TLS WebSocket session to a real server whose tokens
 * come from a real OpenID Provider. Counts the remote round trips middleware causes.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FrontCard } from '../../daemon/cards/front-card.js';
import { decodeSnapshot } from '../../apdu/piv/index.js';
import { BridgeSocketClient } from '../../daemon/reader/bridge-socket-client.js';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { FRAME_FLAG, type FrameOf } from '../../protocol/wire/frames.js';
import { verifySnapshotSignature } from '../../protocol/wire/snapshot-signature.js';
import { X509Certificate } from 'node:crypto';
import { createCard, loadDefaultProfile } from '../../server/admin/index.js';
import { startTestCardServer, type TestCardServer } from '../support/card-server.js';
import { startTestIdp, type TestIdp } from '../support/oidc-provider.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';
import { newDeviceKey, SessionClient } from '../support/session-client.js';
import { toolRunner } from '../support/tool-run.js';

const PIN = '314159';

describe('a card server card through pcscd and OpenSC', () => {
  let idp: TestIdp;
  let dir: string;
  let cardServer: TestCardServer;
  let pcscd: PcscdInstance;
  let bridge: BridgeSocketClient;
  let client: SessionClient;
  let front: FrontCard;
  let remoteApdus = 0;
  const remoteInstructions: number[] = [];

  // Asynchronous: the card answers from this process, whose event loop must keep running.
  const { run, p11 } = toolRunner(() => ({ env: pcscd.env, cwd: dir, output: 'stdout' }));

  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-remote-'));
    cardServer = await startTestCardServer(dir, idp);
    const { resources, server, tls } = cardServer;
    const card = await createCard({
      storage: resources.storage,
      kek: resources.kek,
      user: { issuer: idp.issuer, subject: 'alice', tenant: 'acme' },
      profile: await loadDefaultProfile(),
      pin: PIN,
      puk: '27182818',
    });

    client = await SessionClient.connect(server.sessionUrl, tls.cert);
    await client.hello();
    const ok = await client.auth((await idp.login()).accessToken, newDeviceKey(), 'test-desktop');
    assert.equal(ok.type, 'AUTH_OK');
    const opened = await client.request({ type: 'OPEN_CARD', cardId: card.cardId, takeOver: true });
    assert.equal(opened.type, 'CARD_OPENED');
    const { handle, snapshot, snapshotSignature } = opened as FrameOf<'CARD_OPENED'>;
    // The server signs the snapshot with its TLS key, bound to this session and card.
    const serverKey = new X509Certificate(tls.cert).publicKey;
    const binding = { sessionId: client.session!.sessionId, cardId: card.cardId, snapshot };
    assert.ok(verifySnapshotSignature(serverKey, binding, snapshotSignature));
    assert.equal(
      verifySnapshotSignature(serverKey, { ...binding, cardId: 'another' }, snapshotSignature),
      false,
    );

    front = new FrontCard(decodeSnapshot(snapshot), {
      async transmit(command, reset) {
        remoteApdus++;
        remoteInstructions.push(command[1]!);
        // A reset answered locally travels as the RESET_CARD flag of the next APDU.
        const answer = await client.request(
          { type: 'APDU', handle, command },
          { flags: reset ? FRAME_FLAG.RESET_CARD : 0 },
        );
        if (answer.type !== 'APDU_RESULT') throw new Error(`APDU answered ${answer.type}`);
        return answer.response;
      },
      async snapshot() {
        const answer = await client.request({ type: 'GET_SNAPSHOT', handle });
        if (answer.type !== 'SNAPSHOT') throw new Error(`GET_SNAPSHOT answered ${answer.type}`);
        return decodeSnapshot(answer.snapshot);
      },
    });

    pcscd = await startPcscd({ cardlink: { slots: 1, friendlyName: 'cardlink Test Reader' } });
    bridge = await BridgeSocketClient.connect({ socketPath: pcscd.socketPath });
    bridge.insert(0, front);
    await waitForCardPresent(pcscd.readerName(0));
  });

  after(async () => {
    await bridge?.close();
    await pcscd?.stop();
    client?.close();
    await cardServer?.stop();
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('pkcs11-tool -O lists the four certificates with no remote round trip', async () => {
    remoteApdus = 0;
    const out = await p11(['-O']);
    for (const label of [
      'Certificate for PIV Authentication',
      'Certificate for Digital Signature',
      'Certificate for Key Management',
      'Certificate for Card Authentication',
    ]) {
      assert.ok(out.includes(label), `${label} in:\n${out}`);
    }
    assert.equal(remoteApdus, 0);
  });

  it('C_Login is one round trip and a P-256 signature one more; openssl verifies it', async () => {
    fs.writeFileSync(path.join(dir, 'data'), 'signed on the card server, used through pcscd');
    await p11(['--read-object', '--type', 'cert', '--id', '04', '--output-file', 'cert.der']);
    await run('openssl', [
      'x509',
      '-inform',
      'der',
      '-in',
      'cert.der',
      '-noout',
      '-pubkey',
      '-out',
      'pub.pem',
    ]);
    remoteApdus = 0;
    remoteInstructions.length = 0;
    await p11([
      '--login',
      '--pin',
      PIN,
      '--sign',
      '--id',
      '04',
      '--mechanism',
      'ECDSA-SHA256',
      '--signature-format',
      'openssl',
      '--input-file',
      'data',
      '--output-file',
      'sig',
    ]);
    // One VERIFY for C_Login, one GENERAL AUTHENTICATE for C_Sign; everything else was local.
    assert.deepEqual(remoteInstructions, [0x20, 0x87]);
    assert.match(
      await run('openssl', ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', 'sig', 'data']),
      /Verified OK/,
    );
  });
});
