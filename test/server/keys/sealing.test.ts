import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { sql } from 'kysely';
import { rewrapSealed, sealSecret, unsealSecret, type KeyLocation } from '../../../server/keys/sealing.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { fenceCard, findCardKey, putCardKey, type Storage } from '../../../server/storage/index.js';
import {
  BACKENDS,
  claim,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  type Backend,
} from '../storage/backends.js';

function isInvalid(e: Error & { code?: string }): boolean {
  assert.equal(e.code, 'ERR_SEALED_KEY_INVALID');
  return true;
}

describe('sealing', () => {
  let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
  let provider: KekProvider;
  const here: KeyLocation = { tenantId: 'tenant-a', cardId: 'card-1', slot: 0x9a };
  const secret = Buffer.from('a PKCS#8 private key would be here');

  before(async () => {
    keys = await tempKeyFileProvider();
    provider = keys.provider;
  });
  after(() => keys.cleanup());

  it('round-trips, and records the KEK and key versions', async () => {
    const sealed = await sealSecret(provider, secret, here, 7);
    assert.equal(sealed.kekVersion, provider.currentVersion);
    assert.equal(sealed.keyVersion, 7);
    assert.equal(sealed.sealed[0], 1);
    assert.equal(sealed.sealed.indexOf(secret), -1);
    assert.deepEqual(await unsealSecret(provider, sealed, here), secret);
  });

  it('does not open for another tenant, card, slot or key version', async () => {
    const sealed = await sealSecret(provider, secret, here, 7);
    await assert.rejects(unsealSecret(provider, sealed, { ...here, tenantId: 'tenant-b' }), isInvalid);
    await assert.rejects(unsealSecret(provider, sealed, { ...here, cardId: 'card-2' }), isInvalid);
    await assert.rejects(unsealSecret(provider, sealed, { ...here, slot: 0x9c }), isInvalid);
    await assert.rejects(unsealSecret(provider, { ...sealed, keyVersion: 8 }, here), isInvalid);
  });

  it('does not open when the blob or the wrapped key is altered or swapped', async () => {
    const a = await sealSecret(provider, secret, here, 1);
    const b = await sealSecret(provider, Buffer.from('another secret'), here, 1);
    const flipped = Buffer.from(a.sealed);
    flipped[flipped.length - 20]! ^= 0x80;
    await assert.rejects(unsealSecret(provider, { ...a, sealed: flipped }, here), isInvalid);
    await assert.rejects(unsealSecret(provider, { ...a, wrappedDataKey: b.wrappedDataKey }, here), isInvalid);
    await assert.rejects(
      unsealSecret(provider, { ...a, sealed: Buffer.of(2, ...a.sealed.subarray(1)) }, here),
      isInvalid,
    );
  });

  it('rewraps only the data key: the sealed blob stays byte for byte', async () => {
    const sealed = await sealSecret(provider, secret, here, 3);
    await provider.rotate();
    const rewrapped = await rewrapSealed(provider, sealed, here);
    assert.equal(rewrapped.kekVersion, provider.currentVersion);
    assert.ok(rewrapped.sealed.equals(sealed.sealed));
    assert.ok(!rewrapped.wrappedDataKey.equals(sealed.wrappedDataKey));
    assert.deepEqual(await unsealSecret(provider, rewrapped, here), secret);
  });
});

for (const kind of BACKENDS) {
  describe(`sealed keys moved inside the ${kind} database`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    async function cardWithKey(
      tenantId?: string,
    ): Promise<{ cardId: string; tenantId: string; pkcs8: Buffer }> {
      const card = await createFixtureCard(storage, keys.provider, tenantId ? { tenantId } : {});
      const { epoch } = await claim(storage, card.id);
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
      const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
      await storage.transaction(async (tx) => {
        const fenced = await fenceCard(tx, { cardId: card.id, epoch });
        const key = await sealSecret(
          keys.provider,
          pkcs8,
          { tenantId: card.tenantId, cardId: card.id, slot: 0x9a },
          fenced.version,
        );
        await putCardKey(fenced, {
          slot: 0x9a,
          algorithm: 'ECCP256',
          publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }),
          key,
          pinPolicy: 'once',
          touchPolicy: 'never',
          origin: 'generated',
        });
      });
      return { cardId: card.id, tenantId: card.tenantId, pkcs8 };
    }

    it('a key row copied to another card (even one of the same tenant) or slot does not unseal there', async () => {
      const victim = await cardWithKey();
      const attacker = await cardWithKey(victim.tenantId);
      // Someone with write access to the database copies the victim's sealed key into their card.
      await sql`update card_keys set sealed_private_key = v.sealed_private_key, wrapped_data_key = v.wrapped_data_key,
          kek_version = v.kek_version, key_version = v.key_version
        from (select * from card_keys where card_id = ${victim.cardId} and slot = ${0x9a}) as v
        where card_keys.card_id = ${attacker.cardId} and card_keys.slot = ${0x9a}`.execute(storage.db);
      const moved = await findCardKey(storage, attacker.cardId, 0x9a);
      assert.ok(moved);
      await assert.rejects(
        unsealSecret(keys.provider, moved.key, {
          tenantId: attacker.tenantId,
          cardId: attacker.cardId,
          slot: 0x9a,
        }),
        isInvalid,
      );

      // Or into another slot of the same card.
      await sql`update card_keys set slot = ${0x9c} where card_id = ${victim.cardId} and slot = ${0x9a}`.execute(
        storage.db,
      );
      const reslotted = await findCardKey(storage, victim.cardId, 0x9c);
      assert.ok(reslotted);
      await assert.rejects(
        unsealSecret(keys.provider, reslotted.key, {
          tenantId: victim.tenantId,
          cardId: victim.cardId,
          slot: 0x9c,
        }),
        isInvalid,
      );
      // Where it belongs it still opens.
      assert.deepEqual(
        await unsealSecret(keys.provider, reslotted.key, {
          tenantId: victim.tenantId,
          cardId: victim.cardId,
          slot: 0x9a,
        }),
        victim.pkcs8,
      );
    });

    it('a key row of another tenant does not unseal under this one', async () => {
      const other = await cardWithKey(randomUUID());
      const row = await findCardKey(storage, other.cardId, 0x9a);
      assert.ok(row);
      await assert.rejects(
        unsealSecret(keys.provider, row.key, { tenantId: randomUUID(), cardId: other.cardId, slot: 0x9a }),
        isInvalid,
      );
    });
  });
}
