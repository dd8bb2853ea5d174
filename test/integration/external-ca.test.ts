/**
 * The external CA through the whole chain (docs/personalization.md "An external CA"), every part
 * real: the test IdP, the card server on PostgreSQL, pcscd with the cardlink reader, `cardlink daemon`,
 * OpenSC, the OpenSSL pkcs11 engine, and an `openssl ca` directory behind the wrapper script that
 * `cardlink admin enroll --ca-command` and `cardlink admin renew --ca-command` run (the built CLI,
 * as an administrator runs it, on the server's configuration).
 *
 * After enrollment each slot's certificate OpenSC reads from the card verifies against the
 * external CA and NOT against the server's embedded CA, and carries the template's SANs and
 * EKUs; the 9A key signs for its certificate and authenticates a TLS client to
 * `openssl s_server -Verify 1` trusting only the external CA; S/MIME signing with 9C and
 * encryption to / decryption with 9D round-trip with `openssl cms`. After renewal through the same
 * CA the old 9D key and certificate sit in retired slot 82 and a message encrypted to the OLD 9D
 * certificate still decrypts with the card; the renewed certificates verify against the external CA.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { createOpensslCa, type OpensslCa } from '../support/openssl-ca.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { cardSteps, OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const MESSAGE = 'Quarterly figures, for Alice only.\n';

interface AdminSlots {
  cardId: string;
  slots: { slot: string; serial: string }[];
  revoked: string[];
  notRevoked?: string[];
  retiredTo?: string;
  keyHistoryOnCard?: number;
}

const show = (r: CliRun) => `status ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

describe('enrollment and renewal through an external CA (openssl ca), read back through pcscd and OpenSC', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let ca: OpensslCa;
  let embeddedCaFile: string;
  let steps: CardSteps;
  let enrolled: AdminSlots;
  let readerName: string;
  let database: TestDatabase;

  /** `cardlink admin ... --json` on the running server's configuration (its database and KEK). */
  const admin = async (args: string[]): Promise<AdminSlots> => {
    const r = await runCardlink(
      ['admin', ...args, '--config', path.join(dir, 'server', 'server.json'), '--json'],
      { ...envWithoutCardlinkSettings(), XDG_STATE_HOME: path.join(dir, 'admin-state') },
    );
    assert.equal(r.status, 0, show(r));
    return JSON.parse(r.stdout) as AdminSlots;
  };
  const verifies = (caFile: string, pem: string) =>
    spawnSync('openssl', ['verify', '-CAfile', caFile, pem], { encoding: 'utf8' });
  const fingerprint = (pem: string) =>
    steps.run('openssl', ['x509', '-in', pem, '-noout', '-fingerprint', '-sha256']);

  before(async () => {
    // PostgreSQL, not SQLite: the running server holds a SQLite file exclusively, and the
    // administrator's CLI must reach the same database while the server runs.
    database = await createTestDatabase('cardlink_external_ca');
    stack = await startDaemonStack({
      name: 'external-ca',
      server: { databaseUrl: database.url },
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink ExternalCA Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir, pin: PIN });
    cardId = stack.cardIds[0]!;
    // The server has its own embedded CA too: the certificates must not be from it.
    const { storage, kek } = stack.cardServer.resources;
    const embedded = await initEmbeddedCa({
      storage,
      kek,
      crlUrl: crlUrlFor(stack.serverUrl),
      actor: 'admin:test',
    });
    embeddedCaFile = path.join(dir, 'embedded-ca.pem');
    fs.writeFileSync(embeddedCaFile, embedded.certificatePem);
    ca = await createOpensslCa(dir);
    enrolled = await admin([
      'enroll',
      cardId,
      '--ca-command',
      ca.wrapper,
      '--claim',
      'email=alice@example.com',
      '--claim',
      'upn=alice@corp.example',
      '--claim',
      'name=Alice Example',
    ]);
    fs.writeFileSync(path.join(dir, 'message.txt'), MESSAGE);
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    readerName = cards[0]!.readerName!;
    await waitForCardPresent(readerName);
  });

  after(async () => {
    await stack?.stop();
    await database?.drop();
  });

  it('openssl ca issued the four certificates; the embedded CA registered none', async () => {
    assert.equal(await ca.issuedCount(), 4);
    assert.deepEqual(
      enrolled.slots.map((s) => s.slot),
      ['9A', '9C', '9D', '9E'],
    );
    assert.deepEqual(enrolled.revoked, []);
    const registered = await stack.cardServer.resources.storage.db
      .selectFrom('issued_certificates')
      .select('serial')
      .where('card_id', '=', cardId)
      .execute();
    assert.equal(registered.length, 0);
  });

  for (const slot of ['9a', '9c', '9d', '9e'] as const) {
    it(`OpenSC reads the ${slot.toUpperCase()} certificate; it verifies against the external CA and not the embedded one`, async () => {
      const pem = await steps.readCertificate(OPENSC_ID[slot], slot);
      const external = verifies(ca.caFile, pem);
      assert.equal(external.status, 0, `${external.stdout}${external.stderr}`);
      assert.match(external.stdout, /: OK/);
      const embedded = verifies(embeddedCaFile, pem);
      assert.notEqual(embedded.status, 0, 'the embedded CA did not issue it');
      assert.match(`${embedded.stdout}${embedded.stderr}`, /unable to get local issuer certificate/);
      const text = await steps.run('openssl', ['x509', '-in', pem, '-noout', '-text']);
      assert.match(text, /Issuer: CN = Example External CA/);
      if (slot === '9a') {
        assert.match(text, /TLS Web Client Authentication, Microsoft Smartcard Login/);
        assert.match(text, /email:alice@example\.com, othername: UPN::alice@corp\.example/);
        assert.match(text, /Subject: CN = Alice Example, serialNumber = \d+/);
      }
      if (slot === '9c') assert.match(text, /Digital Signature, Non Repudiation[\s\S]*E-mail Protection/);
      if (slot === '9d') assert.match(text, /Key Encipherment[\s\S]*E-mail Protection/);
    });
  }

  it('the 9A key on the card signs what its external-CA certificate verifies', async () => {
    const data = path.join(dir, 'data.bin');
    fs.writeFileSync(data, 'sign me with the externally certified key');
    const sig = path.join(dir, 'data.sig');
    await steps.sign(OPENSC_ID['9a'], data, sig);
    const pub = path.join(dir, '9a.pub.pem');
    await steps.run('openssl', ['x509', '-in', path.join(dir, '9a.pem'), '-pubkey', '-noout', '-out', pub]);
    assert.match(
      await steps.run('openssl', ['dgst', '-sha256', '-verify', pub, '-signature', sig, data]),
      /Verified OK/,
    );
  });

  it('TLS client authentication with the 9A key (pkcs11 engine) to openssl s_server trusting only the external CA', async () => {
    const certFile = path.join(dir, '9a.pem');
    const ok = await steps.tlsClientAuth({ caFile: ca.caFile, certFile, keyId: OPENSC_ID['9a'] });
    assert.equal(ok.code, 0, `client:\n${ok.clientOut}\nserver:\n${ok.serverOut}`);
    assert.match(ok.clientOut, /Verify return code: 0 \(ok\)/);
    // -www answers with the session, which names the client certificate it verified.
    assert.match(ok.clientOut, /Alice Example/, `client:\n${ok.clientOut}\nserver:\n${ok.serverOut}`);
    // A server trusting only the embedded CA refuses the same client.
    const refused = await steps.tlsClientAuth({ caFile: embeddedCaFile, certFile, keyId: OPENSC_ID['9a'] });
    assert.notEqual(refused.code, 0, `client:\n${refused.clientOut}\nserver:\n${refused.serverOut}`);
    assert.doesNotMatch(refused.clientOut, /Alice Example/);
  });

  it('S/MIME: a message signed with the 9C key verifies against the external CA', async () => {
    const signed = path.join(dir, 'signed.pem');
    await steps.cmsSign(OPENSC_ID['9c'], path.join(dir, '9c.pem'), path.join(dir, 'message.txt'), signed);
    const verified = await steps.cmsVerify(signed, ca.caFile);
    assert.match(verified, /Verification successful/);
    assert.ok(verified.includes(MESSAGE));
  });

  it('S/MIME: a message encrypted to the 9D certificate decrypts with the card', async () => {
    const envelope = path.join(dir, 'envelope-9d.pem');
    await steps.cmsEncrypt(path.join(dir, '9d.pem'), path.join(dir, 'message.txt'), envelope);
    assert.equal(await steps.cmsDecrypt(envelope, OPENSC_ID['9d'], path.join(dir, '9d.pem')), MESSAGE);
  });

  it('renewal through the external CA: old 9D retired to 82, a message to the OLD 9D certificate still decrypts with the card', async () => {
    const oldCert = path.join(dir, 'old-9d.pem');
    fs.copyFileSync(path.join(dir, '9d.pem'), oldCert);
    const oldEnvelope = path.join(dir, 'old-envelope.pem');
    await steps.cmsEncrypt(oldCert, path.join(dir, 'message.txt'), oldEnvelope);

    const renewed = await admin(['renew', cardId, '--ca-command', ca.wrapper]);
    assert.equal(renewed.retiredTo, '82');
    assert.equal(renewed.keyHistoryOnCard, 1);
    assert.deepEqual(renewed.revoked, [], 'the card server cannot revoke the external CA certificates');
    assert.deepEqual(
      [...(renewed.notRevoked ?? [])].sort(),
      enrolled.slots.map((s) => s.serial).sort(),
      'the replaced certificates are named for revocation at the external CA',
    );
    assert.equal(await ca.issuedCount(), 8);

    // The CLI renewed in another process: the daemon opens the card again to see it.
    const control = await stack.daemon.control();
    try {
      await control.request('logout');
    } finally {
      await control.close();
    }
    await stack.daemon.login('alice');
    const oldFingerprint = await fingerprint(oldCert);
    let current = '';
    const deadline = Date.now() + 30_000;
    for (;;) {
      const cards = await stack.daemon.cards();
      if (cards[0]?.state === 'inserted') {
        await waitForCardPresent(cards[0].readerName!);
        current = await steps.readCertificate(OPENSC_ID['9d'], 'new-9d');
        if ((await fingerprint(current)) !== oldFingerprint) break;
      }
      if (Date.now() > deadline) assert.fail('the reader never showed the renewed 9D certificate');
      await new Promise((r) => setTimeout(r, 200));
    }
    const renewedSerial = renewed.slots.find((s) => s.slot === '9D')!.serial;
    assert.match(
      await steps.run('openssl', ['x509', '-in', current, '-noout', '-serial']),
      new RegExp(renewedSerial, 'i'),
    );
    assert.equal(
      verifies(ca.caFile, current).status,
      0,
      'the renewed 9D certificate is from the external CA',
    );
    assert.notEqual(verifies(embeddedCaFile, current).status, 0);

    const retired = await steps.readCertificate(OPENSC_ID.retired1, 'retired1');
    assert.equal(await fingerprint(retired), oldFingerprint, 'the old certificate is retired key 1');
    assert.equal(await steps.cmsDecrypt(oldEnvelope, OPENSC_ID.retired1, oldCert), MESSAGE);

    const newEnvelope = path.join(dir, 'new-envelope.pem');
    await steps.cmsEncrypt(current, path.join(dir, 'message.txt'), newEnvelope);
    assert.equal(await steps.cmsDecrypt(newEnvelope, OPENSC_ID['9d'], current), MESSAGE);
  });
});
