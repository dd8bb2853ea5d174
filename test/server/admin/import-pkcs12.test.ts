/**
 * PKCS#12 import into a slot (server/admin/import-pkcs12.ts, server/ca/pkcs12.ts) on SQLite and
 * PostgreSQL, with files made by the real openssl CLI: OpenSSL 3's default protection (PBES2,
 * AES-256-CBC, HMAC-SHA-256) for RSA-2048 and P-256, SHA-1/3DES into a retired slot (Key History),
 * a CA chain left out; after the import the slot's key signs through a card session and the
 * signature verifies with the certificate's public key. Refusals (wrong password, altered file,
 * a key and a certificate that do not belong together, no key, `-legacy` RC2, RSA-1024) leave the
 * card's keys, objects and version exactly as they were, and so does a KEK that fails inside the
 * transaction. Replacing an enrolled slot revokes the CA certificate it had; a CRL that cannot be
 * signed after the commit leaves the import in place and is reported (`crlError`). On a card whose
 * profile archives 9D keys, an imported 9D key is archived in the same transaction (the envelope
 * opens with `openssl cms -decrypt` to the imported key), the earlier 9D archive is detached, and
 * without a usable recovery certificate the import is refused with nothing changed. The reader's
 * limits (ContentInfos, the per-file key-derivation work, the 3DES iteration cap, a file without a
 * MAC) are tested with files made by openssl (`-iter`, `-nomac`) and crafted with the @peculiar
 * classes. The CLI is tested in test/server/cli/admin/pkcs12-commands.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, createPrivateKey, verify, X509Certificate as NodeX509 } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateObjectTag, decodeCertificateObject } from '../../../apdu/piv/certificates/index.js';
import { decodeKeyHistory, OBJECT_TAG } from '../../../apdu/piv/objects/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import { importPkcs12 } from '../../../server/admin/import-pkcs12.js';
import { loadRecoveryCertificate } from '../../../server/archival/recovery-certificate.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import {
  MAX_PKCS12_3DES_ITERATIONS,
  MAX_PKCS12_CONTENT_INFOS,
  MAX_PKCS12_ITERATIONS,
  MAX_PKCS12_KDF_WORK,
  readPkcs12,
} from '../../../server/ca/pkcs12.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  getCard,
  getCardObject,
  listArchivedKeys,
  listCardCertificates,
  listCardKeys,
  listCardObjectTags,
  type Storage,
} from '../../../server/storage/index.js';
import { expectSw } from '../../apdu/piv/support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';
import {
  exportPkcs12,
  makeSelfSigned,
  withContentInfosRepeated,
  type TestKeyPair,
} from '../../support/pkcs12.js';
import { auditOf, CARD_PIN, createTestCard, openSession, pinBytes } from '../cards/support/card-fixture.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const PASSWORD = 'correct horse battery staple';

/** Everything of the card an import may change, as one comparable string. */
async function cardContents(storage: Storage, cardId: string): Promise<string> {
  const card = await getCard(storage, cardId);
  const keys = (await listCardKeys(storage, cardId)).map((k) => [
    k.slot,
    k.algorithm,
    k.origin,
    k.publicKeySpki.toString('hex'),
    k.key.sealed.toString('hex'),
  ]);
  const objects: [number, string][] = [];
  for (const tag of await listCardObjectTags(storage, cardId))
    objects.push([tag, (await getCardObject(storage, cardId, tag))!.toString('hex')]);
  return JSON.stringify({ version: card.version, keys, objects });
}

const spkiOfCert = (pem: string) =>
  new NodeX509(pem).publicKey.export({ type: 'spki', format: 'der' }).toString('hex');

