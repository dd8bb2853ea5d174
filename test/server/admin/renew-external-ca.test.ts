/**
 * Renewal through the external CA (server/admin/renew.ts with `externalCa`, docs/personalization.md
 * "An external CA" and "Lifecycle") on SQLite and PostgreSQL, against a real `openssl ca`
 * directory: the renewed certificates come from that CA and verify against it, the old 9D key and
 * certificate move to retired slot 82 as with the embedded CA, the replaced certificates are
 * reported as not revoked (the card server cannot revoke the external CA's), a failing CA leaves
 * the card exactly as it was, and `renewDueCards` finds each CA's due cards (the external CA's by
 * the certificates on the cards, the embedded CA's by its register) and renews them by their CA. A
 * card moving from the embedded CA to the external one has its embedded certificates revoked.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  certificateObjectTag,
  decodeCertificateObject,
  PemConverter,
  X509Certificate,
} from '../../../apdu/piv/certificates/index.js';
import { decodeKeyHistory, OBJECT_TAG, retiredCertificateTag } from '../../../apdu/piv/objects/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import { createCard, loadDefaultProfile } from '../../../server/admin/index.js';
import { renewCard, renewDueCards } from '../../../server/admin/renew.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  getCardObject,
  listAuditRows,
  listCardCertificates,
  listCardKeys,
  listCardObjectTags,
  listSlotCertificateObjects,
  type Storage,
} from '../../../server/storage/index.js';
import { createOpensslCa, writeScript, type OpensslCa } from '../../support/openssl-ca.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const DAY_MS = 86_400_000;
const SLOT_TAGS = [0x9a, 0x9c, 0x9d, 0x9e].map((s) => certificateObjectTag(s)!);

for (const kind of BACKENDS) {
  describe(`renewal through the external CA (openssl ca) on ${kind}`, () => {
    let dir: string;
    let ca: OpensslCa;
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    const tenant = `t-${Date.now()}`;

    before(async () => {
      dir = await mkdtemp(join(tmpdir(), 'cardlink-renew-external-'));
      ca = await createOpensslCa(dir);
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      // The embedded CA exists too: its cards and the external CA's must not be mixed up.
      await initEmbeddedCa({ storage, kek, crlUrl: 'http://127.0.0.1:8080/ca/crl', actor: 'admin:test' });
    });
    after(async () => {
      await backend?.cleanup();
      await keys?.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    const newCard = async (subject: string) =>
      (
        await createCard({
          storage,
          kek,
          user: { issuer: 'https://idp.example', subject, tenant },
          profile: await loadDefaultProfile(),
        })
      ).cardId;
    const externalCard = async (subject: string) => {
      const cardId = await newCard(subject);
      const enrolled = await enrollCard({
        storage,
        kek,
        cardId,
        claims: CLAIMS,
        externalCa: { argv: [ca.wrapper] },
        actor: 'admin:test',
      });
      return { cardId, serials: enrolled.slots.map((s) => s.serial) };
    };
    /** Every key (slot, public key) and object of the card: what "as it was" means. */
    const snapshot = async (cardId: string) => ({
      keys: (await listCardKeys(storage, cardId)).map((k) => [k.slot, k.publicKeySpki.toString('hex')]),
      objects: await Promise.all(
        (await listCardObjectTags(storage, cardId)).map(async (t) => [
          t,
          (await getCardObject(storage, cardId, t))!.toString('hex'),
        ]),
      ),
    });
    const verifiesAgainst = async (caFile: string, der: Uint8Array, name: string) => {
      const pem = join(dir, `${name}.pem`);
      await writeFile(pem, PemConverter.encode(Uint8Array.from(der), 'CERTIFICATE'));
      return spawnSync('openssl', ['verify', '-CAfile', caFile, pem], { encoding: 'utf8' }).status === 0;
    };

    it('new keys: certificates from the external CA, old 9D retired to 82, the replaced ones listed as not revoked', async () => {
      const { cardId, serials } = await externalCard('renew-new');
      const old9d = await getCardObject(storage, cardId, certificateObjectTag(0x9d)!);
      const old9dKey = (await listCardKeys(storage, cardId)).find((k) => k.slot === 0x9d)!.publicKeySpki;
      const issuedBefore = await ca.issuedCount();

      const renewed = await renewCard({ storage, kek, cardId, externalCa: { argv: [ca.wrapper] } });

      assert.equal(renewed.keys, 'new');
      assert.equal(
        await ca.issuedCount(),
        issuedBefore + 4,
        'openssl ca issued the four renewed certificates',
      );
      assert.deepEqual(renewed.revoked, [], 'the card server revokes nothing of the external CA');
      assert.equal(renewed.crlNumber, undefined);
      assert.deepEqual([...renewed.notRevoked].sort(), [...serials].sort());
      assert.deepEqual(renewed.retired, { slot: 0x82, keyHistoryOnCard: 1 });
      assert.deepEqual(await getCardObject(storage, cardId, retiredCertificateTag(0)), old9d);
      const retiredKey = (await listCardKeys(storage, cardId)).find((k) => k.slot === 0x82)!;
      assert.deepEqual(retiredKey.publicKeySpki, old9dKey);
      assert.deepEqual(decodeKeyHistory((await getCardObject(storage, cardId, OBJECT_TAG.KEY_HISTORY))!), {
        onCard: 1,
        offCard: 0,
      });
      for (const s of renewed.slots) {
        const stored = decodeCertificateObject(
          (await getCardObject(storage, cardId, certificateObjectTag(s.slot)!))!,
        );
        assert.deepEqual(Buffer.from(stored), Buffer.from(s.certificate));
        assert.ok(!serials.includes(s.serial), 'a new certificate');
        assert.ok(await verifiesAgainst(ca.caFile, stored, `renewed-${s.slot.toString(16)}`));
      }
      // The claims came back from the external CA's certificates without --claim.
      const nine = new X509Certificate(renewed.slots.find((s) => s.slot === 0x9a)!.certificate);
      assert.equal(nine.subjectName.getField('CN')[0], 'Alice Example');
      assert.match(nine.toString('text'), /alice@corp\.example/);
      assert.equal(
        (await listCardCertificates(storage, cardId)).length,
        0,
        'nothing in the embedded register',
      );
      const audit = await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 });
      assert.equal(audit.length, 1);
      assert.match(audit[0]!.details, /"caId":"external"/);
      assert.match(audit[0]!.details, /"retiredTo":"0x82"/);
    });

    it('a failing external CA leaves the card as it was: keys, certificates, no retired slot', async () => {
      const { cardId } = await externalCard('renew-fail');
      const before = await snapshot(cardId);
      const failing = await writeScript(dir, 'fail.sh', 'cat >/dev/null; echo "CA is offline" >&2; exit 3');
      await assert.rejects(
        renewCard({ storage, kek, cardId, externalCa: { argv: [failing] } }),
        (e: Error & { code?: string; context?: Record<string, unknown> }) => {
          assert.equal(e.code, 'ERR_ENROLLMENT');
          assert.equal(e.context?.['stderr'], 'CA is offline');
          return true;
        },
      );
      // A CA that issues the first slots and then fails: still nothing written.
      const counter = join(dir, 'calls');
      const flaky = await writeScript(
        dir,
        'flaky.sh',
        `n=$(cat ${counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${counter}\n` +
          `if [ $n -ge 3 ]; then cat >/dev/null; echo "quota exceeded" >&2; exit 1; fi\nexec ${ca.wrapper}`,
      );
      await assert.rejects(renewCard({ storage, kek, cardId, externalCa: { argv: [flaky] } }), {
        code: 'ERR_ENROLLMENT',
      });
      assert.deepEqual(await snapshot(cardId), before);
    });

    it('renewDueCards: the external CA renews its due cards, the embedded CA its own; self-signed cards are left alone', async () => {
      const external = await externalCard('due-external');
      const embedded = await newCard('due-embedded');
      await enrollCard({ storage, kek, cardId: embedded, claims: CLAIMS, actor: 'admin:test' });
      const plain = await newCard('due-plain');
      // Both CAs issue for 365 days: 340 days on, 25 are left, inside the default 30-day window.
      const later = new Date(Date.now() + 340 * DAY_MS);

      const byExternal = new Map(
        (await renewDueCards({ storage, kek, now: later, externalCa: { argv: [ca.wrapper] } })).map((r) => [
          r.cardId,
          r,
        ]),
      );
      assert.ok(byExternal.get(external.cardId)?.renewed, 'the external CA renewed its due card');
      assert.equal(byExternal.get(external.cardId)?.error, undefined);
      assert.deepEqual(
        [...byExternal.get(external.cardId)!.renewed!.notRevoked].sort(),
        [...external.serials].sort(),
      );
      assert.equal(
        byExternal.has(embedded),
        false,
        "the embedded CA's card is not the external CA's to renew",
      );
      assert.equal(byExternal.has(plain), false, 'self-signed certificates are not due for a CA');
      const renewed9a = decodeCertificateObject(
        (await getCardObject(storage, external.cardId, certificateObjectTag(0x9a)!))!,
      );
      assert.ok(await verifiesAgainst(ca.caFile, renewed9a, 'due-external-9a'));

      const byEmbedded = new Map(
        (await renewDueCards({ storage, kek, now: later })).map((r) => [r.cardId, r]),
      );
      assert.ok(byEmbedded.get(embedded)?.renewed, 'the embedded CA renewed its due card');
      assert.deepEqual(
        byEmbedded.get(embedded)!.renewed!.notRevoked,
        [],
        'the embedded CA revoked what it replaced',
      );
      assert.equal(byEmbedded.has(external.cardId), false);
      assert.equal(byEmbedded.has(plain), false);
    });

    it("a card moving from the embedded CA to the external one: the embedded CA's certificates are revoked, the card is then the external CA's to renew", async () => {
      const cardId = await newCard('moving');
      const first = await enrollCard({ storage, kek, cardId, claims: CLAIMS, actor: 'admin:test' });
      const renewed = await renewCard({ storage, kek, cardId, externalCa: { argv: [ca.wrapper] } });
      assert.deepEqual(
        [...renewed.revoked].sort(),
        first.slots.map((s) => s.serial).sort(),
        'the embedded CA revoked what it had issued',
      );
      assert.ok(renewed.crlNumber !== undefined, 'and signed a CRL');
      assert.deepEqual(renewed.notRevoked, []);
      const register = await listCardCertificates(storage, cardId);
      assert.equal(register.filter((c) => c.revokedAt === null).length, 0);
      const later = new Date(Date.now() + 340 * DAY_MS);
      const dueEmbedded = await renewDueCards({ storage, kek, now: later });
      assert.equal(
        dueEmbedded.some((r) => r.cardId === cardId),
        false,
      );
      const dueExternal = await renewDueCards({
        storage,
        kek,
        now: later,
        externalCa: { argv: [ca.wrapper] },
      });
      assert.ok(dueExternal.find((r) => r.cardId === cardId)?.renewed);
    });

    it('the certificate scan pages through every card once, in order', async () => {
      const all = await listSlotCertificateObjects(storage, SLOT_TAGS, 10_000);
      assert.ok(all.length >= 12);
      const paged: string[] = [];
      let last: { cardId: string; tag: number } | undefined;
      for (;;) {
        const page = await listSlotCertificateObjects(storage, SLOT_TAGS, 5, last);
        paged.push(...page.map((r) => `${r.cardId}/${r.tag}`));
        if (page.length < 5) break;
        last = { cardId: page.at(-1)!.cardId, tag: page.at(-1)!.tag };
      }
      assert.deepEqual(
        paged,
        all.map((r) => `${r.cardId}/${r.tag}`),
      );
      assert.ok(all.every((r) => SLOT_TAGS.includes(r.tag)));
    });
  });
}
