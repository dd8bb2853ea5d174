/**
 * Key archival and recovery (server/archival/, server/admin/recover-key.ts, docs/personalization.md
 * "Key archival and recovery") on SQLite and PostgreSQL, with a recovery certificate made by
 * OpenSSL: a card made and enrolled with `archiveKeyManagementKey` has each 9D key archived; the
 * file `cardlink admin recover-key` writes opens with the exact `openssl cms -decrypt` command it
 * prints, and the recovered PKCS#8 decrypts a message `openssl cms -encrypt` made for the card's
 * 9D certificate; renewal with new keys leaves two archives (the old one moved to 82) that both
 * recover; archival required without a usable recovery certificate refuses with nothing written;
 * the recovery is audited with actor, card, serial and reason; no archive holds the key in the
 * clear; erase keeps the archives.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateObjectTag, decodeCertificateObject } from '../../../apdu/piv/certificates/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import {
  createCard,
  deleteCard,
  loadDefaultProfile,
  parseCardProfile,
  profileToJson,
  recoverArchivedKey,
  type CardProfile,
} from '../../../server/admin/index.js';
import { renewCard } from '../../../server/admin/renew.js';
import { loadRecoveryCertificate } from '../../../server/archival/recovery-certificate.js';
import { openPersistentCardState } from '../../../server/cards/index.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import { loadServerConfig } from '../../../server/config/server-config.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { unsealSecret } from '../../../server/keys/sealing.js';
import {
  claimCard,
  findCardKey,
  getCard,
  getCardObject,
  listArchivedKeys,
  listAuditRows,
  listCardCertificates,
  migrate,
  openStorage,
  type Storage,
} from '../../../server/storage/index.js';
import { envWithoutCardlinkSettings, runCardlink } from '../../support/cli-run.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const YEAR_MS = 365 * 86_400_000;

async function openMigrated(url: string): Promise<Storage> {
  const storage = await openStorage(url);
  await migrate(storage);
  return storage;
}

function openssl(args: string[], cwd?: string): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A self-signed certificate and key made by OpenSSL (`req -x509`), PEM files in `dir`. */
function makeCertificate(dir: string, name: string, keyArgs: string[], extensions: string[] = []): string {
  const r = openssl([
    'req',
    '-x509',
    ...keyArgs,
    '-nodes',
    '-keyout',
    join(dir, `${name}.key`),
    '-out',
    join(dir, `${name}.pem`),
    '-subj',
    `/CN=${name}`,
    '-days',
    '30',
    ...extensions.flatMap((x) => ['-addext', x]),
  ]);
  assert.equal(r.status, 0, r.out);
  return join(dir, `${name}.pem`);
}

