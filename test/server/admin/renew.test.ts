/**
 * Renewal (server/admin/renew.ts, docs/personalization.md "Lifecycle") on SQLite and PostgreSQL:
 * same-key renewal keeps the slots' public keys and takes the claims back from the current
 * certificates; new-key renewal moves the old 9D key and certificate to 82, then 83, with the
 * Key History counting them and the moved key opening at its new slot only; `renewDueCards`
 * renews a card inside its profile's window and leaves one outside it alone, and does not count a
 * short-lived 9A certificate (a due card of such a profile renews its other slots); the rules for the
 * retired slots (apdu/piv/objects/key-history.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import {
  certificateObjectTag,
  decodeCertificateObject,
  X509Certificate,
} from '../../../apdu/piv/certificates/index.js';
import {
  decodeKeyHistory,
  keyHistoryOnCardCount,
  nextRetiredSlot,
  OBJECT_TAG,
  retiredCertificateTag,
} from '../../../apdu/piv/objects/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import {
  createCard,
  loadDefaultProfile,
  profileToJson,
  type CardProfile,
} from '../../../server/admin/index.js';
import { claimsFromCertificate, renewCard, renewDueCards } from '../../../server/admin/renew.js';
import { resolveTemplate } from '../../../server/admin/certificate-template.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import { normaliseSerial } from '../../../server/ca/issue-certificate.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { unsealSecret } from '../../../server/keys/sealing.js';
import {
  getCard,
  getCardObject,
  listAuditRows,
  listCardCertificates,
  listCardKeys,
  type Storage,
} from '../../../server/storage/index.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const DAY_MS = 86_400_000;

describe('retired slot rules', () => {
  it('fills 82, 83, ... in order and counts up to the highest retired slot with a certificate', () => {
    assert.equal(nextRetiredSlot([]), 0x82);
    assert.equal(nextRetiredSlot([0x9a, 0x9d]), 0x82);
    assert.equal(nextRetiredSlot([0x82, 0x9d]), 0x83);
    assert.equal(nextRetiredSlot([0x82, 0x85]), 0x86);
    assert.equal(nextRetiredSlot([0x95]), undefined);
    assert.equal(keyHistoryOnCardCount([]), 0);
    assert.equal(keyHistoryOnCardCount([0x9d, 0x82]), 1);
    assert.equal(keyHistoryOnCardCount([0x82, 0x84]), 3);
  });
});

for (const kind of BACKENDS) {
  describe(`renewal on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    let profile: CardProfile;
    const tenant = `t-${Date.now()}`;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      profile = await loadDefaultProfile();
      await initEmbeddedCa({ storage, kek, crlUrl: 'http://127.0.0.1:8080/ca/crl', actor: 'admin:test' });
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    const enrolledCard = async (subject: string, p: unknown = profile) => {
      const card = await createCard({
        storage,
        kek,
        user: { issuer: 'https://idp.example', subject, tenant },
        profile: p,
      });
      await enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS, actor: 'admin:test' });
      return card.cardId;
    };
    const spkiBySlot = async (cardId: string) =>
      new Map((await listCardKeys(storage, cardId)).map((k) => [k.slot, k.publicKeySpki.toString('hex')]));
    const certificate = async (cardId: string, tag: number) =>
      new X509Certificate(decodeCertificateObject((await getCardObject(storage, cardId, tag))!));

    it('same keys: new certificates for the same public keys, claims read back, old ones superseded', async () => {
      const cardId = await enrolledCard('same-key');
      const before = await spkiBySlot(cardId);
      const renewed = await renewCard({ storage, kek, cardId, keys: 'same', actor: 'admin:test' });
      assert.equal(renewed.keys, 'same');
      assert.equal(renewed.retired, undefined);
      assert.deepEqual(await spkiBySlot(cardId), before);
      const a = await certificate(cardId, certificateObjectTag(0x9a)!);
      assert.equal(a.subjectName.getField('CN')[0], 'Alice Example');
      assert.match(a.toString('text'), /alice@example\.com/);
      assert.match(a.toString('text'), /alice@corp\.example/);
      const certs = await listCardCertificates(storage, cardId);
      assert.equal(certs.filter((c) => c.revokedAt === null).length, 4);
      assert.equal(certs.filter((c) => c.revocationReason === 'superseded').length, 4);
      assert.equal(renewed.revoked.length, 4);
      // Still no retired slot, and the keys are still usable where they are.
      assert.equal(
        [...before.keys()].some((s) => s >= 0x82 && s <= 0x95),
        false,
      );
      const audit = await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 });
      assert.equal(audit.length, 1);
      assert.match(audit[0]!.details, /"keys":"same"/);
    });

    it('new keys twice: the old 9D keys go to 82 then 83, the Key History counts two', async () => {
      const cardId = await enrolledCard('new-key');
      const first9d = (await spkiBySlot(cardId)).get(0x9d)!;
      const firstCert = await getCardObject(storage, cardId, certificateObjectTag(0x9d)!);
      const r1 = await renewCard({ storage, kek, cardId, actor: 'admin:test' });
      assert.deepEqual(r1.retired, { slot: 0x82, keyHistoryOnCard: 1 });
      const second9d = (await spkiBySlot(cardId)).get(0x9d)!;
      assert.notEqual(second9d, first9d);
      const r2 = await renewCard({ storage, kek, cardId, actor: 'admin:test' });
      assert.deepEqual(r2.retired, { slot: 0x83, keyHistoryOnCard: 2 });
      const now = await spkiBySlot(cardId);
      assert.equal(now.get(0x82), first9d);
      assert.equal(now.get(0x83), second9d);
      assert.deepEqual(await getCardObject(storage, cardId, retiredCertificateTag(0)), firstCert);
      const history = decodeKeyHistory((await getCardObject(storage, cardId, OBJECT_TAG.KEY_HISTORY))!);
      assert.deepEqual(history, { onCard: 2, offCard: 0 });

      // The CA's register follows each old key management certificate to its retired slot; the
      // one in 9D now is the only 9D row.
      const bySerial = new Map((await listCardCertificates(storage, cardId)).map((c) => [c.serial, c]));
      const serialOf = async (tag: number) => normaliseSerial((await certificate(cardId, tag)).serialNumber);
      assert.equal(bySerial.get(await serialOf(retiredCertificateTag(0)))?.slot, 0x82);
      assert.equal(bySerial.get(await serialOf(retiredCertificateTag(1)))?.slot, 0x83);
      const in9d = [...bySerial.values()].filter((c) => c.slot === 0x9d).map((c) => c.serial);
      assert.deepEqual(in9d, [await serialOf(certificateObjectTag(0x9d)!)]);

      // The moved key is sealed for its new slot: it opens there, and matches the old public key.
      const card = await getCard(storage, cardId);
      const retired = (await listCardKeys(storage, cardId)).find((k) => k.slot === 0x82)!;
      const pkcs8 = await unsealSecret(kek, retired.key, { tenantId: card.tenantId, cardId, slot: 0x82 });
      const spki = createPublicKey(createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })).export({
        type: 'spki',
        format: 'der',
      });
      pkcs8.fill(0);
      assert.equal(spki.toString('hex'), first9d);
      await assert.rejects(unsealSecret(kek, retired.key, { tenantId: card.tenantId, cardId, slot: 0x9d }), {
        code: 'ERR_SEALED_KEY_INVALID',
      });
    });

    it('renewDueCards renews a card inside its window and leaves one outside it', async () => {
      const json = profileToJson(profile);
      const due = await enrolledCard('due', { ...json, renewal: { key: 'new', windowDays: 30 } });
      const notDue = await enrolledCard('not-due', { ...json, renewal: { key: 'new', windowDays: 10 } });
      // Default validity 365 days: 340 days on, 25 days are left (inside 30, outside 10).
      const later = new Date(Date.now() + 340 * DAY_MS);
      const results = await renewDueCards({ storage, kek, actor: 'admin:timer', now: later });
      const byCard = new Map(results.map((r) => [r.cardId, r]));
      assert.ok(byCard.get(due)?.renewed, 'the card inside its window was renewed');
      assert.equal(byCard.get(due)?.error, undefined);
      assert.equal(byCard.has(notDue), false);
      const fresh = await certificate(due, certificateObjectTag(0x9a)!);
      assert.ok(Date.parse(fresh.notAfter.toISOString()) > later.getTime() + 300 * DAY_MS);
    });

    it('renewDueCards: a short-lived 9A certificate does not make a card due; a due one renews its other slots', async () => {
      const json = { ...profileToJson(profile), shortLived9AHours: 8 };
      const fresh = await enrolledCard('short-fresh', json);
      const due = await enrolledCard('short-due', json);
      // Both get a short-lived 9A (what a sign-in does): it expires within hours, inside any window.
      for (const cardId of [fresh, due])
        await enrollCard({
          storage,
          kek,
          cardId,
          claims: CLAIMS,
          actor: 'admin:test',
          slots: [0x9a],
          validityHours: 8,
        });
      const results = await renewDueCards({ storage, kek, actor: 'admin:timer' });
      assert.equal(
        results.some((r) => r.cardId === fresh || r.cardId === due),
        false,
        'neither is due today',
      );
      const later = await renewDueCards({
        storage,
        kek,
        actor: 'admin:timer',
        now: new Date(Date.now() + 340 * DAY_MS),
      });
      const renewed = later.find((r) => r.cardId === due)?.renewed;
      assert.ok(renewed, 'due 25 days before its other certificates expire');
      assert.deepEqual(renewed.slots.map((s) => s.slot).sort(), [0x9c, 0x9d, 0x9e]);
    });

    it('a template with a prefix gives its claim back from the certificate', async () => {
      const cardId = await enrolledCard('prefix', {
        ...profileToJson(profile),
        slots: [
          { slot: '9A', algorithm: 'ECCP256', template: { subject: [{ CN: 'Employee {name} ({email})' }] } },
        ],
      });
      const cert = await certificate(cardId, certificateObjectTag(0x9a)!);
      const stored = (await getCard(storage, cardId)).profile as { slots: { template: unknown }[] };
      assert.ok(stored.slots[0]!.template);
      const template = resolveTemplate(
        0x9a,
        'ECCP256',
        { subject: [{ attribute: 'CN', value: 'Employee {name} ({email})' }] },
        365,
      );
      assert.deepEqual(claimsFromCertificate(cert, template), {
        email: 'alice@example.com',
        upn: 'alice@corp.example',
        name: 'Alice Example',
      });
    });
  });
}
