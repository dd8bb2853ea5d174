/**
 * Renewal and S/MIME through the whole chain (docs/personalization.md, "Lifecycle"), every part
 * real: the test IdP, the card server on SQLite with its embedded issuing CA, pcscd with the
 * cardlink reader, `cardlink daemon`, OpenSC and the OpenSSL pkcs11 engine.
 *
 * A message is encrypted with `openssl cms -encrypt` to the key management (9D) certificate of
 * the first enrollment; the card is then renewed with new keys. Through OpenSC the old key and
 * certificate now sit in retired slot 82 (Key History: one key with an on-card certificate), and
 * the old message still decrypts with the card; S/MIME signing with the new 9C key and
 * encryption to / decryption with the new 9D key round-trip with `openssl cms`.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { decodeKeyHistory, OBJECT_TAG } from '../../apdu/piv/objects/index.js';
import type { EnrolledCard } from '../../server/admin/enroll.js';
import { renewCard } from '../../server/admin/renew.js';
import { getCardObject, listAuditRows } from '../../server/storage/index.js';
import type { DaemonStack } from '../support/daemon-stack.js';
import { startEnrolledStack } from '../support/enrolled-stack.js';
import { OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const MESSAGE = 'Quarterly figures, for Alice only.\n';

describe('renewal with new keys: the old 9D key moves to a retired slot; S/MIME with the card', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let caFile: string;
  let oldCertFile: string;
  let oldEnvelope: string;
  let oldSerials: string[];
  let renewed: Awaited<ReturnType<typeof renewCard>>;

  let steps: CardSteps;
  const run = (cmd: string, args: string[]) => steps.run(cmd, args);
  const readCertificate = (id: string, name: string) => steps.readCertificate(id, name);
  /** The plaintext the card's key `id` recovers from `envelope`. */
  const decryptWithCard = (envelope: string, id: string, recipient: string) =>
    steps.cmsDecrypt(envelope, id, recipient);

  before(async () => {
    let enrolled: EnrolledCard;
    ({ stack, steps, cardId, caFile, enrolled } = await startEnrolledStack({
      name: 'renewal',
      readerName: 'cardlink Renewal Reader',
      pin: PIN,
      claims: CLAIMS,
    }));
    dir = stack.dir;
    oldSerials = enrolled.slots.map((s) => s.serial);

    // A sender encrypts to the first 9D certificate (as a mail client would from a directory).
    const oldDer = path.join(dir, 'old-9d.der');
    fs.writeFileSync(oldDer, enrolled.slots.find((s) => s.slot === 0x9d)!.certificate);
    oldCertFile = path.join(dir, 'old-9d.pem');
    await promisify(execFile)('openssl', ['x509', '-inform', 'DER', '-in', oldDer, '-out', oldCertFile]);
    fs.writeFileSync(path.join(dir, 'message.txt'), MESSAGE);
    oldEnvelope = path.join(dir, 'old-envelope.pem');
    await steps.cmsEncrypt(oldCertFile, path.join(dir, 'message.txt'), oldEnvelope);

    // Renewal by the profile's default policy: new keys.
    const { storage, kek } = stack.cardServer.resources;
    renewed = await renewCard({ storage, kek, cardId, actor: 'admin:test' });

    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    await waitForCardPresent(cards[0]!.readerName!);
  });

  after(async () => {
    await stack?.stop();
  });

  it('renewal issued new certificates, superseded the old ones and recorded the retirement', async () => {
    assert.equal(renewed.keys, 'new');
    assert.deepEqual(renewed.retired, { slot: 0x82, keyHistoryOnCard: 1 });
    assert.deepEqual([...renewed.revoked].sort(), [...oldSerials].sort());
    for (const s of renewed.slots) assert.ok(!oldSerials.includes(s.serial));
    const { storage } = stack.cardServer.resources;
    const history = decodeKeyHistory((await getCardObject(storage, cardId, OBJECT_TAG.KEY_HISTORY))!);
    assert.deepEqual(history, { onCard: 1, offCard: 0 });
    const audit = await listAuditRows(storage, { cardId }, { limit: 100 });
    const entry = audit.find((r) => r.event_type === 'card.renewed');
    assert.ok(entry, 'card.renewed audited');
    assert.match(entry.details, /"retiredTo":"0x82"/);
    // The subject and SANs came back from the old certificates without --claim.
    const nine = renewed.slots.find((s) => s.slot === 0x9a)!;
    assert.match(nine.subject, /CN=Alice Example/);
  });

  it('OpenSC shows the old key management certificate as retired key 1, and the new one in 9D', async () => {
    const retired = await readCertificate(OPENSC_ID.retired1, 'retired1');
    const a = await run('openssl', ['x509', '-in', retired, '-noout', '-serial', '-fingerprint', '-sha256']);
    const b = await run('openssl', [
      'x509',
      '-in',
      oldCertFile,
      '-noout',
      '-serial',
      '-fingerprint',
      '-sha256',
    ]);
    assert.equal(a, b);
    const current = await readCertificate(OPENSC_ID['9d'], 'new-9d');
    assert.notEqual(
      await run('openssl', ['x509', '-in', current, '-noout', '-fingerprint', '-sha256']),
      await run('openssl', ['x509', '-in', oldCertFile, '-noout', '-fingerprint', '-sha256']),
    );
    assert.match(await run('openssl', ['verify', '-CAfile', caFile, current]), /: OK/);
  });

  it('a message encrypted to the OLD 9D certificate still decrypts with the card (retired slot 82)', async () => {
    const out = await decryptWithCard(oldEnvelope, OPENSC_ID.retired1, oldCertFile);
    assert.equal(out, MESSAGE);
  });

  it('S/MIME: a message signed with the 9C key verifies against the CA', async () => {
    const signer = await readCertificate(OPENSC_ID['9c'], 'new-9c');
    const signed = path.join(dir, 'signed.pem');
    await steps.cmsSign(OPENSC_ID['9c'], signer, path.join(dir, 'message.txt'), signed);
    const verified = await steps.cmsVerify(signed, caFile);
    assert.match(verified, /Verification successful/);
    assert.ok(verified.includes(MESSAGE));
  });

  it('S/MIME: a message encrypted to the new 9D certificate decrypts with the card', async () => {
    const recipient = await readCertificate(OPENSC_ID['9d'], 'new-9d');
    const envelope = path.join(dir, 'new-envelope.pem');
    await steps.cmsEncrypt(recipient, path.join(dir, 'message.txt'), envelope);
    assert.equal(await decryptWithCard(envelope, OPENSC_ID['9d'], recipient), MESSAGE);
    // The retired key is another key: it cannot open the new message.
    await assert.rejects(
      promisify(execFile)(
        'openssl',
        [
          'cms',
          '-decrypt',
          '-engine',
          'pkcs11',
          '-keyform',
          'engine',
          '-inkey',
          steps.engineKey(OPENSC_ID.retired1),
          '-recip',
          oldCertFile,
          '-inform',
          'PEM',
          '-in',
          envelope,
        ],
        { env: steps.env, cwd: dir },
      ),
    );
  });
});
