/**
 * An existing intermediate as the issuing CA (`cardlink admin ca import`), and the `cardlink admin
 * ca` / `enroll` commands as an administrator runs them: the built CLI as a child process on a
 * temp data dir (SQLite and key file there). A root and an intermediate are made with the OpenSSL
 * command line; the certificates enrolled under the imported intermediate verify against the
 * root through it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PemConverter } from '../../../apdu/piv/certificates/index.js';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../../support/cli-run.js';

const show = (r: CliRun) => `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: 'pipe' });
}

describe('cardlink admin ca and enroll', () => {
  let dir: string;
  const env = () => ({ ...envWithoutCardlinkSettings(), XDG_STATE_HOME: join(dir, 'state') });
  const admin = (site: string, args: string[]) =>
    runCardlink(['admin', ...args, '--data-dir', join(dir, site)], env());
  const ok = async <T>(site: string, args: string[]): Promise<T> => {
    const r = await admin(site, [...args, '--json']);
    assert.equal(r.status, 0, show(r));
    return JSON.parse(r.stdout) as T;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-ca-import-'));
    // A root, and an intermediate it signs (CA:TRUE, keyCertSign + cRLSign), RSA-3072.
    await writeFile(
      join(dir, 'ext.cnf'),
      '[v3_int]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' +
        'subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' +
        '[v3_leaf]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n',
    );
    openssl(
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-384',
        '-nodes',
        '-keyout',
        'root.key',
        '-out',
        'root.pem',
        '-subj',
        '/CN=Example Root',
        '-days',
        '30',
      ],
      dir,
    );
    for (const name of ['int', 'leaf']) {
      openssl(
        [
          'req',
          '-new',
          '-newkey',
          'rsa:3072',
          '-nodes',
          '-keyout',
          `${name}.key`,
          '-out',
          `${name}.csr`,
          '-subj',
          `/CN=Example ${name}`,
        ],
        dir,
      );
      openssl(
        [
          'x509',
          '-req',
          '-in',
          `${name}.csr`,
          '-CA',
          'root.pem',
          '-CAkey',
          'root.key',
          '-CAcreateserial',
          '-days',
          '20',
          '-extfile',
          'ext.cnf',
          '-extensions',
          `v3_${name}`,
          '-out',
          `${name}.pem`,
        ],
        dir,
      );
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('refuses a certificate that is not a CA, and a key that does not match', async () => {
    const notCa = await admin('refusals', [
      'ca',
      'import',
      '--cert',
      join(dir, 'leaf.pem'),
      '--key',
      join(dir, 'leaf.key'),
    ]);
    assert.equal(notCa.status, 78, show(notCa));
    assert.match(notCa.stderr, /ERR_CA_INVALID/);
    assert.match(notCa.stderr, /not a CA certificate/);
    const mismatch = await admin('refusals', [
      'ca',
      'import',
      '--cert',
      join(dir, 'int.pem'),
      '--key',
      join(dir, 'leaf.key'),
    ]);
    assert.equal(mismatch.status, 78, show(mismatch));
    assert.match(mismatch.stderr, /does not match/);
    const none = await admin('refusals', ['ca', 'show']);
    assert.equal(none.status, 78, show(none));
    assert.match(none.stderr, /ERR_CA_MISSING/);
  });

  it('imports the intermediate; enrolled certificates verify against the root through it', async () => {
    const info = await ok<{ origin: string; subject: string; algorithm: string; crlUrl: string }>(
      'imported',
      [
        'ca',
        'import',
        '--cert',
        join(dir, 'int.pem'),
        '--key',
        join(dir, 'int.key'),
        '--crl-url',
        'http://crl.example/int.crl',
      ],
    );
    assert.deepEqual([info.origin, info.subject, info.algorithm], ['imported', 'CN=Example int', 'RSA3072']);
    const again = await admin('imported', [
      'ca',
      'import',
      '--cert',
      join(dir, 'int.pem'),
      '--key',
      join(dir, 'int.key'),
    ]);
    assert.equal(again.status, 78, show(again));
    assert.match(again.stderr, /ERR_CA_EXISTS/);

    const enrolled = await ok<{
      cardId: string;
      created: boolean;
      slots: { slot: string; serial: string }[];
      secrets: { pin?: string };
    }>('imported', [
      'enroll',
      '--issuer',
      'https://idp.example',
      '--subject',
      'alice',
      '--tenant',
      'acme',
      '--claim',
      'email=alice@example.com',
      '--claim',
      'upn=alice@corp.example',
    ]);
    assert.equal(enrolled.created, true);
    assert.match(enrolled.secrets.pin ?? '', /^\d{8}$/, 'the generated PIN is shown once');
    assert.deepEqual(
      enrolled.slots.map((s) => s.slot),
      ['9A', '9C', '9D', '9E'],
    );

    // The card's certificate objects, read back through the library after the CLI closed the database.
    const { openStorage, getCardObject } = await import('../../../server/storage/index.js');
    const { certificateObjectTag, decodeCertificateObject } =
      await import('../../../apdu/piv/certificates/index.js');
    const storage = await openStorage(`sqlite:${join(dir, 'imported', 'cardlink.db')}`);
    try {
      for (const slot of [0x9a, 0x9c, 0x9d, 0x9e]) {
        const value = await getCardObject(storage, enrolled.cardId, certificateObjectTag(slot)!);
        const pem = join(dir, `enrolled-${slot.toString(16)}.pem`);
        await writeFile(
          pem,
          PemConverter.encode(Uint8Array.from(decodeCertificateObject(value!)), 'CERTIFICATE'),
        );
        const r = spawnSync(
          'openssl',
          ['verify', '-CAfile', join(dir, 'root.pem'), '-untrusted', join(dir, 'int.pem'), pem],
          {
            encoding: 'utf8',
          },
        );
        assert.equal(r.status, 0, `${r.stdout}${r.stderr}`);
        const text = spawnSync('openssl', ['x509', '-in', pem, '-noout', '-text'], {
          encoding: 'utf8',
        }).stdout;
        assert.match(text, /Issuer: CN = Example int/);
        assert.match(text, /URI:http:\/\/crl\.example\/int\.crl/);
        assert.match(text, /Signature Algorithm: sha256WithRSAEncryption/);
      }
    } finally {
      await storage.close();
    }

    // Re-enrolling the card supersedes its certificates; `ca crl --out` writes a CRL listing them.
    const second = await ok<{ revoked: string[]; crlNumber: number }>('imported', [
      'enroll',
      enrolled.cardId,
    ]);
    assert.deepEqual([...second.revoked].sort(), enrolled.slots.map((s) => s.serial).sort());
    const crlOut = join(dir, 'now.crl.pem');
    const crl = await ok<{ crlNumber: number; entries: number }>('imported', ['ca', 'crl', '--out', crlOut]);
    assert.equal(crl.crlNumber, second.crlNumber + 1);
    assert.equal(crl.entries, 4);
    const text = spawnSync(
      'openssl',
      ['crl', '-in', crlOut, '-CAfile', join(dir, 'int.pem'), '-noout', '-text'],
      {
        encoding: 'utf8',
      },
    );
    assert.match(`${text.stdout}${text.stderr}`, /verify OK/);
    for (const s of enrolled.slots) assert.match(text.stdout, new RegExp(s.serial, 'i'));
    assert.match(await readFile(crlOut, 'utf8'), /^-----BEGIN X509 CRL-----/);

    const shown = await ok<{ issued: number; revoked: number; crlNumber: number }>('imported', [
      'ca',
      'show',
    ]);
    assert.deepEqual([shown.issued, shown.revoked, shown.crlNumber], [8, 4, crl.crlNumber]);
  });

  it('ca init generates the embedded CA with the CRL URL of the server configuration', async () => {
    await writeFile(join(dir, 'server.json'), JSON.stringify({ publicUrl: 'https://cards.example:8443/' }));
    const r = await runCardlink(
      [
        'admin',
        'ca',
        'init',
        '--name',
        'Example Cards CA',
        '--config',
        join(dir, 'server.json'),
        '--data-dir',
        join(dir, 'embedded'),
        '--json',
      ],
      env(),
    );
    assert.equal(r.status, 0, show(r));
    const info = JSON.parse(r.stdout) as {
      origin: string;
      subject: string;
      crlUrl: string;
      certificatePem: string;
    };
    assert.equal(info.origin, 'generated');
    assert.equal(info.subject, 'CN=Example Cards CA');
    assert.equal(info.crlUrl, 'https://cards.example:8443/ca/crl');
    assert.match(info.certificatePem, /^-----BEGIN CERTIFICATE-----/);
  });
});
