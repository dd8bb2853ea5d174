/**
 * `cardlink admin import-p12` as an administrator runs it: the built CLI as a child process on a
 * SQLite data directory, with PKCS#12 files made by openssl. The password comes from
 * CARDLINK_P12_PASSWORD or from one line on stdin, and is never printed; a wrong one exits 65
 * (ERR_PKCS12_PASSWORD), none at all 64, and a slot that is no key slot or a file that is none 64.
 * A file without a MAC needs --allow-no-mac. Into 9D of a card whose profile archives 9D keys, the
 * key is archived for the server config's recovery certificate, and without that setting the
 * import exits 78 (ERR_KEY_ARCHIVAL).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadDefaultProfile, profileToJson } from '../../../../server/admin/index.js';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../../../support/cli-run.js';
import { exportPkcs12, makeSelfSigned, type TestKeyPair } from '../../../support/pkcs12.js';

const show = (r: CliRun) => `status ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;
const PASSWORD = 'pkcs12 cli test';

describe('cardlink admin import-p12', () => {
  let dir: string;
  let rsa: TestKeyPair;
  let rsaP12: string;
  let ecP12: string;
  let noMacP12: string;
  let cardId: string;
  const admin = (args: string[], env: Record<string, string> = {}, input?: string) =>
    runCardlink(
      ['admin', ...args, '--data-dir', join(dir, 'site')],
      { ...envWithoutCardlinkSettings(), XDG_STATE_HOME: join(dir, 'state'), ...env },
      [],
      input,
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-p12-cli-'));
    rsa = await makeSelfSigned(dir, 'rsa', 'rsa2048', '/CN=Alice RSA');
    const ec = await makeSelfSigned(dir, 'ec', 'p256', '/CN=Alice EC');
    const ca = await makeSelfSigned(dir, 'ca', 'p256', '/CN=Some CA');
    rsaP12 = await exportPkcs12(dir, 'rsa', { keyFile: rsa.keyFile, certFile: rsa.certFile }, PASSWORD);
    ecP12 = await exportPkcs12(
      dir,
      'ec',
      { keyFile: ec.keyFile, certFile: ec.certFile, extraCertsFile: ca.certFile },
      PASSWORD,
    );
    noMacP12 = await exportPkcs12(
      dir,
      'nomac',
      { keyFile: rsa.keyFile, certFile: rsa.certFile },
      PASSWORD,
      'default',
      ['-nomac'],
    );
    const created = await admin(
      ['create-card', '--issuer', 'https://idp.example', '--subject', 'alice', '--tenant', 'acme', '--json'],
      {},
    );
    assert.equal(created.status, 0, show(created));
    cardId = (JSON.parse(created.stdout) as { cardId: string }).cardId;
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('imports with the password from CARDLINK_P12_PASSWORD (JSON result)', async () => {
    const r = await admin(['import-p12', cardId, '--slot', '9D', '--file', rsaP12, '--json'], {
      CARDLINK_P12_PASSWORD: PASSWORD,
    });
    assert.equal(r.status, 0, show(r));
    const result = JSON.parse(r.stdout) as Record<string, unknown>;
    assert.equal(result['slot'], '9D');
    assert.equal(result['algorithm'], 'RSA2048');
    assert.equal(result['serial'], new X509Certificate(rsa.certPem).serialNumber.toLowerCase());
    assert.equal(result['replaced'], true);
    assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), 'the password is not printed');
  });

  it('without the variable, reads one line on stdin; says what it left out', async () => {
    const r = await admin(['import-p12', cardId, '--slot', '9e', '--file', ecP12], {}, `${PASSWORD}\n`);
    assert.equal(r.status, 0, show(r));
    assert.match(r.stdout, /ECCP256 key and certificate imported into slot 9E/);
    assert.match(r.stdout, /CN=Alice EC/);
    assert.match(r.stdout, /1 other certificate\(s\) in the file left out/);
    assert.ok(!r.stdout.includes(PASSWORD) && !r.stderr.includes(PASSWORD), 'the password is not printed');
  });

  it('a wrong password exits 65, no password 64, a slot that is none 64', async () => {
    const wrong = await admin(['import-p12', cardId, '--slot', '9A', '--file', rsaP12], {}, 'guess\n');
    assert.equal(wrong.status, 65, show(wrong));
    assert.match(wrong.stderr, /ERR_PKCS12_PASSWORD/);
    assert.ok(!wrong.stderr.includes('guess'), 'the wrong password is not echoed');
    const none = await admin(['import-p12', cardId, '--slot', '9A', '--file', rsaP12], {}, '');
    assert.equal(none.status, 64, show(none));
    const badSlot = await admin(['import-p12', cardId, '--slot', '9B', '--file', rsaP12], {
      CARDLINK_P12_PASSWORD: PASSWORD,
    });
    assert.equal(badSlot.status, 64, show(badSlot));
    assert.match(badSlot.stderr, /not a PIV key slot/);
    const missing = await admin(['import-p12', cardId, '--slot', '9A', '--file', join(dir, 'absent.p12')], {
      CARDLINK_P12_PASSWORD: PASSWORD,
    });
    assert.equal(missing.status, 64, show(missing));
    const directory = await admin(['import-p12', cardId, '--slot', '9A', '--file', dir], {
      CARDLINK_P12_PASSWORD: PASSWORD,
    });
    assert.equal(directory.status, 64, show(directory));
  });

  it('a file without a MAC exits 65 unless --allow-no-mac, then imports and says so', async () => {
    const env = { CARDLINK_P12_PASSWORD: PASSWORD };
    const refused = await admin(['import-p12', cardId, '--slot', '9A', '--file', noMacP12], env);
    assert.equal(refused.status, 65, show(refused));
    assert.match(refused.stderr, /ERR_PKCS12_INVALID/);
    assert.match(refused.stderr, /--allow-no-mac/);
    const allowed = await admin(
      ['import-p12', cardId, '--slot', '9A', '--file', noMacP12, '--allow-no-mac'],
      env,
    );
    assert.equal(allowed.status, 0, show(allowed));
    assert.match(allowed.stdout, /the file had no MAC \(--allow-no-mac\): its integrity was not checked/);
  });

  it('into 9D of a card that archives 9D keys: archived for keyArchival.recoveryCertificate; without the setting exit 78', async () => {
    const kra = await makeSelfSigned(dir, 'kra', 'rsa2048', '/CN=Key Recovery Agent');
    const config = join(dir, 'server.json');
    await writeFile(config, JSON.stringify({ keyArchival: { recoveryCertificate: kra.certFile } }));
    const profile = join(dir, 'archived.json');
    await writeFile(
      profile,
      JSON.stringify({
        ...profileToJson(await loadDefaultProfile()),
        name: 'archived',
        archiveKeyManagementKey: true,
      }),
    );
    const created = await admin([
      'create-card',
      '--issuer',
      'https://idp.example',
      '--subject',
      'bob',
      '--tenant',
      'acme',
      '--profile',
      profile,
      '--config',
      config,
      '--json',
    ]);
    assert.equal(created.status, 0, show(created));
    const archivedCard = (JSON.parse(created.stdout) as { cardId: string }).cardId;
    const env = { CARDLINK_P12_PASSWORD: PASSWORD };

    const refused = await admin(['import-p12', archivedCard, '--slot', '9D', '--file', rsaP12], env);
    assert.equal(refused.status, 78, show(refused));
    assert.match(refused.stderr, /ERR_KEY_ARCHIVAL/);
    assert.match(refused.stderr, /keyArchival\.recoveryCertificate/);

    const imported = await admin(
      ['import-p12', archivedCard, '--slot', '9D', '--file', rsaP12, '--config', config, '--json'],
      env,
    );
    assert.equal(imported.status, 0, show(imported));
    const result = JSON.parse(imported.stdout) as Record<string, unknown>;
    assert.equal(typeof result['keyArchivedFor'], 'string');
    assert.equal(result['archivesDetached'], 1, "create-card's archive now names a replaced key");

    const listed = await admin(['list-archived-keys', archivedCard, '--json']);
    assert.equal(listed.status, 0, show(listed));
    const archives = JSON.parse(listed.stdout) as { slot: string; certificateSerial: string }[];
    assert.deepEqual(
      archives.map((a) => a.slot),
      ['replaced', '9D'],
    );
    // The archive names the serial without DER's leading zero octet (normaliseSerial).
    assert.equal(archives[1]!.certificateSerial, String(result['serial']).replace(/^(00)+(?=..)/, ''));
  });
});