describe('PKCS#12 import', () => {
  let dir: string;
  let rsa: TestKeyPair;
  let ec: TestKeyPair;
  let other: TestKeyPair;
  let ca: TestKeyPair;
  let small: TestKeyPair;
  /** The key recovery agent: an RSA-2048 certificate allowing keyEncipherment, and its key. */
  let kra: TestKeyPair;
  const files: Record<string, Buffer> = {};

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-p12-'));
    [rsa, ec, other, ca, small, kra] = await Promise.all([
      makeSelfSigned(dir, 'rsa', 'rsa2048', '/CN=Alice RSA/O=Example Corp'),
      makeSelfSigned(dir, 'ec', 'p256', '/CN=Alice EC/O=Example Corp'),
      makeSelfSigned(dir, 'other', 'rsa2048'),
      makeSelfSigned(dir, 'ca', 'p256', '/CN=Some CA'),
      makeSelfSigned(dir, 'small', 'rsa1024'),
      makeSelfSigned(dir, 'kra', 'rsa2048', '/CN=Key Recovery Agent'),
    ]);
    const rsaParts = { keyFile: rsa.keyFile, certFile: rsa.certFile };
    const made = {
      rsa: await exportPkcs12(dir, 'rsa', { keyFile: rsa.keyFile, certFile: rsa.certFile }, PASSWORD),
      ecWithChain: await exportPkcs12(
        dir,
        'ec-chain',
        { keyFile: ec.keyFile, certFile: ec.certFile, extraCertsFile: ca.certFile },
        PASSWORD,
      ),
      tripleDes: await exportPkcs12(
        dir,
        '3des',
        { keyFile: rsa.keyFile, certFile: rsa.certFile },
        PASSWORD,
        '3des',
      ),
      legacy: await exportPkcs12(
        dir,
        'legacy',
        { keyFile: rsa.keyFile, certFile: rsa.certFile },
        PASSWORD,
        'legacy',
      ),
      // Key of `rsa`, certificate of `other` (openssl refuses -in/-inkey that do not match; -certfile does not).
      mismatch: await exportPkcs12(
        dir,
        'mismatch',
        { keyFile: rsa.keyFile, extraCertsFile: other.certFile },
        PASSWORD,
      ),
      noKey: await exportPkcs12(dir, 'nokey', { certFile: rsa.certFile }, PASSWORD),
      small: await exportPkcs12(dir, 'small', { keyFile: small.keyFile, certFile: small.certFile }, PASSWORD),
      emptyPassword: await exportPkcs12(dir, 'empty', { keyFile: ec.keyFile, certFile: ec.certFile }, ''),
      noMac: await exportPkcs12(dir, 'nomac', rsaParts, PASSWORD, 'default', ['-nomac']),
      // The MAC over MAX_PKCS12_ITERATIONS (openssl -iter sets the MAC's and the PBEs' counts).
      iterations: await exportPkcs12(dir, 'iter', rsaParts, PASSWORD, 'default', [
        '-iter',
        String(MAX_PKCS12_ITERATIONS + 1),
      ]),
      tripleDesAtCap: await exportPkcs12(dir, '3des-cap', rsaParts, PASSWORD, '3des', [
        '-iter',
        String(MAX_PKCS12_3DES_ITERATIONS),
      ]),
      tripleDesOverCap: await exportPkcs12(dir, '3des-over', rsaParts, PASSWORD, '3des', [
        '-iter',
        String(MAX_PKCS12_3DES_ITERATIONS + 1),
      ]),
    };
    for (const [name, path] of Object.entries(made)) files[name] = await readFile(path);
    // openssl writes the certificates' EncryptedData first (index 0), then the key's Data.
    // Each 3DES ContentInfo within every per-derivation limit, MAX_PKCS12_CONTENT_INFOS of them:
    // together over MAX_PKCS12_KDF_WORK.
    files['kdfWork'] = withContentInfosRepeated(files['tripleDesAtCap']!, 0, MAX_PKCS12_CONTENT_INFOS);
    files['contentInfos'] = withContentInfosRepeated(files['rsa']!, 0, MAX_PKCS12_CONTENT_INFOS + 1);
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('reader limits (server/ca/pkcs12.ts)', () => {
    /** readPkcs12's refusal: ERR_PKCS12_INVALID with `reason`, the limit's value and its name in the message. */
    const refusedFor =
      (reason: string, limit: number, name: string) =>
      (error: { code?: string; message?: string; context?: Record<string, unknown> }) => {
        assert.equal(error.code, 'ERR_PKCS12_INVALID');
        assert.equal(error.context?.['reason'], reason);
        assert.equal(error.context?.['limit'], limit);
        assert.ok(error.message?.includes(name), error.message);
        assert.ok(!error.message?.includes(PASSWORD));
        return true;
      };

    it('a file at the 3DES cap reads (its work within the budget); one iteration more is refused', () => {
      const read = readPkcs12(files['tripleDesAtCap']!, PASSWORD);
      assert.equal(read.privateKeys.length, 1);
      assert.equal(read.mac, 'sha1');
      assert.deepEqual(read.encryption, ['pbeWithSHAAnd3-KeyTripleDES-CBC']);
      assert.throws(
        () => readPkcs12(files['tripleDesOverCap']!, PASSWORD),
        refusedFor('iterations', MAX_PKCS12_3DES_ITERATIONS, 'MAX_PKCS12_3DES_ITERATIONS'),
      );
    });

    it('a MAC over MAX_PKCS12_ITERATIONS is refused', () => {
      assert.throws(
        () => readPkcs12(files['iterations']!, PASSWORD),
        refusedFor('iterations', MAX_PKCS12_ITERATIONS, 'MAX_PKCS12_ITERATIONS'),
      );
    });

    it('ContentInfos each within their limits but together over MAX_PKCS12_KDF_WORK are refused', () => {
      assert.throws(
        () => readPkcs12(files['kdfWork']!, PASSWORD),
        refusedFor('kdf-work', MAX_PKCS12_KDF_WORK, 'MAX_PKCS12_KDF_WORK'),
      );
    });

    it('more than MAX_PKCS12_CONTENT_INFOS ContentInfos are refused', () => {
      assert.throws(
        () => readPkcs12(files['contentInfos']!, PASSWORD),
        refusedFor('content-infos', MAX_PKCS12_CONTENT_INFOS, 'MAX_PKCS12_CONTENT_INFOS'),
      );
    });

    it('a file without a MAC is refused unless allowed; allowed, it reads (mac: none)', () => {
      assert.throws(
        () => readPkcs12(files['noMac']!, PASSWORD),
        (error: { code?: string; message?: string; context?: Record<string, unknown> }) => {
          assert.equal(error.code, 'ERR_PKCS12_INVALID');
          assert.equal(error.context?.['reason'], 'no-mac');
          assert.match(error.message ?? '', /--allow-no-mac/);
          return true;
        },
      );
      const read = readPkcs12(files['noMac']!, PASSWORD, { allowNoMac: true });
      assert.equal(read.mac, 'none');
      assert.equal(read.privateKeys.length, 1);
      // Without a MAC a wrong password still shows, as a bag that does not decrypt.
      assert.throws(() => readPkcs12(files['noMac']!, 'not the password', { allowNoMac: true }), {
        code: 'ERR_PKCS12_PASSWORD',
      });
    });
  });

  for (const kind of BACKENDS) {
    describe(`on ${kind}`, () => {
      let backend: Backend;
      let storage: Storage;
      let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
      let kek: KekProvider;

      before(async () => {
        backend = await createBackend(kind);
        storage = await backend.open();
        keys = await tempKeyFileProvider();
        kek = keys.provider;
      });
      after(async () => {
        await backend.cleanup();
        await keys.cleanup();
      });

      const importInto = (cardId: string, slot: number, file: Buffer, password = PASSWORD) =>
        importPkcs12({ storage, kek, cardId, slot, pkcs12: file, password, actor: 'admin:test' });

      it('RSA-2048 (OpenSSL 3 defaults) into 9A: sealed, certificate object written, the key signs, audited', async () => {
        const card = await createTestCard(storage, kek);
        const versionBefore = (await getCard(storage, card.cardId)).version;
        const result = await importInto(card.cardId, 0x9a, files['rsa']!);
        assert.equal(result.algorithm, 'RSA2048');
        assert.equal(result.replaced, true); // create-card had put a self-signed key there
        assert.equal(result.extraCertificates, 0);
        assert.deepEqual(result.revoked, []);
        const certDer = new NodeX509(rsa.certPem).raw;
        assert.equal(result.certificateSha256, createHash('sha256').update(certDer).digest('hex'));
        assert.equal(result.serial, new NodeX509(rsa.certPem).serialNumber.toLowerCase());
        assert.match(result.subject, /CN=Alice RSA/);

        // The stored key: origin imported, public key of the certificate, sealed (no PKCS#8 in the row).
        const row = (await listCardKeys(storage, card.cardId)).find((k) => k.slot === 0x9a)!;
        assert.equal(row.origin, 'imported');
        assert.equal(row.algorithm, 'RSA2048');
        assert.equal(row.publicKeySpki.toString('hex'), spkiOfCert(rsa.certPem));
        const keyDer = (await import('node:crypto'))
          .createPrivateKey(rsa.keyPem)
          .export({ type: 'pkcs8', format: 'der' });
        assert.equal(row.key.sealed.indexOf(keyDer.subarray(-64)), -1, 'no key bytes in the sealed row');
        // The PIV certificate object holds exactly the file's certificate.
        const object = await getCardObject(storage, card.cardId, certificateObjectTag(0x9a)!);
        assert.deepEqual(Buffer.from(decodeCertificateObject(object!)), certDer);
        assert.ok(
          (await getCard(storage, card.cardId)).version > versionBefore,
          'the card was fenced for a change',
        );

        // Through a card session: the slot's key signs, and the certificate's public key verifies it.
        const session = await openSession(storage, kek, card.cardId);
        expectSw(await session.host.verifyPin(pinBytes(CARD_PIN)), '9000');
        const msg = Buffer.from('signed by an imported key');
        const r = await session.host.privateKeyOp(
          ALGORITHM_IDS.RSA2048,
          0x9a,
          0x81,
          pkcs1v15Sha256Block(msg, 256),
        );
        expectSw(r, '9000');
        assert.ok(verify('sha256', msg, new NodeX509(rsa.certPem).publicKey, r.data), 'signature verifies');
        session.state.dispose();

        const audit = await auditOf(storage, card.cardId, 'card.pkcs12-imported');
        assert.equal(audit.length, 1);
        const details = audit[0]!.details;
        assert.equal(details['slot'], '0x9a');
        assert.equal(details['serial'], result.serial);
        assert.equal(details['certificateSha256'], result.certificateSha256);
        assert.equal(details['mac'], 'sha256');
        assert.deepEqual(details['encryption'], ['PBES2/aes-256-cbc']);
        const text = JSON.stringify(details);
        assert.ok(!text.includes(PASSWORD), 'no password in the audit entry');
        assert.ok(!text.includes(keyDer.toString('hex').slice(-64)), 'no key material in the audit entry');
      });

      it('P-256 with a CA certificate into 9C: the chain is left out and the key signs (PIN always)', async () => {
        const card = await createTestCard(storage, kek);
        const result = await importInto(card.cardId, 0x9c, files['ecWithChain']!);
        assert.equal(result.algorithm, 'ECCP256');
        assert.equal(result.extraCertificates, 1);
        const object = await getCardObject(storage, card.cardId, certificateObjectTag(0x9c)!);
        assert.deepEqual(Buffer.from(decodeCertificateObject(object!)), new NodeX509(ec.certPem).raw);
        const session = await openSession(storage, kek, card.cardId);
        const msg = Buffer.from('signed in 9C');
        expectSw(await session.host.verifyPin(pinBytes(CARD_PIN)), '9000');
        const r = await session.host.privateKeyOp(
          ALGORITHM_IDS.ECCP256,
          0x9c,
          0x81,
          createHash('sha256').update(msg).digest(),
        );
        expectSw(r, '9000');
        assert.ok(
          verify('sha256', msg, { key: new NodeX509(ec.certPem).publicKey, dsaEncoding: 'der' }, r.data),
        );
        session.state.dispose();
      });

      it('an empty password works (as openssl -passout pass: writes it)', async () => {
        const card = await createTestCard(storage, kek);
        const result = await importInto(card.cardId, 0x9e, files['emptyPassword']!, '');
        assert.equal(result.algorithm, 'ECCP256');
      });

      it('SHA-1 MAC and 3DES bags into retired slot 82: the Key History counts it', async () => {
        const card = await createTestCard(storage, kek);
        const result = await importInto(card.cardId, 0x82, files['tripleDes']!);
        assert.equal(result.keyHistoryOnCard, 1);
        const history = decodeKeyHistory(
          (await getCardObject(storage, card.cardId, OBJECT_TAG.KEY_HISTORY))!,
        );
        assert.deepEqual(history, { onCard: 1, offCard: 0 });
        const row = (await listCardKeys(storage, card.cardId)).find((k) => k.slot === 0x82)!;
        assert.equal(row.publicKeySpki.toString('hex'), spkiOfCert(rsa.certPem));
        assert.equal(row.pinPolicy, 'once');
        const details = (await auditOf(storage, card.cardId, 'card.pkcs12-imported'))[0]!.details;
        assert.equal(details['mac'], 'sha1');
        assert.deepEqual(details['encryption'], ['pbeWithSHAAnd3-KeyTripleDES-CBC']);
      });

      it('refusals leave the card unchanged', async () => {
        const card = await createTestCard(storage, kek);
        const before = await cardContents(storage, card.cardId);
        const tampered = Buffer.from(files['rsa']!);
        tampered[Math.floor(tampered.length / 2)]! ^= 0x01; // inside the MAC'd content
        const refused: [string, Buffer, string, string, Record<string, unknown>?][] = [
          ['wrong password', files['rsa']!, 'not the password', 'ERR_PKCS12_PASSWORD'],
          ['altered file', tampered, PASSWORD, 'ERR_PKCS12_PASSWORD'],
          [
            'certificate of another key',
            files['mismatch']!,
            PASSWORD,
            'ERR_PKCS12_INVALID',
            { reason: 'no-matching-certificate' },
          ],
          ['no key', files['noKey']!, PASSWORD, 'ERR_PKCS12_INVALID', { reason: 'no-key' }],
          [
            '-legacy (RC2-40)',
            files['legacy']!,
            PASSWORD,
            'ERR_PKCS12_UNSUPPORTED',
            { algorithm: 'pbewithSHAAnd40BitRC2-CBC' },
          ],
          [
            'RSA-1024',
            files['small']!,
            PASSWORD,
            'ERR_PKCS12_UNSUPPORTED',
            { reason: 'key-algorithm', bits: 1024 },
          ],
          ['not a PKCS#12 file', Buffer.from(rsa.certPem), PASSWORD, 'ERR_PKCS12_INVALID'],
          ['no MAC', files['noMac']!, PASSWORD, 'ERR_PKCS12_INVALID', { reason: 'no-mac' }],
          [
            'over the KDF work budget',
            files['kdfWork']!,
            PASSWORD,
            'ERR_PKCS12_INVALID',
            { reason: 'kdf-work' },
          ],
        ];
        for (const [what, file, password, code, context] of refused) {
          await assert.rejects(
            importInto(card.cardId, 0x9d, file, password),
            (error: { code?: string; message?: string; context?: Record<string, unknown> }) => {
              assert.equal(error.code, code, what);
              for (const [k, v] of Object.entries(context ?? {}))
                assert.equal(error.context?.[k], v, `${what}: ${k}`);
              assert.ok(
                !error.message?.includes(password) || password === '',
                `${what}: no password in the message`,
              );
              return true;
            },
          );
        }
        const legacy = await importInto(card.cardId, 0x9d, files['legacy']!).catch((e: Error) => e);
        assert.match((legacy as Error).message, /openssl pkcs12 -export/);
        await assert.rejects(importInto(card.cardId, 0x9b, files['rsa']!), { code: 'ERR_USAGE' });
        assert.equal(await cardContents(storage, card.cardId), before, 'nothing changed');
        assert.equal((await auditOf(storage, card.cardId, 'card.pkcs12-imported')).length, 0);
      });

      it('replacing an enrolled slot revokes the CA certificate it had and signs a CRL', async () => {
        await initEmbeddedCa({ storage, kek, crlUrl: 'http://127.0.0.1:8080/ca/crl', actor: 'admin:test' });
        const card = await createTestCard(storage, kek);
        await enrollCard({
          storage,
          kek,
          cardId: card.cardId,
          claims: { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice' },
          actor: 'admin:test',
          slots: [0x9d],
        });
        const enrolled = (await listCardCertificates(storage, card.cardId)).filter((c) => c.slot === 0x9d);
        assert.equal(enrolled.length, 1);
        const result = await importInto(card.cardId, 0x9d, files['rsa']!);
        assert.deepEqual(result.revoked, [enrolled[0]!.serial]);
        assert.ok(result.crlNumber !== undefined);
        const after = await listCardCertificates(storage, card.cardId);
        assert.equal(after.length, 1, 'the imported certificate is not registered at the CA');
        assert.equal(after[0]!.revocationReason, 'superseded');
      });

      it('a failure inside the transaction (the KEK refuses to seal) rolls everything back', async () => {
        const card = await createTestCard(storage, kek);
        await enrollCard({
          storage,
          kek,
          cardId: card.cardId,
          claims: { email: 'bob@example.com', upn: 'bob@corp.example', name: 'Bob' },
          actor: 'admin:test',
          slots: [0x9d],
        });
        const before = await cardContents(storage, card.cardId);
        const failing: KekProvider = Object.create(kek) as KekProvider;
        failing.wrap = () => Promise.reject(new Error('HSM gone'));
        await assert.rejects(
          importPkcs12({
            storage,
            kek: failing,
            cardId: card.cardId,
            slot: 0x9d,
            pkcs12: files['rsa']!,
            password: PASSWORD,
            actor: 'admin:test',
          }),
          /HSM gone/,
        );
        // The fence (version), the revocation of the 9D CA certificate and every write are undone.
        assert.equal(await cardContents(storage, card.cardId), before);
        const certs = await listCardCertificates(storage, card.cardId);
        assert.deepEqual(
          certs.map((c) => c.revokedAt),
          [null],
        );
        assert.equal((await auditOf(storage, card.cardId, 'card.pkcs12-imported')).length, 0);
      });

      it('a file without a MAC imports when allowed (allowNoMac), and the audit entry says mac none', async () => {
        const card = await createTestCard(storage, kek);
        const result = await importPkcs12({
          storage,
          kek,
          cardId: card.cardId,
          slot: 0x9a,
          pkcs12: files['noMac']!,
          password: PASSWORD,
          allowNoMac: true,
          actor: 'admin:test',
        });
        assert.equal(result.mac, 'none');
        const row = (await listCardKeys(storage, card.cardId)).find((k) => k.slot === 0x9a)!;
        assert.equal(row.publicKeySpki.toString('hex'), spkiOfCert(rsa.certPem));
        const details = (await auditOf(storage, card.cardId, 'card.pkcs12-imported'))[0]!.details;
        assert.equal(details['mac'], 'none');
      });

      it('a CRL that cannot be signed after the commit: the import stands and crlError says so', async () => {
        await initEmbeddedCa({
          storage,
          kek,
          crlUrl: 'http://127.0.0.1:8080/ca/crl',
          actor: 'admin:test',
        }).catch((error: { code?: string }) => {
          if (error.code !== 'ERR_CA_EXISTS') throw error; // made by an earlier test on this database
        });
        const card = await createTestCard(storage, kek);
        await enrollCard({
          storage,
          kek,
          cardId: card.cardId,
          claims: { email: 'carol@example.com', upn: 'carol@corp.example', name: 'Carol' },
          actor: 'admin:test',
          slots: [0x9d],
        });
        const enrolled = (await listCardCertificates(storage, card.cardId)).find((c) => c.slot === 0x9d)!;
        // Sealing (wrap) works, unsealing the CA key for the CRL (unwrap) fails: only the CRL fails.
        const caUnavailable: KekProvider = Object.create(kek) as KekProvider;
        caUnavailable.unwrap = () => Promise.reject(new Error('HSM busy'));
        const result = await importPkcs12({
          storage,
          kek: caUnavailable,
          cardId: card.cardId,
          slot: 0x9d,
          pkcs12: files['rsa']!,
          password: PASSWORD,
          actor: 'admin:test',
        });
        assert.deepEqual(result.revoked, [enrolled.serial]);
        assert.equal(result.crlNumber, undefined);
        assert.ok(result.crlError, 'the failed CRL is reported');
        assert.match(result.crlError.message, /HSM busy/);
        // Committed: the imported key and certificate are in the slot, the old certificate revoked.
        const row = (await listCardKeys(storage, card.cardId)).find((k) => k.slot === 0x9d)!;
        assert.equal(row.origin, 'imported');
        assert.equal(row.publicKeySpki.toString('hex'), spkiOfCert(rsa.certPem));
        const after = (await listCardCertificates(storage, card.cardId)).find((c) => c.slot === 0x9d)!;
        assert.equal(after.revocationReason, 'superseded');
        assert.equal((await auditOf(storage, card.cardId, 'card.pkcs12-imported')).length, 1);
      });

      it('into 9D of a card that archives 9D keys: archived (recoverable with openssl cms), the earlier archive detached; refused with nothing changed without a usable recovery certificate', async () => {
        const card = await createTestCard(
          storage,
          kek,
          { archiveKeyManagementKey: true },
          { recoveryCertificate: kra.certFile },
        );
        const recipient = await loadRecoveryCertificate(kra.certFile);
        const archivesBefore = await listArchivedKeys(storage, card.cardId);
        assert.deepEqual(
          archivesBefore.map((a) => a.slot),
          [0x9d],
          "create-card archived the card's first 9D key",
        );
        const before = await cardContents(storage, card.cardId);

        const refusals: [string, string | undefined, RegExp][] = [
          ['no recovery certificate', undefined, /no recovery certificate is configured/],
          ['not a certificate', kra.keyFile, /not an X\.509 certificate/],
        ];
        for (const [what, recoveryCertificate, problem] of refusals)
          await assert.rejects(
            importPkcs12({
              storage,
              kek,
              cardId: card.cardId,
              slot: 0x9d,
              pkcs12: files['rsa']!,
              password: PASSWORD,
              recoveryCertificate,
              actor: 'admin:test',
            }),
            (error: { code?: string; message?: string }) => {
              assert.equal(error.code, 'ERR_KEY_ARCHIVAL', what);
              assert.match(error.message ?? '', problem, what);
              return true;
            },
          );
        assert.equal(await cardContents(storage, card.cardId), before, 'nothing changed');
        assert.deepEqual(await listArchivedKeys(storage, card.cardId), archivesBefore);
        assert.equal((await auditOf(storage, card.cardId, 'card.pkcs12-imported')).length, 0);

        // Only 9D keys are archived: 9A imports without a recovery certificate, archives untouched.
        const into9a = await importInto(card.cardId, 0x9a, files['ecWithChain']!);
        assert.equal(into9a.keyArchivedFor, undefined);
        assert.deepEqual(await listArchivedKeys(storage, card.cardId), archivesBefore);

        const result = await importPkcs12({
          storage,
          kek,
          cardId: card.cardId,
          slot: 0x9d,
          pkcs12: files['rsa']!,
          password: PASSWORD,
          recoveryCertificate: kra.certFile,
          actor: 'admin:test',
        });
        assert.equal(result.keyArchivedFor, recipient.sha256);
        assert.equal(result.archivesDetached, 1);
        const archives = await listArchivedKeys(storage, card.cardId);
        // The earlier archive no longer names a slot (list-archived-keys: "replaced"); the new one is 9D.
        assert.deepEqual(
          archives.map((a) => [a.id, a.slot]),
          [
            [archivesBefore[0]!.id, undefined],
            [archives[1]!.id, 0x9d],
          ],
        );
        const archived = archives[1]!;
        assert.equal(
          archived.publicKeySha256,
          createHash('sha256')
            .update(Buffer.from(spkiOfCert(rsa.certPem), 'hex'))
            .digest('hex'),
        );
        assert.equal(archived.certificateSha256, result.certificateSha256);
        assert.equal(archived.recipientSha256, recipient.sha256);
        const details = (await auditOf(storage, card.cardId, 'card.pkcs12-imported')).find(
          (a) => a.details['slot'] === '0x9d',
        )!.details;
        assert.equal(details['keyArchivedFor'], recipient.sha256);
        assert.equal(details['archivesDetached'], 1);

        // Recoverable: the recovery agent's openssl opens the envelope to the imported key.
        const envelope = join(dir, `archive-${kind}.cms`);
        const recovered = join(dir, `recovered-${kind}.p8`);
        await writeFile(envelope, archived.envelope);
        const run = spawnSync(
          'openssl',
          [
            'cms',
            '-decrypt',
            '-inform',
            'DER',
            '-in',
            envelope,
            '-recip',
            kra.certFile,
            '-inkey',
            kra.keyFile,
            '-out',
            recovered,
          ],
          { encoding: 'utf8' },
        );
        assert.equal(run.status, 0, run.stderr);
        const recoveredKey = createPrivateKey({
          key: await readFile(recovered),
          format: 'der',
          type: 'pkcs8',
        });
        assert.deepEqual(
          recoveredKey.export({ format: 'jwk' }),
          createPrivateKey(rsa.keyPem).export({ format: 'jwk' }),
        );
      });
    });
  }
});
