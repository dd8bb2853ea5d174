/**
 * Renewal (server/admin/renew.ts, docs/personalization.md "Lifecycle") on SQLite and PostgreSQL:
 * same-key renewal keeps the slots' public keys and takes the claims back from the current
 * certificates; new-key renewal moves the old 9D key and certificate to 82, then 83, with the
 * Key History counting them and the moved key opening at its new slot only; `renewDueCards`
 * renews a card inside its profile's window and leaves one outside it alone, and does not count a
 * short-lived 9A certificate (a due card of such a profile renews its other slots, and lists no 9A
 * serial as "not revoked"); two renewals of one due card at once (two sign-ins) renew it once, the
 * second writing nothing; a card no longer due is not renewed by a renewal that asked `onlyIfDueAt`;
 * a CRL that cannot be signed after the commit leaves a renewed card and `crlError`, not a failure; the
 * rules for the retired slots (apdu/piv/objects/key-history.ts).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { sql } from 'kysely';
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
import { parseCardProfile } from '../../../server/admin/profile.js';
import {
  claimsFromCertificate,
  renewalDueSince,
  renewCard,
  renewDueCards,
  renewedSlots,
} from '../../../server/admin/renew.js';
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
      // The live short-lived 9A certificate was not replaced: it is not "replaced but not revoked".
      const nine = normaliseSerial((await certificate(due, certificateObjectTag(0x9a)!)).serialNumber);
      assert.equal(renewed.revoked.includes(nine), false);
      assert.deepEqual(renewed.notRevoked, []);
    });

    it('two renewals of one due card at once (two sign-ins): one renews, the other writes nothing', async () => {
      const json = { ...profileToJson(profile), renewal: { key: 'new', windowDays: 30 } };
      const cardId = await enrolledCard('race', json);
      const p = parseCardProfile(json);
      const first = await listCardCertificates(storage, cardId);
      const later = new Date(Date.now() + 340 * DAY_MS);
      // What renewal at sign-in does: both find the card due, then both renew it.
      const due = await Promise.all([1, 2].map(() => renewalDueSince(storage, cardId, p, later)));
      assert.ok(due.every((d) => d !== undefined));
      const results = await Promise.allSettled(
        [1, 2].map((n) =>
          renewCard({
            storage,
            kek,
            cardId,
            actor: `user:${n}`,
            now: later,
            onlyIfDueAt: later,
            slots: renewedSlots(p),
          }),
        ),
      );
      const renewed = results.filter((r) => r.status === 'fulfilled');
      const refused = results.filter((r) => r.status === 'rejected');
      assert.equal(renewed.length, 1, 'exactly one renewal');
      assert.equal(refused.length, 1);
      assert.equal((refused[0] as PromiseRejectedResult).reason.code, 'ERR_CARD_CHANGED_MEANWHILE');

      const held = (await listCardKeys(storage, cardId)).map((k) => k.slot);
      assert.ok(held.includes(0x82), 'the old 9D key retired once');
      assert.equal(held.includes(0x83), false, 'and only once');
      assert.deepEqual(decodeKeyHistory((await getCardObject(storage, cardId, OBJECT_TAG.KEY_HISTORY))!), {
        onCard: 1,
        offCard: 0,
      });
      const register = await listCardCertificates(storage, cardId);
      const superseded = register.filter((c) => c.revocationReason === 'superseded').map((c) => c.serial);
      assert.deepEqual(superseded.sort(), first.map((c) => c.serial).sort(), 'one set revoked: the first');
      assert.equal(register.filter((c) => c.revokedAt === null).length, 4);
      const audit = await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 });
      assert.equal(audit.length, 1);
      const winner = (renewed[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof renewCard>>>).value;
      const on9a = await certificate(cardId, certificateObjectTag(0x9a)!);
      assert.equal(normaliseSerial(on9a.serialNumber), winner.slots.find((s) => s.slot === 0x9a)!.serial);
    });

    it('onlyIfDueAt: a card that is no longer due is left as it was', async () => {
      const json = { ...profileToJson(profile), renewal: { key: 'new', windowDays: 30 } };
      const cardId = await enrolledCard('not-due-any-more', json);
      const before = await spkiBySlot(cardId);
      await assert.rejects(
        renewCard({ storage, kek, cardId, actor: 'admin:test', onlyIfDueAt: new Date() }),
        { code: 'ERR_CARD_CHANGED_MEANWHILE' },
      );
      assert.deepEqual(await spkiBySlot(cardId), before);
      assert.equal(
        (await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 })).length,
        0,
      );
      assert.equal((await listCardCertificates(storage, cardId)).filter((c) => c.revokedAt).length, 0);
    });

    it('a CRL that cannot be signed after the commit: the renewal stands, with crlError', async () => {
      const cardId = await enrolledCard('crl-down');
      // The CRL's transaction fails (as an HSM or KEK error would): its CRL number cannot move.
      if (kind === 'sqlite') {
        await sql`create trigger test_no_crl before update of crl_number on issuing_cas
          begin select raise(abort, 'test: the CRL cannot be signed'); end`.execute(storage.db);
      } else {
        await sql`create function test_no_crl() returns trigger language plpgsql as
          $$ begin raise exception 'test: the CRL cannot be signed'; end $$`.execute(storage.db);
        await sql`create trigger test_no_crl before update of crl_number on issuing_cas
          for each row execute function test_no_crl()`.execute(storage.db);
      }
      try {
        const renewed = await renewCard({ storage, kek, cardId, keys: 'same', actor: 'admin:test' });
        assert.equal(renewed.revoked.length, 4, 'the superseded certificates are revoked');
        assert.equal(renewed.crlNumber, undefined);
        assert.ok(renewed.crlError, 'the CRL failure is reported');
        assert.match(renewed.crlError.code, /^ERR_/);
        assert.equal(
          (await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 })).length,
          1,
        );
        const on9a = await certificate(cardId, certificateObjectTag(0x9a)!);
        assert.equal(normaliseSerial(on9a.serialNumber), renewed.slots.find((s) => s.slot === 0x9a)!.serial);
      } finally {
        await sql`drop trigger test_no_crl${sql.raw(kind === 'sqlite' ? '' : ' on issuing_cas')}`.execute(
          storage.db,
        );
        if (kind === 'postgres') await sql`drop function test_no_crl()`.execute(storage.db);
      }
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
