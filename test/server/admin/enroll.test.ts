/**
 * Enrollment with the issuing CA (docs/personalization.md), on SQLite and PostgreSQL: the embedded
 * CA's key sealed like a card key, certificates from the slot templates that OpenSSL verifies
 * against the CA and shows with the template's SANs and EKUs, the slot keys matching them,
 * superseded and erased cards' certificates in the CRL, no key material left for an erased card,
 * the CA key through a KEK rotation, and card serials from a profile's range.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  certificateObjectTag,
  decodeCertificateObject,
  PemConverter,
} from '../../../apdu/piv/certificates/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import {
  createCard,
  deleteCard,
  loadDefaultProfile,
  profileToJson,
  rotateKek,
  type CardProfile,
} from '../../../server/admin/index.js';
import { initEmbeddedCa, openIssuingCa, showCa } from '../../../server/ca/issuing-ca.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  findIssuingCa,
  getCardObject,
  listCardCertificates,
  listCardKeys,
  type Storage,
} from '../../../server/storage/index.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const CRL_URL = 'http://127.0.0.1:8080/ca/crl';

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

for (const kind of BACKENDS) {
  describe(`enrollment with the embedded CA on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    let profile: CardProfile;
    let dir: string;
    let caFile: string;
    let tenant: string;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      profile = await loadDefaultProfile();
      dir = await mkdtemp(join(tmpdir(), 'cardlink-enroll-'));
      tenant = `t-${Date.now()}`;
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    const file = async (name: string, text: string) => {
      const path = join(dir, name);
      await writeFile(path, text);
      return path;
    };
    const newCard = (subject: string, p: CardProfile | unknown = profile) =>
      createCard({ storage, kek, user: { issuer: 'https://idp.example', subject, tenant }, profile: p });
    const slotCertificate = async (cardId: string, slot: number) => {
      const value = await getCardObject(storage, cardId, certificateObjectTag(slot)!);
      assert.ok(value, `slot ${slot.toString(16)} has a certificate object`);
      return decodeCertificateObject(value);
    };
    const certFile = (name: string, der: Uint8Array) =>
      file(name, PemConverter.encode(Uint8Array.from(der), 'CERTIFICATE'));
    const currentCrlFile = async (name: string) => {
      const ca = await findIssuingCa(storage);
      assert.ok(ca?.crl, 'a CRL is stored');
      return file(name, PemConverter.encode(Uint8Array.from(ca.crl), 'X509 CRL'));
    };

    it('refuses to enroll before there is a CA, then generates one and refuses a second', async () => {
      const card = await newCard('before-ca');
      await assert.rejects(enrollCard({ storage, kek, cardId: card.cardId }), { code: 'ERR_CA_MISSING' });
      const info = await initEmbeddedCa({ storage, kek, crlUrl: CRL_URL, actor: 'admin:test' });
      assert.equal(info.origin, 'generated');
      assert.equal(info.algorithm, 'ECCP384');
      assert.equal(info.subject, 'CN=cardlink issuing CA');
      caFile = await file('ca.pem', info.certificatePem);
      const text = openssl(['x509', '-in', caFile, '-noout', '-text']);
      assert.equal(text.status, 0, text.out);
      assert.match(text.out, /CA:TRUE, pathlen:0/);
      assert.match(text.out, /Certificate Sign, CRL Sign/);
      await assert.rejects(initEmbeddedCa({ storage, kek, crlUrl: CRL_URL, actor: 'admin:test' }), {
        code: 'ERR_CA_EXISTS',
      });
      // The key is sealed: nothing in the row parses as a private key.
      const row = await findIssuingCa(storage);
      assert.ok(row && 'sealed' in row.key);
      assert.equal(row.key.sealed.sealed.includes(Buffer.from('PRIVATE KEY')), false);
      assert.ok(row.key.sealed.wrappedDataKey.length > 0);
    });

    let alice: { cardId: string; serials: Map<number, string> };

    it('issues four certificates that OpenSSL verifies against the CA, with the templates SANs and EKUs', async () => {
      const card = await newCard('alice');
      const enrolled = await enrollCard({
        storage,
        kek,
        cardId: card.cardId,
        claims: CLAIMS,
        actor: 'admin:test',
      });
      assert.deepEqual(
        enrolled.slots.map((s) => s.slot),
        [0x9a, 0x9c, 0x9d, 0x9e],
      );
      const keysBySlot = new Map((await listCardKeys(storage, card.cardId)).map((k) => [k.slot, k]));
      const expectations: Record<number, RegExp[]> = {
        0x9a: [
          /Key Usage: critical\s+Digital Signature\n/,
          /TLS Web Client Authentication, Microsoft Smartcard Login/,
          /email:alice@example.com, othername: UPN::alice@corp.example/,
          /Subject: CN = Alice Example, serialNumber = \d+/,
        ],
        0x9c: [/Digital Signature, Non Repudiation/, /E-mail Protection/, /email:alice@example.com/],
        0x9d: [/Key Encipherment/, /E-mail Protection/, /email:alice@example.com/],
        0x9e: [
          /Digital Signature/,
          /2\.16\.840\.1\.101\.3\.6\.8/,
          /Subject: CN = card \d+, serialNumber = \d+/,
        ],
      };
      for (const slot of [0x9a, 0x9c, 0x9d, 0x9e]) {
        const der = await slotCertificate(card.cardId, slot);
        const leaf = await certFile(`alice-${slot.toString(16)}.pem`, der);
        const verified = openssl(['verify', '-CAfile', caFile, leaf]);
        assert.equal(verified.status, 0, verified.out);
        const text = openssl(['x509', '-in', leaf, '-noout', '-text']);
        for (const pattern of expectations[slot]!) assert.match(text.out, pattern);
        assert.match(text.out, new RegExp(`URI:${CRL_URL.replace(/\./g, '\\.')}`));
        assert.match(text.out, new RegExp(`serialNumber = ${card.serial}\\b`));
        assert.match(text.out, /CA:FALSE/);
        if (slot === 0x9e)
          assert.doesNotMatch(text.out, /Alice|alice/, 'card authentication names no person');
        // The key in the slot is the certificate's key.
        const spki = new X509Certificate(der).publicKey.export({ type: 'spki', format: 'der' });
        assert.deepEqual(Buffer.from(keysBySlot.get(slot)!.publicKeySpki), spki);
      }
      const register = await listCardCertificates(storage, card.cardId);
      assert.equal(register.length, 4);
      assert.ok(register.every((r) => r.revokedAt === null));
      alice = { cardId: card.cardId, serials: new Map(enrolled.slots.map((s) => [s.slot, s.serial])) };
      const info = await showCa(storage);
      assert.equal(info.issued, 4);
    });

    it('re-enrolling supersedes: the old certificates are in the CRL, the new ones are not', async () => {
      const oldLeaf = await certFile('alice-old-9a.pem', await slotCertificate(alice.cardId, 0x9a));
      const again = await enrollCard({
        storage,
        kek,
        cardId: alice.cardId,
        claims: CLAIMS,
        actor: 'admin:test',
      });
      assert.deepEqual([...again.revoked].sort(), [...alice.serials.values()].sort());
      assert.equal(again.crlNumber, 1);
      const crl = await currentCrlFile('crl-1.pem');
      const text = openssl(['crl', '-in', crl, '-CAfile', caFile, '-noout', '-text']);
      assert.equal(text.status, 0, text.out);
      assert.match(text.out, /verify OK/);
      assert.match(text.out, /X509v3 CRL Number: \n\s+1/);
      for (const serial of alice.serials.values()) assert.match(text.out, new RegExp(serial, 'i'));
      assert.equal((text.out.match(/Superseded/g) ?? []).length, 4);
      const oldCheck = openssl(['verify', '-crl_check', '-CAfile', caFile, '-CRLfile', crl, oldLeaf]);
      assert.notEqual(oldCheck.status, 0);
      assert.match(oldCheck.out, /certificate revoked/);
      const newLeaf = await certFile('alice-new-9a.pem', await slotCertificate(alice.cardId, 0x9a));
      const newCheck = openssl(['verify', '-crl_check', '-CAfile', caFile, '-CRLfile', crl, newLeaf]);
      assert.equal(newCheck.status, 0, newCheck.out);
      alice.serials = new Map(again.slots.map((s) => [s.slot, s.serial]));
    });

    it('erase: no key material is left for the card and the CRL lists its certificates', async () => {
      const result = await deleteCard({ storage, kek, cardId: alice.cardId, actor: 'admin:test' });
      assert.deepEqual([...result.revoked].sort(), [...alice.serials.values()].sort());
      assert.equal(result.crlNumber, 2);
      for (const table of ['card_keys', 'card_objects', 'cards'] as const) {
        const column = table === 'cards' ? 'id' : 'card_id';
        const rows = await storage.db
          .selectFrom(table)
          .select((eb) => eb.fn.countAll<number>().as('n'))
          .where(column, '=', alice.cardId)
          .executeTakeFirstOrThrow();
        assert.equal(Number(rows.n), 0, `${table} holds nothing of the card`);
      }
      const crl = await currentCrlFile('crl-2.pem');
      const text = openssl(['crl', '-in', crl, '-CAfile', caFile, '-noout', '-text']);
      assert.equal(text.status, 0, text.out);
      for (const serial of alice.serials.values()) assert.match(text.out, new RegExp(serial, 'i'));
      assert.equal((text.out.match(/Cessation Of Operation/g) ?? []).length, 4);
      assert.equal((text.out.match(/Superseded/g) ?? []).length, 4);
    });

    it('a template names its subject, SANs and EKUs; a missing subject claim refuses the enrollment', async () => {
      const json = profileToJson(profile) as { slots: Record<string, unknown>[] };
      json.slots = [
        {
          slot: '9A',
          algorithm: 'ECCP256',
          template: {
            subject: [{ CN: '{name}' }, { O: 'Example Corp' }],
            san: { upn: '{sub}@corp.example' },
            extendedKeyUsage: ['clientAuth', 'pkinitClientAuth', '1.2.3.4.5'],
            validityDays: 2,
          },
        },
      ];
      const card = await newCard('bob', json);
      await assert.rejects(enrollCard({ storage, kek, cardId: card.cardId, claims: { name: '' } }), {
        code: 'ERR_ENROLLMENT',
      });
      const enrolled = await enrollCard({ storage, kek, cardId: card.cardId, claims: { name: 'Bob' } });
      const leaf = await certFile('bob-9a.pem', enrolled.slots[0]!.certificate);
      const text = openssl(['x509', '-in', leaf, '-noout', '-text']);
      assert.match(text.out, /Subject: CN = Bob, O = Example Corp, serialNumber = \d+/);
      assert.match(text.out, /othername: UPN::bob@corp\.example/);
      assert.doesNotMatch(text.out, /email:/);
      assert.match(text.out, /TLS Web Client Authentication, PKINIT Client Auth, 1\.2\.3\.4\.5/);
      const cert = new X509Certificate(enrolled.slots[0]!.certificate);
      const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
      assert.equal(days, 2);
      assert.equal(openssl(['verify', '-CAfile', caFile, leaf]).status, 0);
    });

    it('keeps the CA key through a KEK rotation that retires the old version', async () => {
      const sealedKey = async () => {
        const row = await findIssuingCa(storage);
        assert.ok(row && 'sealed' in row.key);
        return row.key.sealed;
      };
      const before = await sealedKey();
      const rotation = await rotateKek({ storage, kek, retire: true });
      assert.ok(rotation.retired.includes(before.kekVersion), 'the old KEK version was retired');
      const after = await sealedKey();
      assert.equal(after.kekVersion, rotation.currentVersion);
      assert.deepEqual(after.sealed, before.sealed, 'only the data key was rewrapped');
      const ca = await openIssuingCa(storage, kek);
      assert.ok(ca.certificate);
      const card = await newCard('carol');
      const enrolled = await enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS });
      const leaf = await certFile('carol-9a.pem', enrolled.slots[0]!.certificate);
      assert.equal(openssl(['verify', '-CAfile', caFile, leaf]).status, 0);
    });

    it('takes card serials from the profile range, in order, and refuses when it is used up', async () => {
      const base = 3_000_000 + Math.floor(Math.random() * 1_000_000) * 4;
      const ranged = { ...profileToJson(profile), cardSerials: { first: base, last: base + 1 } };
      assert.equal((await newCard('dave', ranged)).serial, base);
      assert.equal((await newCard('erin', ranged)).serial, base + 1);
      await assert.rejects(
        newCard('frank', ranged),
        (e: Error & { code?: string; context?: { field?: string } }) => {
          assert.equal(e.code, 'ERR_CONFIG_INVALID');
          assert.equal(e.context?.field, 'cardSerials');
          return true;
        },
      );
      const card = await newCard('erin2', { ...ranged, cardSerials: { first: base + 2, last: base + 3 } });
      const enrolled = await enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS });
      const cert = new X509Certificate(enrolled.slots[0]!.certificate);
      assert.match(cert.subject, new RegExp(`serialNumber=${base + 2}`));
      assert.equal(cert.publicKey.asymmetricKeyType, 'rsa', "the default profile's 9A is RSA");
    });
  });
}
