/**
 * The external CA adapter against a real OpenSSL CA directory (`openssl ca` with index.txt,
 * serial and `copy_extensions = copy`) behind a two-line wrapper script: enrollment sends each
 * slot's request on stdin and writes the certificate from stdout to the card; OpenSSL verifies
 * them against that CA and they carry the template's SANs and EKUs (requested extensions copied
 * by `openssl ca`). A command that fails, prints something else, or a certificate for another key
 * leave the card as it was.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  certificateObjectTag,
  decodeCertificateObject,
  PemConverter,
} from '../../../apdu/piv/certificates/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import { externalCaEnv } from '../../../server/ca/external-ca.js';
import { createCard, loadDefaultProfile } from '../../../server/admin/index.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { getCardObject, listCardCertificates, type Storage } from '../../../server/storage/index.js';
import { createOpensslCa, writeScript, type OpensslCa } from '../../support/openssl-ca.js';
import { createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };

describe('enrollment through an external CA command (openssl ca)', () => {
  let dir: string;
  let backend: Backend;
  let storage: Storage;
  let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
  let kek: KekProvider;
  let wrapper: string;

  let ca: OpensslCa;
  const script = (name: string, body: string) => writeScript(dir, name, body);
  const newCard = async (subject: string) =>
    createCard({
      storage,
      kek,
      user: { issuer: 'https://idp.example', subject, tenant: 'acme' },
      profile: await loadDefaultProfile(),
    });

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-external-ca-'));
    ca = await createOpensslCa(dir);
    wrapper = ca.wrapper;
    backend = await createBackend('sqlite');
    storage = await backend.open();
    keys = await tempKeyFileProvider();
    kek = keys.provider;
  });
  after(async () => {
    await backend?.cleanup();
    await keys?.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the certificates openssl ca issued; OpenSSL verifies them and shows the template', async () => {
    const card = await newCard('alice');
    const enrolled = await enrollCard({
      storage,
      kek,
      cardId: card.cardId,
      claims: CLAIMS,
      externalCa: { argv: [wrapper] },
    });
    assert.deepEqual(
      enrolled.slots.map((s) => s.slot),
      [0x9a, 0x9c, 0x9d, 0x9e],
    );
    assert.equal(await ca.issuedCount(), 4, 'openssl ca recorded four certificates');
    for (const s of enrolled.slots) {
      const value = await getCardObject(storage, card.cardId, certificateObjectTag(s.slot)!);
      const der = decodeCertificateObject(value!);
      assert.deepEqual(Buffer.from(der), Buffer.from(s.certificate));
      const pem = join(dir, `alice-${s.slot.toString(16)}.pem`);
      await writeFile(pem, PemConverter.encode(Uint8Array.from(der), 'CERTIFICATE'));
      const verified = spawnSync('openssl', ['verify', '-CAfile', ca.caFile, pem], {
        encoding: 'utf8',
      });
      assert.equal(verified.status, 0, `${verified.stdout}${verified.stderr}`);
      const text = spawnSync('openssl', ['x509', '-in', pem, '-noout', '-text'], { encoding: 'utf8' }).stdout;
      assert.match(text, /Issuer: CN = Example External CA/);
      assert.match(text, new RegExp(`serialNumber = ${card.serial}`));
      if (s.slot === 0x9a) {
        assert.match(text, /Subject: CN = Alice Example/);
        assert.match(text, /TLS Web Client Authentication, Microsoft Smartcard Login/);
        assert.match(text, /email:alice@example\.com, othername: UPN::alice@corp\.example/);
      }
      if (s.slot === 0x9d) assert.match(text, /Key Encipherment/);
    }
    assert.equal(
      (await listCardCertificates(storage, card.cardId)).length,
      0,
      'the external CA keeps its own register',
    );
  });

  it('a failing command, output that is no certificate, or a certificate for another key leave the card as it was', async () => {
    const card = await newCard('bob');
    const before = await getCardObject(storage, card.cardId, certificateObjectTag(0x9a)!);
    const failing = await script('fail.sh', 'cat >/dev/null; echo "CA is offline" >&2; exit 3');
    await assert.rejects(
      enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS, externalCa: { argv: [failing] } }),
      (e: Error & { code?: string; context?: Record<string, unknown> }) => {
        assert.equal(e.code, 'ERR_ENROLLMENT');
        assert.match(e.message, /exited with 3/);
        assert.equal(e.context?.['stderr'], 'CA is offline');
        return true;
      },
    );
    const garbage = await script('garbage.sh', 'cat >/dev/null; echo hello');
    await assert.rejects(
      enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS, externalCa: { argv: [garbage] } }),
      /printed no certificate/,
    );
    const other = await script('other.sh', `cat >/dev/null; cat ${ca.caFile}`);
    await assert.rejects(
      enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS, externalCa: { argv: [other] } }),
      /not for the slot's key/,
    );
    await assert.rejects(
      enrollCard({ storage, kek, cardId: card.cardId, externalCa: { argv: [join(dir, 'missing.sh')] } }),
      /cannot be run/,
    );
    assert.deepEqual(await getCardObject(storage, card.cardId, certificateObjectTag(0x9a)!), before);
  });
});

describe('the external CA command environment', () => {
  it('passes what a command needs to run and none of the server settings (database password, HSM PIN)', () => {
    const env = externalCaEnv({
      PATH: '/usr/bin',
      LANG: 'C.UTF-8',
      HOME: '/var/lib/cardlink-server',
      CARDLINK_SERVER_DATABASE_URL: 'postgres://cardlink:s3cret@db/cards',
      CARDLINK_PKCS11_PIN: '1234',
      AWS_SECRET_ACCESS_KEY: 'x',
    });
    assert.deepEqual(env, { PATH: '/usr/bin', LANG: 'C.UTF-8', HOME: '/var/lib/cardlink-server' });
  });
});
