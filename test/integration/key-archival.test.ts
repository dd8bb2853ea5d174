/**
 * Key archival through the whole chain (docs/personalization.md, "Key archival and recovery"): a
 * card whose profile has `archiveKeyManagementKey` and `selfServiceEnrollment`, on a card server
 * whose config names a recovery certificate made by OpenSSL. `cardlink enroll` (daemon -> ENROLL
 * frame -> card server) archives the new 9D key in the enrollment's transaction; the archive,
 * decrypted with `openssl cms -decrypt` and the recovery key, is the private key of the 9D
 * certificate OpenSC reads from the card through pcscd, and opens a message `openssl cms -encrypt`
 * made for that certificate.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { recoverArchivedKey } from '../../server/admin/recover-key.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/profile.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { listArchivedKeys } from '../../server/storage/index.js';
import { runCardlink } from '../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';

function openssl(args: string[]): string {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `openssl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('key archival: a self-service enrollment archives the 9D key the card then holds', () => {
  let stack: DaemonStack;
  let kraDir: string;

  before(async () => {
    kraDir = fs.mkdtempSync(path.join(tmpdir(), 'cardlink-kra-'));
    openssl([
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-keyout',
      path.join(kraDir, 'kra.key'),
      '-out',
      path.join(kraDir, 'kra.pem'),
      '-subj',
      '/CN=Key Recovery Agent',
      '-days',
      '30',
      '-addext',
      'keyUsage=keyEncipherment',
    ]);
    const profile = parseCardProfile({
      ...profileToJson(await loadDefaultProfile()),
      name: 'archived',
      selfServiceEnrollment: true,
      archiveKeyManagementKey: true,
    });
    stack = await startDaemonStack({
      name: 'key-archival',
      server: { keyArchival: { recoveryCertificate: path.join(kraDir, 'kra.pem') } },
      cards: [{ label: 'archived card', pin: '24681357', puk: '97531864', profile }],
      pcscd: { cardlink: { slots: 1, friendlyName: 'cardlink Archival Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    const { storage, kek } = stack.cardServer.resources;
    await initEmbeddedCa({ storage, kek, crlUrl: crlUrlFor(stack.serverUrl), actor: 'admin:test' });
    await stack.daemon.login('alice');
    await stack.daemon.waitForCards((cs) => cs.filter((c) => c.state === 'inserted').length === 1);
  });

  after(async () => {
    await stack?.stop();
    if (kraDir) fs.rmSync(kraDir, { recursive: true, force: true });
  });

  it('cardlink enroll archives the new 9D key; the recovered key is the one behind the certificate OpenSC reads', async () => {
    const cardId = stack.cardIds[0]!;
    const { storage } = stack.cardServer.resources;
    assert.equal((await listArchivedKeys(storage, cardId)).length, 1, 'archived at creation');

    const run = await runCardlink(
      ['enroll', '--card', cardId, '--config', stack.daemon.configFile],
      process.env,
    );
    assert.equal(run.status, 0, run.stderr);
    const archives = await listArchivedKeys(storage, cardId);
    assert.deepEqual(
      archives.map((a) => a.slot),
      [undefined, 0x9d],
    );
    const serial9d = (
      await storage.db
        .selectFrom('issued_certificates')
        .select(['serial', 'slot'])
        .where('card_id', '=', cardId)
        .execute()
    ).find((r) => r.slot === 0x9d)!.serial;
    assert.equal(archives[1]!.certificateSerial, serial9d);

    // The 9D certificate as middleware sees it (OpenSC id 03), once the card is back in the reader.
    const inReader = (await stack.daemon.cards()).find((c) => c.cardId === cardId)!;
    await waitForCardPresent(inReader.readerName!);
    const dir = stack.dir;
    await promisify(execFile)(
      'pkcs11-tool',
      [
        '--module',
        OPENSC_PKCS11,
        '--read-object',
        '--type',
        'cert',
        '--id',
        '03',
        '-o',
        path.join(dir, '9d.der'),
      ],
      { env: stack.pcscd.env, cwd: dir },
    );
    openssl(['x509', '-inform', 'DER', '-in', path.join(dir, '9d.der'), '-out', path.join(dir, '9d.pem')]);
    assert.equal(
      BigInt(
        `0x${
          openssl(['x509', '-in', path.join(dir, '9d.pem'), '-noout', '-serial'])
            .trim()
            .split('=')[1]
        }`,
      ),
      BigInt(`0x${serial9d}`),
    );

    const recovered = await recoverArchivedKey({
      storage,
      cardId,
      serial: serial9d,
      reason: 'integration test',
      actor: 'admin:test',
    });
    fs.writeFileSync(path.join(dir, 'blob.cms'), recovered.envelope);
    openssl([
      'cms',
      '-decrypt',
      '-inform',
      'DER',
      '-in',
      path.join(dir, 'blob.cms'),
      '-recip',
      path.join(kraDir, 'kra.pem'),
      '-inkey',
      path.join(kraDir, 'kra.key'),
      '-out',
      path.join(dir, 'key.p8'),
    ]);
    const publicFromKey = openssl(['pkey', '-inform', 'DER', '-in', path.join(dir, 'key.p8'), '-pubout']);
    const publicFromCert = openssl(['x509', '-in', path.join(dir, '9d.pem'), '-noout', '-pubkey']);
    assert.equal(publicFromKey, publicFromCert);

    fs.writeFileSync(path.join(dir, 'mail.txt'), 'mail for the card\n');
    openssl([
      'cms',
      '-encrypt',
      '-aes256',
      '-binary',
      '-in',
      path.join(dir, 'mail.txt'),
      '-outform',
      'DER',
      '-out',
      path.join(dir, 'mail.cms'),
      path.join(dir, '9d.pem'),
    ]);
    openssl([
      'cms',
      '-decrypt',
      '-binary',
      '-inform',
      'DER',
      '-in',
      path.join(dir, 'mail.cms'),
      '-inkey',
      path.join(dir, 'key.p8'),
      '-keyform',
      'DER',
      '-out',
      path.join(dir, 'mail.out'),
    ]);
    assert.equal(fs.readFileSync(path.join(dir, 'mail.out'), 'utf8'), 'mail for the card\n');
  });
});
