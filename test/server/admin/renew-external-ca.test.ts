/**
 * Renewal through the external CA (server/admin/renew.ts with `externalCa`, docs/personalization.md
 * "An external CA" and "Lifecycle") on SQLite and PostgreSQL, against a real `openssl ca`
 * directory: the renewed certificates come from that CA and verify against it, the old 9D key and
 * certificate move to retired slot 82 as with the embedded CA, the replaced certificates are
 * reported as not revoked (the card server cannot revoke the external CA's), a failing CA leaves
 * the card exactly as it was, and `renewDueCards` finds each CA's due cards (the external CA's by
 * the certificates on the cards, the embedded CA's by its register) and renews them by their CA. A
 * card moving from the embedded CA to the external one has its embedded certificates revoked.
 * Two renewals of one card at once: the one whose CA answers last finds the card changed and writes
 * nothing. A card whose retired slots are all taken is refused before the CA is asked. The due
 * scan counts neither a short-lived 9A (not renewed; renewal lists no 9A serial as not revoked)
 * nor a certificate imported with import-p12 (another CA's, origin `imported`).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
import { createCard, loadDefaultProfile, profileToJson } from '../../../server/admin/index.js';
import { importPkcs12 } from '../../../server/admin/import-pkcs12.js';
import { renewCard, renewDueCards } from '../../../server/admin/renew.js';
import { normaliseSerial } from '../../../server/ca/issue-certificate.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { sealSecret } from '../../../server/keys/sealing.js';
import {
  getCardObject,
  lockCardForChange,
  putCardKey,
  listAuditRows,
  listCardCertificates,
  listCardKeys,
  listCardObjectTags,
  listSlotCertificateObjects,
  type Storage,
} from '../../../server/storage/index.js';
import { createOpensslCa, writeScript, type OpensslCa } from '../../support/openssl-ca.js';
import { exportPkcs12 } from '../../support/pkcs12.js';
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

    const newCard = async (subject: string, profile?: unknown) =>
      (
        await createCard({
          storage,
          kek,
          user: { issuer: 'https://idp.example', subject, tenant },
          profile: profile ?? (await loadDefaultProfile()),
        })
      ).cardId;
    const externalCard = async (subject: string, profile?: unknown) => {
      const cardId = await newCard(subject, profile);
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

    it('two renewals at once: the one whose CA answers after the other committed writes nothing', async () => {
      const { cardId } = await externalCard('race');
      // The second renewal's CA waits until the first renewal is done.
      const go = join(dir, 'race-go');
      const waiting = await writeScript(
        dir,
        'wait.sh',
        `while [ ! -f ${go} ]; do sleep 0.05; done\nexec ${ca.wrapper}`,
      );
      const second = renewCard({ storage, kek, cardId, externalCa: { argv: [waiting] } });
      const first = await renewCard({ storage, kek, cardId, externalCa: { argv: [ca.wrapper] } }).finally(
        () => writeFile(go, ''), // never leaves the second one waiting
      );
      await assert.rejects(second, { code: 'ERR_CARD_CHANGED_MEANWHILE' });
      for (const s of first.slots)
        assert.deepEqual(
          Buffer.from(
            decodeCertificateObject((await getCardObject(storage, cardId, certificateObjectTag(s.slot)!))!),
          ),
          Buffer.from(s.certificate),
          "the first renewal's certificates stay",
        );
      const held = (await listCardKeys(storage, cardId)).map((k) => k.slot);
      assert.ok(held.includes(0x82));
      assert.equal(held.includes(0x83), false, 'one retired slot used');
      const audit = await listAuditRows(storage, { cardId, eventType: 'card.renewed' }, { limit: 10 });
      assert.equal(audit.length, 1);
    });

    it('every retired slot taken: refused before the external CA is asked', async () => {
      const { cardId } = await externalCard('retired-full');
      const nine = (await listCardKeys(storage, cardId)).find((k) => k.slot === 0x9d)!;
      await storage.transaction(async (tx) => {
        const fenced = await lockCardForChange(tx, cardId);
        for (let slot = 0x82; slot <= 0x95; slot++) {
          const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
          const pkcs8 = pair.privateKey.export({ type: 'pkcs8', format: 'der' });
          await putCardKey(fenced, {
            slot,
            algorithm: 'ECCP256',
            publicKeySpki: pair.publicKey.export({ type: 'spki', format: 'der' }),
            key: await sealSecret(kek, pkcs8, { tenantId: fenced.tenantId, cardId, slot }, fenced.version),
            pinPolicy: nine.pinPolicy,
            touchPolicy: nine.touchPolicy,
            origin: 'generated',
          });
        }
      });
      const before = await snapshot(cardId);
      const issuedBefore = await ca.issuedCount();
      await assert.rejects(renewCard({ storage, kek, cardId, externalCa: { argv: [ca.wrapper] } }), {
        code: 'ERR_ENROLLMENT',
        message: /every retired key management slot/,
      });
      assert.equal(await ca.issuedCount(), issuedBefore, 'no certificate signed for nothing');
      assert.deepEqual(await snapshot(cardId), before);
    });

    it('the due scan: a short-lived 9A and an imported certificate do not make a card due', async () => {
      const shortLived = { ...profileToJson(await loadDefaultProfile()), shortLived9AHours: 8 };
      const { cardId: shortCard } = await externalCard('scan-short', shortLived);
      // Its 9A certificate from the external CA expires in a day (what short-lived 9A is for).
      const oneDay = await writeScript(
        dir,
        'one-day.sh',
        (await readFile(ca.wrapper, 'utf8'))
          .replace(/^#!\/bin\/sh\n/, '')
          .replace(' -notext', ' -notext -days 1'),
      );
      await enrollCard({
        storage,
        kek,
        cardId: shortCard,
        claims: CLAIMS,
        slots: [0x9a],
        externalCa: { argv: [oneDay] },
      });
      const short9a = new X509Certificate(
        decodeCertificateObject((await getCardObject(storage, shortCard, certificateObjectTag(0x9a)!))!),
      );
      assert.ok(short9a.notAfter.getTime() < Date.now() + 2 * DAY_MS, 'a certificate due today');

      // A card holding only an import-p12 key and certificate, from a third party's CA.
      const thirdParty = await createOpensslCa(join(dir, 'third'), 'Third Party CA');
      const keyFile = join(dir, 'third-party.key');
      const csr = spawnSync(
        'openssl',
        [
          'req',
          '-new',
          '-newkey',
          'ec',
          '-pkeyopt',
          'ec_paramgen_curve:P-256',
          '-nodes',
          '-keyout',
          keyFile,
          '-subj',
          '/CN=imported',
        ],
        { encoding: 'utf8' },
      );
      assert.equal(csr.status, 0, csr.stderr);
      const issued = spawnSync(thirdParty.wrapper, { input: csr.stdout, encoding: 'utf8' });
      assert.equal(issued.status, 0, issued.stderr);
      const certFile = join(dir, 'third-party.crt');
      await writeFile(certFile, issued.stdout);
      const p12 = await exportPkcs12(dir, 'third-party', { keyFile, certFile }, 'test password');
      const importedCard = await newCard('scan-imported');
      await importPkcs12({
        storage,
        kek,
        cardId: importedCard,
        slot: 0x9d,
        pkcs12: await readFile(p12),
        password: 'test password',
      });

      const today = await renewDueCards({ storage, kek, externalCa: { argv: [ca.wrapper] } });
      assert.equal(
        today.some((r) => r.cardId === shortCard),
        false,
        'the short-lived 9A does not make the card due',
      );
      // 340 days on, the imported certificate (365 days) is inside the window too.
      const later = await renewDueCards({
        storage,
        kek,
        now: new Date(Date.now() + 340 * DAY_MS),
        externalCa: { argv: [ca.wrapper] },
      });
      assert.equal(
        later.some((r) => r.cardId === importedCard),
        false,
        "an imported certificate is not the external CA's to renew",
      );
      const renewed = later.find((r) => r.cardId === shortCard)?.renewed;
      assert.ok(renewed, 'due by its other certificates');
      assert.deepEqual(renewed.slots.map((s) => s.slot).sort(), [0x9c, 0x9d, 0x9e]);
      assert.equal(renewed.notRevoked.includes(normaliseSerial(short9a.serialNumber)), false);
      assert.equal(
        renewed.notRevoked.length,
        3,
        "the three replaced certificates are the external CA's to revoke",
      );
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
