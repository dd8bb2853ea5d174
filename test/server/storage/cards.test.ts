import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import {
  approveDevice,
  deleteCard,
  deviceThumbprint,
  ensureUser,
  fenceCard,
  findCard,
  findCardKey,
  findDeviceByThumbprint,
  getCard,
  getCardObject,
  getManagementKey,
  listCardKeys,
  listCardObjectTags,
  listCardsOfUser,
  lockCardForAdmin,
  parseDatabaseUrl,
  putCardKey,
  putCardObject,
  registerDevice,
  setManagementKey,
  type CardClaimedEvent,
  type Storage,
} from '../../../server/storage/index.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../../../server/keys/sealing.js';
import {
  BACKENDS,
  claim,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  TEST_MGMT_KEY,
  type Backend,
} from './backends.js';

describe('database URLs', () => {
  it('parses sqlite paths and postgres URLs', () => {
    assert.deepEqual(parseDatabaseUrl('sqlite:/var/lib/cardlink/c.db'), {
      dialect: 'sqlite',
      path: '/var/lib/cardlink/c.db',
      memory: false,
    });
    assert.deepEqual(parseDatabaseUrl('sqlite:///abs.db'), {
      dialect: 'sqlite',
      path: '/abs.db',
      memory: false,
    });
    assert.equal(parseDatabaseUrl('sqlite::memory:').dialect, 'sqlite');
    assert.deepEqual(parseDatabaseUrl('postgres://u@h:5432/d'), {
      dialect: 'postgres',
      connectionString: 'postgres://u@h:5432/d',
    });
    assert.equal(parseDatabaseUrl('postgresql://h/d').dialect, 'postgres');
  });

  it('refuses other schemes without echoing the URL (it may hold a password)', () => {
    assert.throws(
      () => parseDatabaseUrl('mysql://root:hunter2@db/x'),
      (e: Error & { code?: string; context?: Record<string, unknown> }) => {
        assert.equal(e.code, 'ERR_CONFIG_INVALID');
        assert.doesNotMatch(e.message + JSON.stringify(e.context), /hunter2/);
        return true;
      },
    );
  });
});

function ecKey(): { pkcs8: Buffer; spki: Buffer; scalar: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return {
    pkcs8: privateKey.export({ type: 'pkcs8', format: 'der' }),
    spki: publicKey.export({ type: 'spki', format: 'der' }),
    scalar: Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url'),
  };
}

