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
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { enrollCard } from '../../server/admin/enroll.js';
import { deleteCard } from '../../server/admin/index.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { freePort } from '../support/free-port.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';

const PIN = '24681357';
const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
/** PIV slot -> the object id OpenSC gives its key and certificate. */
const OPENSC_IDS: Record<string, string> = { '9a': '01', '9c': '02', '9d': '03', '9e': '04' };
const PKCS11_ENGINE = '/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so';

describe('enrollment with the embedded CA, read back through pcscd and OpenSC', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let caFile: string;
  let serials: string[];

  const run = async (cmd: string, args: string[], env: NodeJS.ProcessEnv = stack.pcscd.env) => {
    try {
      const { stdout, stderr } = await promisify(execFile)(cmd, args, { env, cwd: dir, encoding: 'utf8' });
      return `${stdout}${stderr}`;
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string };
      return assert.fail(`${cmd} ${args.join(' ')} failed\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
    }
  };
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
    stack = await startDaemonStack({
      name: 'enrollment',
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink Enrollment Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    cardId = stack.cardIds[0]!;
    const { storage, kek } = stack.cardServer.resources;
    const ca = await initEmbeddedCa({
      storage,
      kek,
      crlUrl: crlUrlFor(stack.serverUrl),
      actor: 'admin:test',
    });
    caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, ca.certificatePem);
    const enrolled = await enrollCard({ storage, kek, cardId, claims: CLAIMS, actor: 'admin:test' });
    serials = enrolled.slots.map((s) => s.serial);
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    await waitForCardPresent(cards[0]!.readerName!);
  });

  after(async () => {
    await stack?.stop();
  });

  for (const slot of ['9a', '9c', '9d', '9e']) {
    it(`OpenSC reads the ${slot.toUpperCase()} certificate from the card and openssl verify accepts it`, async () => {
      const der = path.join(dir, `${slot}.der`);
      await run('pkcs11-tool', [
        '--module',
        OPENSC_PKCS11,
        '--read-object',
        '--type',
        'cert',
        '--id',
        OPENSC_IDS[slot]!,
        '-o',
        der,
      ]);
      const pem = path.join(dir, `${slot}.pem`);
      await run('openssl', ['x509', '-inform', 'DER', '-in', der, '-out', pem]);
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
    await run('pkcs11-tool', [
      '--module',
      OPENSC_PKCS11,
      '--login',
      '--pin',
      PIN,
      '--sign',
      '--id',
      '01',
      '-m',
      'SHA256-RSA-PKCS',
      '-i',
      data,
      '-o',
      sig,
    ]);
    const pub = path.join(dir, '9a.pub.pem');
    await run('openssl', ['x509', '-in', path.join(dir, '9a.pem'), '-pubkey', '-noout', '-out', pub]);
    const out = await run('openssl', ['dgst', '-sha256', '-verify', pub, '-signature', sig, data]);
    assert.match(out, /Verified OK/);
  });

  it(
    'TLS client authentication with the 9A key (pkcs11 engine) to openssl s_server trusting only the CA',
    { skip: !fs.existsSync(PKCS11_ENGINE) && 'libengine-pkcs11-openssl is not installed' },
    async () => {
      // The server's own pair: a throw-away self-signed P-256 certificate.
      const serverKey = path.join(dir, 'tls-server.key');
      const serverCert = path.join(dir, 'tls-server.pem');
      await run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        serverKey,
        '-out',
        serverCert,
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '1',
      ]);
      const port = await freePort();
      const server: ChildProcess = spawn(
        'openssl',
        [
          's_server',
          '-accept',
          `127.0.0.1:${port}`,
          '-cert',
          serverCert,
          '-key',
          serverKey,
          '-Verify',
          '1',
          '-CAfile',
          caFile,
          '-verify_return_error',
          '-naccept',
          '1',
          '-www',
        ],
        { cwd: dir },
      );
      let serverOut = '';
      server.stdout!.on('data', (d: Buffer) => (serverOut += d.toString()));
      server.stderr!.on('data', (d: Buffer) => (serverOut += d.toString()));
      try {
        const deadline = Date.now() + 10_000;
        while (!serverOut.includes('ACCEPT') && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 50));
        const env = { ...stack.pcscd.env, PKCS11_MODULE_PATH: OPENSC_PKCS11 };
        const client = spawn(
          'openssl',
          [
            's_client',
            '-connect',
            `127.0.0.1:${port}`,
            '-engine',
            'pkcs11',
            '-keyform',
            'engine',
            '-key',
            `pkcs11:id=%01;type=private;pin-value=${PIN}`,
            '-cert',
            path.join(dir, '9a.pem'),
            '-CAfile',
            serverCert,
            '-verify_return_error',
          ],
          { cwd: dir, env },
        );
        let clientOut = '';
        client.stdout!.on('data', (d: Buffer) => (clientOut += d.toString()));
        client.stderr!.on('data', (d: Buffer) => (clientOut += d.toString()));
        client.stdin!.write('GET / HTTP/1.0\r\n\r\n');
        const code = await new Promise((resolve) => client.once('exit', resolve));
        assert.equal(code, 0, `client:\n${clientOut}\nserver:\n${serverOut}`);
        assert.match(clientOut, /Verify return code: 0 \(ok\)/);
        // -www answers with the session, which names the client certificate it verified.
        assert.match(clientOut, /Alice Example/, `client:\n${clientOut}\nserver:\n${serverOut}`);
      } finally {
        server.kill();
      }
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
