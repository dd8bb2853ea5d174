/**
 * Self-service enrollment through the whole chain (docs/personalization.md): `cardlink enroll` ->
 * control socket -> daemon -> ENROLL frame -> card server -> embedded CA, and the certificates
 * back in the reader through CARD_CHANGED, read by OpenSC through pcscd. The names in the
 * certificates come from the user's validated access token (the test IdP puts the account's
 * email and name in it), not from the command line. A card whose profile does not allow
 * self-service enrollment is refused with ERR_ENROLLMENT_NOT_ALLOWED and keeps its certificates.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/profile.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { runCardlink } from '../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { TEST_ACCOUNTS } from '../support/oidc-provider.js';

describe('self-service enrollment: cardlink enroll through the daemon and the card server', () => {
  let stack: DaemonStack;
  let dir: string;
  let caPem: string;

  const read9a = async (name: string): Promise<X509Certificate> => {
    const der = path.join(dir, name);
    await promisify(execFile)(
      'pkcs11-tool',
      ['--module', OPENSC_PKCS11, '--read-object', '--type', 'cert', '--id', '01', '-o', der],
      { env: stack.pcscd.env, cwd: dir },
    );
    return new X509Certificate(fs.readFileSync(der));
  };
  const enroll = (cardId: string) =>
    runCardlink(['enroll', '--card', cardId, '--config', stack.daemon.configFile], process.env);

  before(async () => {
    const base = await loadDefaultProfile();
    const allowed = parseCardProfile({
      ...profileToJson(base),
      name: 'self-service',
      selfServiceEnrollment: true,
    });
    stack = await startDaemonStack({
      name: 'self-enroll',
      cards: [
        { label: 'self-service card', pin: '24681357', puk: '97531864', profile: allowed },
        { label: 'admin-only card', pin: '13572468', puk: '86429753', profile: base },
      ],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink SelfEnroll Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    const { storage, kek } = stack.cardServer.resources;
    caPem = (await initEmbeddedCa({ storage, kek, crlUrl: crlUrlFor(stack.serverUrl), actor: 'admin:test' }))
      .certificatePem;
    await stack.daemon.login('alice');
    await stack.daemon.waitForCards((cs) => cs.filter((c) => c.state === 'inserted').length === 2);
  });

  after(async () => {
    await stack?.stop();
  });

  it('a card whose profile does not allow it is refused with a clear error, and left as it was', async () => {
    const cardId = stack.cardIds[1]!;
    const run = await enroll(cardId);
    assert.equal(run.status, 77, 'EX_NOPERM, as for the other refusals');
    assert.match(run.stderr, /does not allow self-service enrollment; ask an administrator/);
    assert.match(run.stderr, /ERR_ENROLLMENT_NOT_ALLOWED/);
    const issued = await stack.cardServer.resources.storage.db
      .selectFrom('issued_certificates')
      .select('serial')
      .where('card_id', '=', cardId)
      .execute();
    assert.equal(issued.length, 0);
  });

  it('cardlink enroll issues the profile certificates with the names of the access token, in the reader at once', async () => {
    const cardId = stack.cardIds[0]!;
    const ca = new X509Certificate(caPem);
    // The self-service card is the first one: OpenSC's first token, id 01 = its 9A.
    const run = await enroll(cardId);
    assert.equal(run.status, 0, run.stderr);
    assert.match(run.stdout, /4 certificates issued/);

    const { storage } = stack.cardServer.resources;
    const issued = await storage.db
      .selectFrom('issued_certificates')
      .select(['serial', 'slot'])
      .where('card_id', '=', cardId)
      .execute();
    assert.equal(issued.length, 4);
    const serial9a = issued.find((r) => r.slot === 0x9a)!.serial;

    const inReader = (await stack.daemon.cards()).find((c) => c.cardId === cardId)!;
    assert.equal(inReader.slot, 0, "the self-service card is the reader's first slot (OpenSC's first token)");
    await waitForCardPresent(inReader.readerName!);
    const cert = await read9a('9a.der');
    assert.equal(
      BigInt(`0x${cert.serialNumber}`),
      BigInt(`0x${serial9a}`),
      'OpenSC reads the new 9A certificate',
    );
    assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey));
    const alice = TEST_ACCOUNTS.find((a) => a.id === 'alice')!;
    // Names from the token: email and name, which no command line gave.
    assert.match(cert.subjectAltName ?? '', new RegExp(`email:${alice.email.replace(/[.]/g, '\\.')}`));
    assert.match(cert.subject, /CN=alice/);

    const audit = await storage.db
      .selectFrom('audit_log')
      .select(['actor', 'event_type'])
      .where('card_id', '=', cardId)
      .where('event_type', '=', 'card.enrolled')
      .execute();
    assert.equal(audit.length, 1);
    assert.match(audit[0]!.actor, /^user:/, 'audited as the user, not an administrator');
    const cards = await stack.daemon.cards();
    assert.equal(cards.find((c) => c.cardId === cardId)!.state, 'inserted');
  });
});
