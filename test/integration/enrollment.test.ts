/**
 * Personalization through the whole chain (docs/personalization.md), every part real: the test
 * IdP, the card server on SQLite with its embedded issuing CA, pcscd with the cardlink reader,
 * `cardlink daemon` and OpenSC. After `enrollCard` the certificates OpenSC reads from the card
 * verify against the CA with `openssl verify -CAfile` and show the template's SANs and EKUs; the
 * 9A key signs what its certificate verifies; a TLS client authenticates with the 9A key through
 * the OpenSSL pkcs11 engine to `openssl s_server -Verify` trusting only that CA. After erase the
 * card leaves the reader, the database holds no key of it, and the CRL the server serves at
 * /ca/crl lists its certificates.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import type { EnrolledCard } from '../../server/admin/enroll.js';
import { deleteCard } from '../../server/admin/index.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import type { DaemonStack } from '../support/daemon-stack.js';
import { startEnrolledStack } from '../support/enrolled-stack.js';
import { OPENSC_ID, PKCS11_ENGINE, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };

describe('enrollment with the embedded CA, read back through pcscd and OpenSC', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let caFile: string;
  let serials: string[];

  let steps: CardSteps;
  const run = (cmd: string, args: string[]) => steps.run(cmd, args);
  const get = (url: string): Promise<{ status: number; type: string; body: Buffer }> =>
    new Promise((resolve, reject) => {
      https
        .get(url, { ca: fs.readFileSync(stack.cardServer.config.tls.certFile) }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              type: String(res.headers['content-type']),
              body: Buffer.concat(chunks),
            }),
          );
        })
        .on('error', reject);
    });

  before(async () => {
    let enrolled: EnrolledCard;
    ({ stack, steps, cardId, caFile, enrolled } = await startEnrolledStack({
      name: 'enrollment',
      readerName: 'cardlink Enrollment Reader',
      pin: PIN,
      claims: CLAIMS,
    }));
    dir = stack.dir;
    serials = enrolled.slots.map((s) => s.serial);
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    await waitForCardPresent(cards[0]!.readerName!);
  });

  after(async () => {
    await stack?.stop();
  });

  for (const slot of ['9a', '9c', '9d', '9e'] as const) {
    it(`OpenSC reads the ${slot.toUpperCase()} certificate from the card and openssl verify accepts it`, async () => {
      const pem = await steps.readCertificate(OPENSC_ID[slot], slot);
      const verified = await run('openssl', ['verify', '-CAfile', caFile, pem]);
      assert.match(verified, /: OK/);
      const text = await run('openssl', ['x509', '-in', pem, '-noout', '-text']);
      assert.match(text, new RegExp(`URI:${crlUrlFor(stack.serverUrl).replace(/[.]/g, '\\.')}`));
      if (slot === '9a') {
        assert.match(text, /TLS Web Client Authentication, Microsoft Smartcard Login/);
        assert.match(text, /email:alice@example\.com, othername: UPN::alice@corp\.example/);
        assert.match(text, /Subject: CN = Alice Example, serialNumber = \d+/);
      }
      if (slot === '9c') assert.match(text, /Digital Signature, Non Repudiation/);
      if (slot === '9d') assert.match(text, /Key Encipherment[\s\S]*E-mail Protection/);
    });
  }

  it('the 9A key on the card signs what its CA-issued certificate verifies', async () => {
    const data = path.join(dir, 'data.bin');
    fs.writeFileSync(data, 'sign me with the enrolled key');
    const sig = path.join(dir, 'data.sig');
    await steps.sign(OPENSC_ID['9a'], data, sig);
    const pub = path.join(dir, '9a.pub.pem');
    await run('openssl', ['x509', '-in', path.join(dir, '9a.pem'), '-pubkey', '-noout', '-out', pub]);
    const out = await run('openssl', ['dgst', '-sha256', '-verify', pub, '-signature', sig, data]);
    assert.match(out, /Verified OK/);
  });

  it(
    'TLS client authentication with the 9A key (pkcs11 engine) to openssl s_server trusting only the CA',
    { skip: !fs.existsSync(PKCS11_ENGINE) && 'libengine-pkcs11-openssl is not installed' },
    async () => {
      const { code, clientOut, serverOut } = await steps.tlsClientAuth({
        caFile,
        certFile: path.join(dir, '9a.pem'),
        keyId: OPENSC_ID['9a'],
      });
      assert.equal(code, 0, `client:\n${clientOut}\nserver:\n${serverOut}`);
      assert.match(clientOut, /Verify return code: 0 \(ok\)/);
      // -www answers with the session, which names the client certificate it verified.
      assert.match(clientOut, /Alice Example/, `client:\n${clientOut}\nserver:\n${serverOut}`);
    },
  );

  it('erase: the card leaves the reader, no key of it is in the database, the served CRL lists its certificates', async () => {
    const readerName = stack.pcscd.readerName(0);
    const { storage, kek } = stack.cardServer.resources;
    const result = await deleteCard({ storage, kek, cardId, actor: 'admin:test' });
    assert.deepEqual([...result.revoked].sort(), [...serials].sort());
    await waitForCardAbsent(readerName);
    for (const table of ['card_keys', 'card_objects', 'cards'] as const) {
      const column = table === 'cards' ? 'id' : 'card_id';
      const row = await storage.db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<number>().as('n'))
        .where(column, '=', cardId)
        .executeTakeFirstOrThrow();
      assert.equal(Number(row.n), 0, `${table} holds nothing of the card`);
    }
    const crl = await get(crlUrlFor(stack.serverUrl));
    assert.equal(crl.status, 200);
    assert.equal(crl.type, 'application/pkix-crl');
    const crlFile = path.join(dir, 'served.crl');
    fs.writeFileSync(crlFile, crl.body);
    const text = await run('openssl', [
      'crl',
      '-inform',
      'DER',
      '-in',
      crlFile,
      '-CAfile',
      caFile,
      '-noout',
      '-text',
    ]);
    assert.match(text, /verify OK/);
    for (const serial of serials) assert.match(text, new RegExp(serial, 'i'));
    await assert.rejects(
      promisify(execFile)('openssl', [
        'verify',
        '-crl_check',
        '-CAfile',
        caFile,
        '-CRLfile',
        crlFile,
        path.join(dir, '9a.pem'),
      ]),
      (e: { stdout?: string; stderr?: string }) => /certificate revoked/.test(`${e.stdout}${e.stderr}`),
    );
    const caCert = await get(new URL('/ca/cert', stack.serverUrl).href);
    assert.equal(caCert.status, 200);
    assert.equal(caCert.type, 'application/pkix-cert');
  });
});