describe('key archival settings', () => {
  it('the profile option: a boolean, needs a 9D slot, kept in the stored profile', async () => {
    const base = profileToJson(await loadDefaultProfile());
    const on = parseCardProfile({ ...base, archiveKeyManagementKey: true });
    assert.equal(on.archiveKeyManagementKey, true);
    assert.equal(profileToJson(on)['archiveKeyManagementKey'], true);
    assert.equal(parseCardProfile(base).archiveKeyManagementKey, false);
    assert.equal('archiveKeyManagementKey' in profileToJson(parseCardProfile(base)), false);
    assert.throws(
      () => parseCardProfile({ ...base, archiveKeyManagementKey: 'yes' }),
      (e: Error & { code?: string }) =>
        e.code === 'ERR_CONFIG_INVALID' && /archiveKeyManagementKey/.test(e.message),
    );
    const no9d = { ...base, slots: (base['slots'] as { slot: string }[]).filter((s) => s.slot !== '9D') };
    assert.throws(
      () => parseCardProfile({ ...no9d, archiveKeyManagementKey: true }),
      /no key management slot \(9D\)/,
    );
  });

  it('the server setting keyArchival.recoveryCertificate, resolved against dataDir; typos refused', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-archival-config-'));
    try {
      const file = join(dir, 'server.json');
      await writeFile(
        file,
        JSON.stringify({ dataDir: dir, keyArchival: { recoveryCertificate: 'kra.pem' } }),
      );
      const config = loadServerConfig({ config: file }, {});
      assert.equal(config.keyArchival.recoveryCertificate, join(dir, 'kra.pem'));
      assert.equal(loadServerConfig({ dataDir: dir }, {}).keyArchival.recoveryCertificate, undefined);
      await writeFile(file, JSON.stringify({ keyArchival: { recoveryCert: 'kra.pem' } }));
      assert.throws(() => loadServerConfig({ config: file }, {}), /keyArchival\.recoveryCert/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the recovery certificate must be RSA >= 2048, allow keyEncipherment and be valid now', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-archival-certs-'));
    try {
      const good = makeCertificate(dir, 'kra', ['-newkey', 'rsa:2048'], ['keyUsage=keyEncipherment']);
      const loaded = await loadRecoveryCertificate(good);
      assert.match(loaded.subject, /CN=kra/);
      assert.equal(loaded.sha256.length, 64);
      const refusals: [string, RegExp][] = [
        [
          makeCertificate(dir, 'ec', ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']),
          /must hold an RSA key/,
        ],
        [makeCertificate(dir, 'small', ['-newkey', 'rsa:1024']), /at least 2048 bits \(it has 1024\)/],
        [
          makeCertificate(dir, 'signonly', ['-newkey', 'rsa:2048'], ['keyUsage=digitalSignature']),
          /does not allow keyEncipherment/,
        ],
        [join(dir, 'ec.key'), /not an X\.509 certificate/],
        [join(dir, 'missing.pem'), /cannot be read/],
      ];
      for (const [file, problem] of refusals) {
        await assert.rejects(loadRecoveryCertificate(file), (e: Error & { code?: string }) => {
          assert.equal(e.code, 'ERR_KEY_ARCHIVAL');
          assert.match(e.message, problem);
          // The error names the file and the setting.
          assert.ok(e.message.includes(file), e.message);
          assert.match(e.message, /keyArchival\.recoveryCertificate/);
          return true;
        });
      }
      await assert.rejects(loadRecoveryCertificate(good, new Date(Date.now() + YEAR_MS)), /expired/);
      await assert.rejects(loadRecoveryCertificate(undefined), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ERR_KEY_ARCHIVAL');
        assert.match(e.message, /no recovery certificate is configured/);
        return true;
      });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

for (const kind of BACKENDS) {
  describe(`key archival on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    let profile: CardProfile;
    let dir: string;
    let kraPem: string;
    const tenant = `t-${Date.now()}`;

    before(async () => {
      backend = await createBackend(kind);
      storage = await openMigrated(backend.url);
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      profile = parseCardProfile({
        ...profileToJson(await loadDefaultProfile()),
        archiveKeyManagementKey: true,
      });
      dir = await mkdtemp(join(tmpdir(), 'cardlink-archival-'));
      // The recovery agent's pair, named as the printed command names it.
      kraPem = makeCertificate(dir, 'kra', ['-newkey', 'rsa:3072'], ['keyUsage=keyEncipherment']);
      await initEmbeddedCa({ storage, kek, crlUrl: 'http://127.0.0.1:8080/ca/crl', actor: 'admin:test' });
    });
    after(async () => {
      await storage.close();
      await backend.cleanup();
      await keys.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    /** The CLI on this database (SQLite is held by one process at a time: ours lets go meanwhile). */
    const admin = async (args: string[]) => {
      if (kind === 'sqlite') await storage.close();
      try {
        return await runCardlink(
          ['admin', ...args, '--data-dir', join(dir, 'site'), '--database-url', backend.url],
          envWithoutCardlinkSettings(),
        );
      } finally {
        if (kind === 'sqlite') storage = await openMigrated(backend.url);
      }
    };
    const newCard = async (subject: string) =>
      createCard({
        storage,
        kek,
        user: { issuer: 'https://idp.example', subject, tenant },
        profile,
        recoveryCertificate: kraPem,
        actor: 'admin:test',
      });
    const audit = (cardId: string, eventType: string) =>
      listAuditRows(storage, { cardId, eventType }, { limit: 100 });
    /** The PKCS#8 of the key in `slot`, unsealed the way the card server does. */
    const keyIn = async (cardId: string, slot: number) => {
      const card = await getCard(storage, cardId);
      const record = (await findCardKey(storage, cardId, slot))!;
      return unsealSecret(kek, record.key, { tenantId: card.tenantId, cardId, slot });
    };
    const certificatePem = async (cardId: string, tag: number, name: string) => {
      const der = decodeCertificateObject((await getCardObject(storage, cardId, tag))!);
      const file = join(dir, name);
      await writeFile(
        file,
        `-----BEGIN CERTIFICATE-----\n${Buffer.from(der).toString('base64')}\n-----END CERTIFICATE-----\n`,
      );
      return file;
    };
    /** `recover-key` through the CLI, then the command it prints, run as printed in a directory holding kra.pem/kra.key. */
    const recover = async (cardId: string, name: string, extra: string[] = []) => {
      const out = join(dir, `${name}.cms`);
      const r = await admin(['recover-key', cardId, '--out', out, '--reason', `ticket ${name}`, ...extra]);
      assert.equal(r.status, 0, r.stdout + r.stderr);
      assert.equal((await stat(out)).mode & 0o777, 0o600);
      const command = /^\s*(openssl cms -decrypt .*)$/m.exec(r.stdout)?.[1];
      assert.ok(command, r.stdout);
      assert.equal(
        command,
        `openssl cms -decrypt -inform DER -in ${out} -recip kra.pem -inkey kra.key -out key.p8`,
      );
      await rm(join(dir, 'key.p8'), { force: true });
      const run = spawnSync('sh', ['-c', command], { cwd: dir, encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      return { file: out, pkcs8: await readFile(join(dir, 'key.p8')), stdout: r.stdout };
    };
    /** A message for `certificate` made by `openssl cms -encrypt`, decrypted with `pkcs8` (DER). */
    const roundTrip = async (certificate: string, pkcs8: Buffer, name: string) => {
      const plain = join(dir, `${name}.txt`);
      await writeFile(plain, `old mail ${name}\n`);
      const enc = openssl([
        'cms',
        '-encrypt',
        '-aes256',
        '-binary',
        '-in',
        plain,
        '-outform',
        'DER',
        '-out',
        `${plain}.cms`,
        certificate,
      ]);
      assert.equal(enc.status, 0, enc.out);
      await writeFile(join(dir, `${name}.p8`), pkcs8);
      const dec = openssl([
        'cms',
        '-decrypt',
        '-binary',
        '-inform',
        'DER',
        '-in',
        `${plain}.cms`,
        '-inkey',
        join(dir, `${name}.p8`),
        '-keyform',
        'DER',
        '-out',
        `${plain}.out`,
      ]);
      assert.equal(dec.status, 0, dec.out);
      assert.equal(await readFile(`${plain}.out`, 'utf8'), `old mail ${name}\n`);
    };

    it('create-card and enroll archive each 9D key, in the clear nowhere; recover-key opens with the printed openssl command', async () => {
      const created = await newCard('alice');
      const cardId = created.cardId;
      const kra = await loadRecoveryCertificate(kraPem);
      assert.equal(created.keyArchivedFor, kra.sha256);
      let archives = await listArchivedKeys(storage, cardId);
      assert.equal(archives.length, 1);
      assert.equal(archives[0]!.slot, 0x9d);
      assert.equal(archives[0]!.recipientSha256, kra.sha256);
      assert.ok(archives[0]!.certificateSerial, 'the self-signed certificate is named');

      const enrolled = await enrollCard({
        storage,
        kek,
        cardId,
        claims: CLAIMS,
        actor: 'admin:test',
        recoveryCertificate: kraPem,
      });
      assert.equal(enrolled.keyArchivedFor, kra.sha256);
      archives = await listArchivedKeys(storage, cardId);
      assert.equal(archives.length, 2);
      const issued9d = enrolled.slots.find((s) => s.slot === 0x9d)!;
      assert.equal(archives[1]!.certificateSerial, issued9d.serial);
      assert.notEqual(archives[0]!.publicKeySha256, archives[1]!.publicKeySha256);

      // No archive (nor any byte run of 32 from the key) holds the key in the clear.
      const pkcs8 = await keyIn(cardId, 0x9d);
      for (const a of archives) {
        assert.equal(a.envelope.indexOf(pkcs8), -1);
        for (let i = 0; i + 32 <= pkcs8.length; i += 32)
          assert.equal(a.envelope.indexOf(pkcs8.subarray(i, i + 32)), -1);
      }

      // Two archives: the CLI wants a serial, and says so with exit status 64.
      const ambiguous = await admin(['recover-key', cardId, '--out', join(dir, 'x.cms'), '--reason', 'x']);
      assert.equal(ambiguous.status, 64, ambiguous.stderr);
      assert.match(ambiguous.stderr, /2 archived keys: choose one with --serial/);
      await assert.rejects(stat(join(dir, 'x.cms')), /ENOENT/);

      const r = await recover(cardId, 'enrolled', ['--serial', issued9d.serial]);
      assert.deepEqual(r.pkcs8, pkcs8);
      const cert = await certificatePem(cardId, certificateObjectTag(0x9d)!, 'enrolled-9d.pem');
      await roundTrip(cert, r.pkcs8, 'enrolled');

      // The recovery is audited: actor, card, serial, reason (hostile characters stay data).
      const reason = 'ticket "42"; mail of\nAlice\u001b[31m';
      const again = await admin([
        'recover-key',
        cardId,
        '--serial',
        issued9d.serial,
        '--out',
        join(dir, 'again.cms'),
        '--reason',
        reason,
        '--pem',
      ]);
      assert.equal(again.status, 0, again.stderr);
      assert.match(await readFile(join(dir, 'again.cms'), 'utf8'), /^-----BEGIN CMS-----\n/);
      assert.match(again.stdout, /-inform PEM/);
      const audit = await listAuditRows(storage, { cardId, eventType: 'key.recovered' }, { limit: 10 });
      assert.equal(audit.length, 2);
      assert.match(audit[0]!.actor, /^admin:cli/);
      const details = JSON.parse(audit[1]!.details) as Record<string, unknown>;
      assert.equal(details['certificateSerial'], issued9d.serial);
      assert.equal(details['reason'], reason);
      assert.equal(details['slot'], '0x9d');
      assert.equal(details['recipientSha256'], kra.sha256);

      // An existing file is never overwritten; nothing is audited then.
      const keep = join(dir, 'existing.cms');
      await writeFile(keep, 'keep me');
      const refused = await admin([
        'recover-key',
        cardId,
        '--serial',
        issued9d.serial,
        '--out',
        keep,
        '--reason',
        'x',
      ]);
      assert.equal(refused.status, 64);
      assert.match(refused.stderr, /exists/);
      assert.equal(await readFile(keep, 'utf8'), 'keep me');
      assert.equal(
        (await listAuditRows(storage, { cardId, eventType: 'key.recovered' }, { limit: 10 })).length,
        2,
      );

      // A reason is required; an unknown serial is not found.
      await assert.rejects(
        recoverArchivedKey({ storage, cardId, serial: issued9d.serial, reason: '  ' }),
        (e: Error & { code?: string }) => e.code === 'ERR_USAGE',
      );
      await assert.rejects(
        recoverArchivedKey({ storage, cardId, serial: 'abcdef', reason: 'x' }),
        (e: Error & { code?: string }) => e.code === 'ERR_ARCHIVED_KEY_NOT_FOUND',
      );

      const listed = await admin(['list-archived-keys', cardId, '--json']);
      assert.equal(listed.status, 0, listed.stderr);
      const list = JSON.parse(listed.stdout) as { slot: string; certificateSerial: string }[];
      assert.deepEqual(
        list.map((a) => a.slot),
        ['replaced', '9D'],
      );
    });

    it('renewal with new keys: the old archive moves to 82 with its key, the new one is at 9D, both recover', async () => {
      const cardId = (await newCard('bob')).cardId;
      const first = await enrollCard({
        storage,
        kek,
        cardId,
        claims: CLAIMS,
        actor: 'admin:test',
        recoveryCertificate: kraPem,
      });
      const firstSerial = first.slots.find((s) => s.slot === 0x9d)!.serial;
      const oldCert = await certificatePem(cardId, certificateObjectTag(0x9d)!, 'bob-old.pem');
      const oldKey = await keyIn(cardId, 0x9d);

      const renewed = await renewCard({
        storage,
        kek,
        cardId,
        actor: 'admin:test',
        recoveryCertificate: kraPem,
      });
      assert.equal(renewed.retired?.slot, 0x82);
      const newSerial = renewed.slots.find((s) => s.slot === 0x9d)!.serial;
      const archives = await listArchivedKeys(storage, cardId);
      // Creation's (its key replaced by the enrollment's), the first enrollment's, the renewal's.
      assert.deepEqual(
        archives.map((a) => a.slot),
        [undefined, 0x82, 0x9d],
      );
      assert.equal(archives[1]!.certificateSerial, firstSerial);
      assert.equal(archives[2]!.certificateSerial, newSerial);

      const old = await recover(cardId, 'bob-old', ['--serial', firstSerial]);
      assert.deepEqual(old.pkcs8, oldKey);
      assert.deepEqual(old.pkcs8, await keyIn(cardId, 0x82));
      assert.match(old.stdout, /slot 82/);
      await roundTrip(oldCert, old.pkcs8, 'bob-old');

      const current = await recover(cardId, 'bob-new', ['--serial', newSerial]);
      assert.deepEqual(current.pkcs8, await keyIn(cardId, 0x9d));
      assert.notDeepEqual(current.pkcs8, old.pkcs8);
      await roundTrip(
        await certificatePem(cardId, certificateObjectTag(0x9d)!, 'bob-new.pem'),
        current.pkcs8,
        'bob-new',
      );

      // Erase keeps the archives (the server cannot open them; recovering a lost card's mail is their purpose).
      await deleteCard({ storage, kek, cardId, actor: 'admin:test' });
      assert.equal((await listArchivedKeys(storage, cardId)).length, 3);
      const afterErase = await recover(cardId, 'bob-erased', ['--serial', firstSerial]);
      assert.deepEqual(afterErase.pkcs8, oldKey);
    });

    it('a 9D key generated through the card interface is archived too (9A is not); without the certificate it is refused', async () => {
      const cardId = (await newCard('frank')).cardId;
      const open = async (recoveryCertificate?: string) => {
        const sessionId = randomUUID();
        const epoch = await storage.transaction((tx) => claimCard(tx, { cardId, sessionId }));
        return openPersistentCardState({
          storage,
          kek,
          cardId,
          sessionId,
          epoch,
          actor: 'user:test',
          recoveryCertificate,
        });
      };
      const before9d = await keyIn(cardId, 0x9d);
      const refused = await open();
      await assert.rejects(
        refused.keys.generate(0x9d, 'RSA2048', 'once'),
        (e: Error & { code?: string }) => e.code === 'ERR_KEY_ARCHIVAL',
      );
      refused.dispose();
      assert.deepEqual(await keyIn(cardId, 0x9d), before9d);
      assert.equal((await listArchivedKeys(storage, cardId)).length, 1);

      const state = await open(kraPem);
      await state.keys.generate(0x9a, 'ECCP256', 'once');
      assert.equal((await listArchivedKeys(storage, cardId)).length, 1, '9A is never archived');
      const info = await state.keys.generate(0x9d, 'ECCP256', 'once');
      state.dispose();
      const archives = await listArchivedKeys(storage, cardId);
      assert.deepEqual(
        archives.map((a) => a.slot),
        [undefined, 0x9d],
      );
      assert.equal(archives[1]!.certificateSerial, undefined);
      assert.equal(
        archives[1]!.publicKeySha256,
        createHash('sha256').update(info.publicKeySpki).digest('hex'),
      );
      const generated = await audit(cardId, 'key.generated');
      assert.match(generated.at(-1)!.details, /"keyArchivedFor"/);

      const r = await recover(cardId, 'generated', ['--archive', archives[1]!.id]);
      assert.deepEqual(r.pkcs8, await keyIn(cardId, 0x9d));
    });

    it('archival required and no usable recovery certificate: refused, nothing written', async () => {
      const countCards = async () =>
        (await listAuditRows(storage, { eventType: 'card.created' }, { limit: 10_000 })).length;
      const cardsBefore = await countCards();
      for (const recoveryCertificate of [undefined, join(dir, 'kra.key')]) {
        await assert.rejects(
          createCard({
            storage,
            kek,
            user: { issuer: 'https://idp.example', subject: 'carol', tenant },
            profile,
            ...(recoveryCertificate ? { recoveryCertificate } : {}),
          }),
          (e: Error & { code?: string }) => e.code === 'ERR_KEY_ARCHIVAL',
        );
      }
      assert.equal(await countCards(), cardsBefore);

      // An archival card enrolled without the certificate: keys, certificates, archives unchanged.
      const cardId = (await newCard('dave')).cardId;
      const keyBefore = await keyIn(cardId, 0x9d);
      const certsBefore = await listCardCertificates(storage, cardId);
      const archivesBefore = await listArchivedKeys(storage, cardId);
      await assert.rejects(
        enrollCard({ storage, kek, cardId, claims: CLAIMS, actor: 'admin:test' }),
        (e: Error & { code?: string }) => {
          assert.equal(e.code, 'ERR_KEY_ARCHIVAL');
          assert.match(e.message, /no recovery certificate is configured/);
          return true;
        },
      );
      await assert.rejects(
        renewCard({ storage, kek, cardId, actor: 'admin:test', recoveryCertificate: join(dir, 'nope.pem') }),
        (e: Error & { code?: string }) => e.code === 'ERR_KEY_ARCHIVAL',
      );
      assert.deepEqual(await keyIn(cardId, 0x9d), keyBefore);
      assert.deepEqual(await listCardCertificates(storage, cardId), certsBefore);
      assert.equal((await listArchivedKeys(storage, cardId)).length, archivesBefore.length);
      assert.equal(
        (await listAuditRows(storage, { cardId, eventType: 'card.enrolled' }, { limit: 10 })).length,
        0,
      );

      // Without the profile option nothing is archived and no certificate is needed.
      const plain = await createCard({
        storage,
        kek,
        user: { issuer: 'https://idp.example', subject: 'erin', tenant },
        profile: await loadDefaultProfile(),
      });
      assert.equal(plain.keyArchivedFor, undefined);
      assert.equal((await listArchivedKeys(storage, plain.cardId)).length, 0);
      const none = await admin([
        'recover-key',
        plain.cardId,
        '--out',
        join(dir, 'none.cms'),
        '--reason',
        'x',
      ]);
      assert.equal(none.status, 1);
      assert.match(none.stderr, /ERR_ARCHIVED_KEY_NOT_FOUND/);
      await assert.rejects(stat(join(dir, 'none.cms')), /ENOENT/);
    });
  });
}

describe('cardlink admin with keyArchival.recoveryCertificate (SQLite)', () => {
  let dir: string;
  let profileFile: string;
  const run = (args: string[], config?: string) =>
    runCardlink(
      ['admin', ...args, '--data-dir', join(dir, 'site'), ...(config ? ['--config', config] : [])],
      {
        ...envWithoutCardlinkSettings(),
        XDG_STATE_HOME: join(dir, 'state'),
      },
    );

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-archival-cli-'));
    makeCertificate(dir, 'kra', ['-newkey', 'rsa:2048'], ['keyUsage=keyEncipherment']);
    profileFile = join(dir, 'archived.json');
    await writeFile(
      profileFile,
      JSON.stringify({
        ...profileToJson(await loadDefaultProfile()),
        name: 'archived',
        archiveKeyManagementKey: true,
      }),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('create-card, enroll and renew archive through the server config; without it they refuse', async () => {
    const config = join(dir, 'server.json');
    // A relative path is taken from dataDir.
    await writeFile(config, JSON.stringify({ keyArchival: { recoveryCertificate: '../kra.pem' } }));
    assert.equal((await run(['ca', 'init', '--crl-url', 'http://127.0.0.1:8080/ca/crl'], config)).status, 0);

    const refused = await run([
      'create-card',
      '--issuer',
      'https://idp.example',
      '--subject',
      'x',
      '--tenant',
      't',
      '--profile',
      profileFile,
    ]);
    assert.equal(refused.status, 78, refused.stderr);
    assert.match(refused.stderr, /ERR_KEY_ARCHIVAL/);
    assert.match(refused.stderr, /keyArchival\.recoveryCertificate/);

    const enrolled = await run(
      [
        'enroll',
        '--issuer',
        'https://idp.example',
        '--subject',
        'alice',
        '--tenant',
        't',
        '--profile',
        profileFile,
        '--claim',
        'email=alice@example.com',
        '--json',
      ],
      config,
    );
    assert.equal(enrolled.status, 0, enrolled.stderr);
    const cardId = (JSON.parse(enrolled.stdout) as { cardId: string }).cardId;
    const noConfig = await run(['renew', cardId]);
    assert.equal(noConfig.status, 78, noConfig.stderr);
    assert.match(noConfig.stderr, /no recovery certificate is configured/);
    const renewed = await run(['renew', cardId], config);
    assert.equal(renewed.status, 0, renewed.stderr);

    const listed = await run(['list-archived-keys', cardId, '--json']);
    assert.equal(listed.status, 0, listed.stderr);
    const slots = (JSON.parse(listed.stdout) as { slot: string }[]).map((a) => a.slot);
    // create-card's key replaced by enroll's, which renewal retired to 82; the renewal's in 9D.
    assert.deepEqual(slots, ['replaced', '82', '9D']);
    const text = await run(['list-archived-keys', cardId]);
    assert.match(text.stdout, /replaced \(no longer on the card\)/);
  });
});
