import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID, X509Certificate } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeCertificateObject } from '../../../apdu/piv/certificates/index.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/index.js';
import {
  createCard,
  deleteCard,
  listCards,
  listUsers,
  loadCardProfile,
  loadDefaultProfile,
  parseCardProfile,
  profileToJson,
  queryAudit,
  rotateKek,
  unblockCard,
  type CardProfile,
} from '../../../server/admin/index.js';
import { verifyChain } from '../../../server/audit/audit-log.js';
import { openPersistentCardState } from '../../../server/cards/index.js';
import { SealedKeyInvalidError, type KekProvider } from '../../../server/keys/kek-provider.js';
import { getCardObject, listCardKeys, referenceStatus, type Storage } from '../../../server/storage/index.js';
import { expectSw } from '../../apdu/piv/support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';
import {
  auditOf,
  CARD_MGMT_KEY,
  CARD_PIN,
  createTestCard,
  openSession,
  pinBytes,
} from '../cards/support/card-fixture.js';

const configError = (field: string) => (e: Error & { code?: string; context?: Record<string, unknown> }) => {
  assert.equal(e.code, 'ERR_CONFIG_INVALID');
  assert.equal(e.context?.field, field, e.message);
  return true;
};

describe('card profiles', () => {
  it('ships a default profile: 9A RSA2048, 9C ECCP256, 9D RSA2048, 9E ECCP256, PIN 6-8, 3/3 tries, AES192', async () => {
    const p = await loadDefaultProfile();
    assert.deepEqual(
      p.slots.map((s) => [s.slot, s.algorithm, s.pinPolicy]),
      [
        [0x9a, 'RSA2048', 'once'],
        [0x9c, 'ECCP256', 'always'],
        [0x9d, 'RSA2048', 'once'],
        [0x9e, 'ECCP256', 'never'],
      ],
    );
    assert.deepEqual([p.pin.minLength, p.pin.maxLength, p.pin.retries, p.puk.retries], [6, 8, 3, 3]);
    assert.equal(p.managementKey.algorithm, 'AES192');
    assert.deepEqual(parseCardProfile(profileToJson(p)), p, 'round trip');
  });

  it('names the offending field', async () => {
    const base = profileToJson(await loadDefaultProfile());
    const bad = (patch: Record<string, unknown>, field: string) =>
      assert.throws(() => parseCardProfile({ ...base, ...patch }), configError(field));
    bad({ label: '' }, 'label');
    bad({ slots: [] }, 'slots');
    bad({ slots: [{ slot: '9B', algorithm: 'RSA2048' }] }, 'slots[0].slot');
    bad({ slots: [{ slot: '9A', algorithm: 'RSA1024' }] }, 'slots[0].algorithm');
    bad(
      {
        slots: [
          { slot: '9A', algorithm: 'RSA2048' },
          { slot: '9a', algorithm: 'ECCP256' },
        ],
      },
      'slots[1].slot',
    );
    bad({ slots: [{ slot: '9A', algorithm: 'RSA2048', pinPolicy: 'sometimes' }] }, 'slots[0].pinPolicy');
    bad({ slots: [{ slot: '9A', algorithm: 'RSA2048', touch: 'always' }] }, 'slots[0].touch');
    bad({ pin: { minLength: 4, maxLength: 8, retries: 3 } }, 'pin.minLength');
    bad({ pin: { minLength: 6, maxLength: 9, retries: 3 } }, 'pin.maxLength');
    bad({ puk: { minLength: 8, maxLength: 8, retries: 0 } }, 'puk.retries');
    bad({ managementKey: { algorithm: 'DES' } }, 'managementKey.algorithm');
    bad({ certificateValidityDays: 0 }, 'certificateValidityDays');
    bad({ colour: 'blue' }, 'profile.colour');
    assert.throws(() => parseCardProfile([]), configError('profile'));
  });

  it('loads a profile file and refuses one that is not JSON', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-profile-'));
    try {
      const good = join(dir, 'p384-only.json');
      await writeFile(
        good,
        JSON.stringify({
          label: 'P-384 card',
          slots: [{ slot: '9C', algorithm: 'ECCP384' }],
          pin: { minLength: 6, maxLength: 6, retries: 5 },
          puk: { minLength: 8, maxLength: 8, retries: 3 },
          managementKey: { algorithm: 'AES256' },
        }),
      );
      const p = await loadCardProfile(good);
      assert.equal(p.name, 'p384-only');
      assert.equal(p.slots[0]!.pinPolicy, 'always', "the slot's usual policy");
      const broken = join(dir, 'broken.json');
      await writeFile(broken, '{ "label": ');
      await assert.rejects(loadCardProfile(broken), configError('profile'));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

for (const kind of BACKENDS) {
  describe(`cardlink admin on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    let profile: CardProfile;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      profile = await loadDefaultProfile();
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    const counts = async () => {
      const n = async (table: 'cards' | 'card_keys' | 'card_objects' | 'users' | 'audit_log' | 'tenants') =>
        Number(
          (
            await storage.db
              .selectFrom(table)
              .select((eb) => eb.fn.countAll<number>().as('n'))
              .executeTakeFirstOrThrow()
          ).n,
        );
      return {
        cards: await n('cards'),
        keys: await n('card_keys'),
        objects: await n('card_objects'),
        users: await n('users'),
        audit: await n('audit_log'),
        tenants: await n('tenants'),
      };
    };

    it('creates a card from the default profile with generated secrets, objects, keys and certificates', async () => {
      const card = await createCard({
        storage,
        kek,
        user: { issuer: 'https://idp.example', subject: 'alice', tenant: 'acme' },
        profile,
        actor: 'admin:test',
      });
      assert.match(card.pin, /^[0-9]{8}$/);
      assert.match(card.puk, /^[0-9]{8}$/);
      assert.match(card.managementKey.key, /^[0-9a-f]{48}$/);
      assert.deepEqual(card.generated, { pin: true, puk: true, managementKey: true });
      assert.ok(card.serial > 0 && card.serial < 0x80000000);
      assert.deepEqual(
        (await listCardKeys(storage, card.cardId)).map((k) => [k.slot, k.algorithm, k.pinPolicy, k.origin]),
        [
          [0x9a, 'RSA2048', 'once', 'generated'],
          [0x9c, 'ECCP256', 'always', 'generated'],
          [0x9d, 'RSA2048', 'once', 'generated'],
          [0x9e, 'ECCP256', 'never', 'generated'],
        ],
      );
      for (const tag of [
        OBJECT_TAG.CHUID,
        OBJECT_TAG.CARD_CAPABILITY_CONTAINER,
        OBJECT_TAG.DISCOVERY,
        OBJECT_TAG.KEY_HISTORY,
      ]) {
        assert.ok(await getCardObject(storage, card.cardId, tag), `object ${tag.toString(16)}`);
      }
      const chuid = (await getCardObject(storage, card.cardId, OBJECT_TAG.CHUID))!;
      assert.ok(chuid.toString('hex').includes(`3410${card.guid}`), 'CHUID carries the fresh GUID');
      for (const s of card.slots) {
        const x509 = new X509Certificate(
          decodeCertificateObject((await getCardObject(storage, card.cardId, certTag(s.slot)))!),
        );
        assert.ok(x509.verify(x509.publicKey), 'self-signed');
        assert.match(x509.subject, /cardlink PIV card/);
      }
      const stored = JSON.stringify(
        await storage.db.selectFrom('cards').selectAll().where('id', '=', card.cardId).execute(),
      );
      assert.ok(!stored.includes(card.managementKey.key), 'no management key in the clear');
      const entry = (await auditOf(storage, card.cardId, 'card.created'))[0]!;
      assert.equal(entry.details.serial, card.serial);
      assert.ok(!JSON.stringify(entry).includes(card.pin));

      // The secrets work on the card.
      const s = await openSession(storage, kek, card.cardId);
      expectSw(await s.host.verifyPin(pinBytes(card.pin)), '9000');
      expectSw(await s.host.mutualAuth('AES192', Buffer.from(card.managementKey.key, 'hex')), '9000');
      s.state.dispose();
    });

    it('uses supplied secrets and refuses ones that break the policy', async () => {
      const user = { issuer: 'https://idp.example', subject: 'bob', tenant: 'acme' };
      const card = await createCard({
        storage,
        kek,
        user,
        profile,
        pin: '24681357',
        puk: '11223344',
        managementKey: CARD_MGMT_KEY,
      });
      assert.deepEqual(card.generated, { pin: false, puk: false, managementKey: false });
      const before = await counts();
      await assert.rejects(createCard({ storage, kek, user, profile, pin: '12345' }), configError('pin'));
      await assert.rejects(createCard({ storage, kek, user, profile, pin: '12ab56' }), configError('pin'));
      await assert.rejects(createCard({ storage, kek, user, profile, puk: '1234567' }), configError('puk'));
      await assert.rejects(
        createCard({ storage, kek, user, profile, managementKey: 'abcd' }),
        configError('managementKey'),
      );
      await assert.rejects(
        createCard({ storage, kek, user: { ...user, subject: '' }, profile }),
        configError('user.subject'),
      );
      assert.deepEqual(await counts(), before);
    });

    it('leaves no half-created card when creation fails', async () => {
      const existing = await createTestCard(storage, kek);
      const before = await counts();
      const user = {
        issuer: 'https://idp.example',
        subject: `new-${randomUUID()}`,
        tenant: `new-tenant-${randomUUID()}`,
      };
      // Fails inside the transaction, after tenant, user and card row: the serial is taken.
      await assert.rejects(
        createCard({ storage, kek, user, profile, serial: existing.serial }),
        configError('serial'),
      );
      assert.deepEqual(await counts(), before);
      // Fails while preparing: the key provider refuses the third wrap.
      let wraps = 0;
      const flaky = new Proxy(kek, {
        get(target, prop) {
          if (prop === 'wrap') {
            return (dataKey: Uint8Array, aad: Uint8Array) =>
              ++wraps === 3
                ? Promise.reject(new SealedKeyInvalidError('injected'))
                : target.wrap(dataKey, aad);
          }
          const v = Reflect.get(target, prop, target) as unknown;
          return typeof v === 'function' ? (v as () => unknown).bind(target) : v;
        },
      });
      await assert.rejects(createCard({ storage, kek: flaky, user, profile }), /injected/);
      assert.deepEqual(await counts(), before);
    });

    it('lists users and cards, and audits the listing', async () => {
      const tenant = `list-${randomUUID()}`;
      const a = await createTestCard(storage, kek, {}, { tenant, subject: 'carol' });
      await createTestCard(storage, kek, {}, { tenant, subject: 'carol' });
      await createTestCard(storage, kek, {}, { tenant, subject: 'dave' });
      const users = await listUsers({ storage, tenant, actor: 'admin:test' });
      assert.deepEqual(users.map((u) => [u.subject, u.cards]).sort(), [
        ['carol', 2],
        ['dave', 1],
      ]);
      const cards = await listCards({ storage, user: { issuer: 'https://idp.example', subject: 'carol' } });
      assert.equal(cards.length, 2);
      const first = cards.find((c) => c.id === a.cardId)!;
      assert.deepEqual(first.pinRetries, { remaining: 3, limit: 3 });
      assert.deepEqual(
        first.slots.map((s) => s.slot),
        [0x9a, 0x9c, 0x9d, 0x9e],
      );
      assert.equal((await listCards({ storage, tenant })).length, 3);
      const listed = await storage.db
        .selectFrom('audit_log')
        .select('event_type')
        .where('actor', '=', 'admin:test')
        .execute();
      assert.ok(listed.some((e) => e.event_type === 'admin.users-listed'));
    });

    it('unblocks a blocked PIN, taking the card from the session that holds it', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      for (const left of ['63C2', '63C1', '6983']) expectSw(await s.host.verifyPin(pinBytes('000000')), left);
      const { pin, generated } = await unblockCard({
        storage,
        kek,
        cardId: created.cardId,
        actor: 'admin:test',
      });
      assert.equal(generated, true);
      assert.match(pin, /^[0-9]{8}$/);
      assert.deepEqual(await referenceStatus(storage, created.cardId, 'pin'), { remaining: 3, limit: 3 });
      await assert.rejects(
        s.state.objects.put(0x5fc108, Uint8Array.of(0xbc, 0)),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_TAKEN_OVER',
      );
      const next = await openSession(storage, kek, created.cardId);
      expectSw(await next.host.verifyPin(pinBytes(CARD_PIN)), '63C2', 'the old PIN is gone');
      expectSw(await next.host.verifyPin(pinBytes(pin)), '9000');
      next.state.dispose();
      await unblockCard({ storage, kek, cardId: created.cardId, newPin: '13572468' });
      await assert.rejects(
        unblockCard({ storage, kek, cardId: created.cardId, newPin: '1234' }),
        configError('pin'),
      );
      await assert.rejects(
        unblockCard({ storage, kek, cardId: randomUUID() }),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_NOT_FOUND',
      );
      assert.equal((await auditOf(storage, created.cardId, 'pin.unblocked')).length, 2);
    });

    it('deletes a card with its sealed keys (crypto-shred), keeping the audit trail', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      await deleteCard({ storage, cardId: created.cardId, actor: 'admin:test' });
      for (const table of ['card_keys', 'card_objects', 'sessions', 'applied_commands'] as const) {
        const rows = await storage.db
          .selectFrom(table)
          .select('card_id')
          .where('card_id', '=', created.cardId)
          .execute();
        assert.equal(rows.length, 0, table);
      }
      assert.equal(
        (await storage.db.selectFrom('cards').select('id').where('id', '=', created.cardId).execute()).length,
        0,
      );
      const deleted = (await auditOf(storage, created.cardId, 'card.deleted'))[0]!;
      assert.equal(deleted.details.slotKeysDeleted, 4);
      assert.ok(
        (await auditOf(storage, created.cardId, 'card.created')).length === 1,
        'earlier entries stay',
      );
      await assert.rejects(
        s.state.objects.put(0x5fc108, Uint8Array.of(0xbc, 0)),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_NOT_FOUND' || e.code === 'ERR_CARD_TAKEN_OVER',
      );
      await assert.rejects(
        openPersistentCardState({
          storage,
          kek,
          cardId: created.cardId,
          sessionId: randomUUID(),
          epoch: 0,
          actor: 'x',
        }),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_NOT_FOUND',
      );
      await assert.rejects(
        deleteCard({ storage, cardId: created.cardId }),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_NOT_FOUND',
      );
    });

    it('rotates the KEK: keys rewrapped, the old version retired, cards still sign', async () => {
      const created = await createTestCard(storage, kek);
      const live = await openSession(storage, kek, created.cardId);
      expectSw(await live.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      const previous = kek.currentVersion;
      const rotation = await rotateKek({ storage, kek, actor: 'admin:test' });
      assert.equal(rotation.previousVersion, previous);
      assert.equal(rotation.currentVersion, previous + 1);
      assert.ok(rotation.rewrapped >= 5);
      assert.deepEqual(rotation.retired, [previous]);
      assert.ok(!kek.versions.includes(previous));
      const versions = await storage.db.selectFrom('card_keys').select('kek_version').distinct().execute();
      assert.deepEqual(
        versions.map((v) => v.kek_version),
        [rotation.currentVersion],
      );

      // The live session keeps working (keys cached or unsealed under the new wrap) ...
      const msg = Buffer.from('after rotation');
      expectSw(
        await live.host.privateKeyOp(ALGORITHM_IDS.RSA2048, 0x9a, 0x81, pkcs1v15Sha256Block(msg, 256)),
        '9000',
      );
      live.state.dispose();
      // ... and so does a new one, which unseals everything afresh.
      const fresh = await openSession(storage, kek, created.cardId);
      expectSw(await fresh.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      expectSw(
        await fresh.host.privateKeyOp(ALGORITHM_IDS.RSA2048, 0x9d, 0x81, pkcs1v15Sha256Block(msg, 256)),
        '9000',
      );
      expectSw(await fresh.host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
      fresh.state.dispose();
      assert.equal(
        (
          await storage.db
            .selectFrom('audit_log')
            .select('id')
            .where('event_type', '=', 'kek.rotated')
            .execute()
        ).length,
        1,
      );
    });

    it('queries the audit log with filters, verifies the chain and audits the query', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.verifyPin(pinBytes('000000')), '63C2');
      expectSw(await s.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      s.state.dispose();
      const all = await queryAudit({ storage, filter: { cardId: created.cardId }, actor: 'admin:test' });
      assert.deepEqual(
        all.entries.map((e) => e.eventType),
        ['card.created', 'pin.failed', 'pin.verified'],
      );
      assert.equal(all.chain?.ok, true);
      const failed = await queryAudit({
        storage,
        filter: { cardId: created.cardId, eventType: 'pin.failed' },
        verify: false,
      });
      assert.equal(failed.entries.length, 1);
      assert.equal(failed.chain, undefined);
      const latest = await queryAudit({ storage, limit: 1 });
      assert.equal(latest.entries[0]!.eventType, 'admin.audit-queried', 'the previous query was audited');
      assert.equal((await verifyChain(storage)).ok, true);
      await assert.rejects(queryAudit({ storage, limit: 0 }), configError('limit'));
    });
  });
}

function certTag(slot: number): number {
  return ({ 0x9a: 0x5fc105, 0x9c: 0x5fc10a, 0x9d: 0x5fc10b, 0x9e: 0x5fc101 } as Record<number, number>)[
    slot
  ]!;
}