for (const kind of BACKENDS) {
  describe(`cards on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let provider: KekProvider;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      provider = keys.provider;
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    it('creates a card and reads it back', async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: 5, pukRetries: 4 });
      const read = await getCard(storage, card.id);
      assert.deepEqual(read, card);
      assert.deepEqual(read.pinRetries, { remaining: 5, limit: 5 });
      assert.deepEqual(read.pukRetries, { remaining: 4, limit: 4 });
      assert.deepEqual(read.profile, { slots: ['9a', '9c'] });
      assert.equal(read.guid.length, 16);
      assert.equal(read.version, 0);
      assert.deepEqual(
        (await listCardsOfUser(storage, card.userId)).map((c) => c.id),
        [card.id],
      );
      const mgmt = await getManagementKey(storage, card.id);
      assert.equal(mgmt.algorithm, 'AES256');
      const key = await unsealSecret(provider, mgmt.key, {
        tenantId: card.tenantId,
        cardId: card.id,
        slot: 0x9b,
      });
      assert.deepEqual(key, TEST_MGMT_KEY);
    });

    it('stores slot keys sealed, never in the clear', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      const { pkcs8, spki, scalar } = ecKey();
      await storage.transaction(async (tx) => {
        const fenced = await fenceCard(tx, { cardId: card.id, epoch });
        const sealed = await sealSecret(
          provider,
          pkcs8,
          { tenantId: fenced.tenantId, cardId: card.id, slot: 0x9a },
          fenced.version,
        );
        await putCardKey(fenced, {
          slot: 0x9a,
          algorithm: 'ECCP256',
          publicKeySpki: spki,
          key: sealed,
          pinPolicy: 'once',
          touchPolicy: 'never',
          origin: 'generated',
        });
      });
      const stored = await findCardKey(storage, card.id, 0x9a);
      assert.ok(stored);
      assert.deepEqual(stored.publicKeySpki, spki);
      const row = await storage.db
        .selectFrom('card_keys')
        .selectAll()
        .where('card_id', '=', card.id)
        .executeTakeFirstOrThrow();
      for (const value of Object.values(row)) {
        if (Buffer.isBuffer(value))
          assert.equal(value.indexOf(scalar), -1, 'the private scalar is in no column');
      }
      const opened = await unsealSecret(provider, stored.key, {
        tenantId: card.tenantId,
        cardId: card.id,
        slot: 0x9a,
      });
      assert.deepEqual(opened, pkcs8);
    });

    it('refuses a secret sealed with another key version than the fenced card version', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      const sealed = await sealSecret(
        provider,
        randomBytes(32),
        { tenantId: card.tenantId, cardId: card.id, slot: 0x9b },
        0,
      );
      await assert.rejects(
        storage.transaction(async (tx) =>
          setManagementKey(await fenceCard(tx, { cardId: card.id, epoch }), 'AES256', sealed),
        ),
        (e: Error & { code?: string }) => e.code === 'ERR_STORAGE',
      );
    });

    it('an admin write takes the card from its session', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      const events: CardClaimedEvent[] = [];
      const unsubscribe = await storage.onCardClaimed((e) => events.push(e));
      try {
        await storage.transaction(async (tx) =>
          putCardObject(await lockCardForAdmin(tx, card.id), 0x5fc105, Buffer.of(1, 2)),
        );
        await assert.rejects(
          storage.transaction(async (tx) =>
            putCardObject(await fenceCard(tx, { cardId: card.id, epoch }), 0x5fc105, Buffer.of(3)),
          ),
          (e: Error & { code?: string }) => e.code === 'ERR_CARD_TAKEN_OVER',
        );
        for (let i = 0; i < 100 && !events.some((e) => e.cardId === card.id); i++)
          await new Promise((r) => setTimeout(r, 10));
        assert.ok(events.some((e) => e.cardId === card.id && e.epoch === epoch + 1));
      } finally {
        await unsubscribe();
      }
    });

    it('data objects: put, replace, delete with an empty value', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      const put = (tag: number, value: Buffer): Promise<void> =>
        storage.transaction(async (tx) =>
          putCardObject(await fenceCard(tx, { cardId: card.id, epoch }), tag, value),
        );
      await put(0x5fc102, Buffer.of(1));
      await put(0x5fc105, Buffer.of(2));
      await put(0x5fc102, Buffer.of(3));
      assert.deepEqual(await listCardObjectTags(storage, card.id), [0x5fc102, 0x5fc105]);
      assert.deepEqual(await getCardObject(storage, card.id, 0x5fc102), Buffer.of(3));
      await put(0x5fc105, Buffer.alloc(0));
      assert.deepEqual(await listCardObjectTags(storage, card.id), [0x5fc102]);
      assert.equal((await getCard(storage, card.id)).version, 4);
    });

    it('deleting a card removes its sealed keys and wrapped data keys (crypto-shred) in one go', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      await storage.transaction(async (tx) => {
        const fenced = await fenceCard(tx, { cardId: card.id, epoch });
        for (const slot of [0x9a, 0x9c]) {
          const { pkcs8, spki } = ecKey();
          const key = await sealSecret(
            provider,
            pkcs8,
            { tenantId: card.tenantId, cardId: card.id, slot },
            fenced.version,
          );
          await putCardKey(fenced, {
            slot,
            algorithm: 'ECCP256',
            publicKeySpki: spki,
            key,
            pinPolicy: 'once',
            touchPolicy: 'never',
            origin: 'generated',
          });
        }
        await putCardObject(fenced, 0x5fc102, Buffer.of(1));
      });
      assert.equal((await listCardKeys(storage, card.id)).length, 2);
      assert.equal(await storage.transaction((tx) => deleteCard(tx, card.id)), true);
      assert.equal(await findCard(storage, card.id), undefined);
      assert.equal(
        (await storage.db.selectFrom('card_keys').select('slot').where('card_id', '=', card.id).execute())
          .length,
        0,
      );
      assert.equal(
        (await storage.db.selectFrom('card_objects').select('tag').where('card_id', '=', card.id).execute())
          .length,
        0,
      );
      assert.equal(
        (await storage.db.selectFrom('sessions').select('id').where('card_id', '=', card.id).execute())
          .length,
        0,
      );
      await assert.rejects(
        storage.transaction(async (tx) => fenceCard(tx, { cardId: card.id, epoch })),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_NOT_FOUND',
      );
      assert.equal(await storage.transaction((tx) => deleteCard(tx, card.id)), false);
    });

    it('users and devices: one user per (issuer, subject); devices start pending', async () => {
      const card = await createFixtureCard(storage, provider);
      const again = await storage.transaction(async (tx) => {
        const u1 = await ensureUser(tx, card.tenantId, 'https://idp.example', 'alice');
        const u2 = await ensureUser(tx, card.tenantId, 'https://idp.example', 'alice');
        return [u1, u2];
      });
      assert.equal(again[0]!.id, again[1]!.id);
      await assert.rejects(
        storage.transaction((tx) => ensureUser(tx, randomUUID(), 'https://idp.example', 'alice')),
        (e: Error & { code?: string }) => e.code === 'ERR_STORAGE',
      );
      const { spki } = ecKey();
      const device = await storage.transaction((tx) =>
        registerDevice(tx, { userId: again[0]!.id, publicKeySpki: spki, name: 'laptop' }),
      );
      assert.equal(device.status, 'pending');
      assert.equal(device.thumbprint, deviceThumbprint(spki));
      const approved = await storage.transaction((tx) => approveDevice(tx, device.id));
      assert.equal(approved?.status, 'approved');
      assert.equal((await findDeviceByThumbprint(storage, device.thumbprint))?.id, device.id);
    });
  });
}
