import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { openPkcs11Provider } from '../../../server/keys/pkcs11-provider.js';
import { rotateKek } from '../../../server/admin/kek-admin.js';
import {
  kekVersionsInUse,
  pinKeyVersionsInUse,
  retireKekVersion,
  retirePinKeyVersion,
  rewrapAll,
} from '../../../server/keys/rewrap.js';
import { sealSecret, unsealSecret } from '../../../server/keys/sealing.js';
import { checkPinVerifier, createPinVerifier } from '../../../server/keys/pin-verifier.js';
import { isRecentPin, pinRulesOf } from '../../../server/cards/pin-rules.js';
import {
  fenceCard,
  getManagementKey,
  listCardKeys,
  MANAGEMENT_KEY_SLOT,
  putCardKey,
  readPinRecord,
  recordPinReplaced,
  verifyReference,
  type CardRecord,
  type Storage,
} from '../../../server/storage/index.js';
import {
  BACKENDS,
  claim,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  TEST_MGMT_KEY,
  TEST_PIN,
  TEST_PUK,
  type Backend,
} from '../storage/backends.js';
import { createSoftHsmToken } from '../../support/softhsm.js';

const SLOTS = [0x9a, 0x9c, 0x9d];
const CARDS = 5;

interface Fixture {
  card: CardRecord;
  epoch: number;
  keys: Map<number, Buffer>;
}

async function populate(storage: Storage, provider: KekProvider): Promise<Fixture[]> {
  const out: Fixture[] = [];
  for (let i = 0; i < CARDS; i++) {
    const card = await createFixtureCard(storage, provider);
    const { epoch } = await claim(storage, card.id);
    const keys = new Map<number, Buffer>();
    await storage.transaction(async (tx) => {
      const fenced = await fenceCard(tx, { cardId: card.id, epoch });
      for (const slot of SLOTS) {
        const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
        const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
        keys.set(slot, pkcs8);
        await putCardKey(fenced, {
          slot,
          algorithm: 'ECCP256',
          publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }),
          key: await sealSecret(
            provider,
            pkcs8,
            { tenantId: card.tenantId, cardId: card.id, slot },
            fenced.version,
          ),
          pinPolicy: 'once',
          touchPolicy: 'never',
          origin: 'generated',
        });
      }
    });
    out.push({ card, epoch, keys });
  }
  return out;
}

/** Rotate, rewrap everything, retire the old version; every key still opens and none changed. */
async function rotationScenario(storage: Storage, provider: KekProvider): Promise<void> {
  const fixtures = await populate(storage, provider);
  const oldVersion = provider.currentVersion;
  const sealedBefore = new Map<string, Buffer>();
  for (const f of fixtures) {
    for (const k of await listCardKeys(storage, f.card.id))
      sealedBefore.set(`${f.card.id}/${k.slot}`, k.key.sealed);
  }
  const total = CARDS * (SLOTS.length + 1);
  assert.equal((await kekVersionsInUse(storage)).get(oldVersion), total);

  const newVersion = await provider.rotate();
  await assert.rejects(retireKekVersion(storage, provider, oldVersion), (e: Error & { code?: string }) => {
    assert.equal(e.code, 'ERR_KEY_PROVIDER');
    return true;
  });

  const result = await rewrapAll(storage, provider, { batchSize: 4 });
  assert.deepEqual(result, { rewrapped: total, skipped: 0 });
  assert.deepEqual([...(await kekVersionsInUse(storage)).entries()], [[newVersion, total]]);
  assert.deepEqual(await rewrapAll(storage, provider), { rewrapped: 0, skipped: 0 });

  await retireKekVersion(storage, provider, oldVersion);
  assert.deepEqual(provider.versions, [newVersion]);

  for (const f of fixtures) {
    for (const k of await listCardKeys(storage, f.card.id)) {
      assert.equal(k.key.kekVersion, newVersion);
      assert.ok(k.key.sealed.equals(sealedBefore.get(`${f.card.id}/${k.slot}`)!), 'sealed blob untouched');
      const opened = await unsealSecret(provider, k.key, {
        tenantId: f.card.tenantId,
        cardId: f.card.id,
        slot: k.slot,
      });
      assert.deepEqual(opened, f.keys.get(k.slot));
    }
    const mgmt = await getManagementKey(storage, f.card.id);
    assert.equal(mgmt.key.kekVersion, newVersion);
    const key = await unsealSecret(provider, mgmt.key, {
      tenantId: f.card.tenantId,
      cardId: f.card.id,
      slot: MANAGEMENT_KEY_SLOT,
    });
    assert.deepEqual(key, TEST_MGMT_KEY);
  }

  // PIN key rotation: verifiers move as PINs are verified; the old version retires after that.
  const oldPin = provider.pinKeyVersion;
  const newPin = await provider.rotatePinKey();
  assert.equal((await pinKeyVersionsInUse(storage)).get(oldPin), CARDS * 2);
  for (const f of fixtures) {
    const r = await verifyReference(storage, { cardId: f.card.id, epoch: f.epoch }, 'pin', (v) =>
      checkPinVerifier(provider, { cardId: f.card.id, kind: 'pin' }, v, TEST_PIN),
    );
    assert.equal(r.ok, true);
  }
  const inUse = await pinKeyVersionsInUse(storage);
  assert.equal(inUse.get(newPin), CARDS);
  assert.equal(inUse.get(oldPin), CARDS, 'PUK verifiers still use the old key');
  await assert.rejects(retirePinKeyVersion(storage, provider, oldPin));
}

async function replaceSlotKey(
  storage: Storage,
  provider: KekProvider,
  f: Fixture,
  slot: number,
): Promise<void> {
  await storage.transaction(async (tx) => {
    const fenced = await fenceCard(tx, { cardId: f.card.id, epoch: f.epoch });
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
    f.keys.set(slot, pkcs8);
    await putCardKey(fenced, {
      slot,
      algorithm: 'ECCP256',
      publicKeySpki: publicKey.export({ type: 'spki', format: 'der' }),
      key: await sealSecret(
        provider,
        pkcs8,
        { tenantId: f.card.tenantId, cardId: f.card.id, slot },
        fenced.version,
      ),
      pinPolicy: 'once',
      touchPolicy: 'never',
      origin: 'generated',
    });
  });
}

for (const kind of BACKENDS) {
  describe(`KEK rotation over the ${kind} database`, () => {
    let backend: Backend | undefined;
    after(() => backend?.cleanup());

    /** A fresh database per test: each provider has its own KEKs. */
    async function freshStorage(): Promise<Storage> {
      await backend?.cleanup();
      backend = await createBackend(kind);
      return backend.open();
    }

    it('with the key file provider', async () => {
      const storage = await freshStorage();
      const keys = await tempKeyFileProvider();
      try {
        await rotationScenario(storage, keys.provider);
      } finally {
        await keys.cleanup();
      }
    });

    it('with the PKCS#11 provider (SoftHSM2)', async () => {
      const storage = await freshStorage();
      const token = await createSoftHsmToken();
      const provider = await openPkcs11Provider({
        modulePath: token.modulePath,
        tokenLabel: token.tokenLabel,
        pin: token.pin,
      });
      try {
        await rotationScenario(storage, provider);
      } finally {
        await provider.close();
      }
    });

    it('keeps the PIN key versions the PIN history uses: after rotation it still refuses a reused PIN', async () => {
      const storage = await freshStorage();
      const keys = await tempKeyFileProvider();
      const provider = keys.provider;
      try {
        const card = await createFixtureCard(storage, provider);
        const { epoch } = await claim(storage, card.id);
        // Two PINs the card had before its current one, under the PIN key of today.
        const earlier = [Buffer.from('24681357'), Buffer.from('97531864')];
        for (const pin of earlier) {
          const verifier = await createPinVerifier(provider, { cardId: card.id, kind: 'pin' }, pin);
          await storage.transaction(async (tx) =>
            recordPinReplaced(await fenceCard(tx, { cardId: card.id, epoch }), verifier, 3),
          );
        }
        const oldPin = provider.pinKeyVersion;
        await rotateKek({ storage, kek: provider });
        const newPin = await provider.rotatePinKey();
        // The PIN and the PUK are presented: their verifiers move to the new PIN key.
        for (const [kind, value] of [
          ['pin', TEST_PIN],
          ['puk', TEST_PUK],
        ] as const) {
          const r = await verifyReference(storage, { cardId: card.id, epoch }, kind, (v) =>
            checkPinVerifier(provider, { cardId: card.id, kind }, v, value),
          );
          assert.equal(r.ok, true);
        }
        const inUse = await pinKeyVersionsInUse(storage, 1);
        assert.equal(inUse.get(newPin), 2);
        assert.equal(inUse.get(oldPin), 2, 'the history verifiers still use the old PIN key');
        await assert.rejects(retirePinKeyVersion(storage, provider, oldPin), { code: 'ERR_KEY_PROVIDER' });
        assert.deepEqual(provider.pinKeyVersions, [oldPin, newPin]);

        const rules = pinRulesOf({ pin: { history: 3 } });
        const record = await readPinRecord(storage, card.id, 24);
        const verifiers = [record.verifier, ...record.history];
        assert.equal(record.history.length, 2);
        for (const pin of [...earlier, TEST_PIN])
          assert.equal(await isRecentPin(provider, card.id, rules, verifiers, pin), true);
        assert.equal(await isRecentPin(provider, card.id, rules, verifiers, Buffer.from('86420975')), false);

        // A provider that lost the history's key fails the check: never a silent "not reused".
        await provider.retirePinKey(oldPin);
        await assert.rejects(isRecentPin(provider, card.id, rules, verifiers, Buffer.from('86420975')), {
          code: 'ERR_KEY_PROVIDER',
        });
      } finally {
        await keys.cleanup();
      }
    });

    it('leaves alone a key that a session replaces while the rewrap runs', async () => {
      const storage = await freshStorage();
      const keys = await tempKeyFileProvider();
      try {
        const fixtures = await populate(storage, keys.provider);
        const target = fixtures[0]!;
        await keys.provider.rotate();
        // Between the rewrap's read of the rows and its update, the card's session replaces
        // slot 9A (the first row the rewrap handles: lowest card id, lowest slot).
        const first = [...fixtures].sort((a, b) => (a.card.id < b.card.id ? -1 : 1))[0]!;
        let replaced = false;
        const racing: KekProvider = Object.create(keys.provider, {
          wrap: {
            value: async (dataKey: Uint8Array, aad: Uint8Array) => {
              const wrapped = await keys.provider.wrap(dataKey, aad);
              if (!replaced) {
                replaced = true;
                await replaceSlotKey(storage, keys.provider, first, 0x9a);
              }
              return wrapped;
            },
          },
        }) as KekProvider;
        const result = await rewrapAll(storage, racing, { batchSize: 50 });
        assert.equal(result.skipped, 1);
        assert.equal(result.rewrapped, CARDS * (SLOTS.length + 1) - 1);
        for (const f of [first, target]) {
          for (const k of await listCardKeys(storage, f.card.id)) {
            assert.equal(k.key.kekVersion, keys.provider.currentVersion);
            const opened = await unsealSecret(keys.provider, k.key, {
              tenantId: f.card.tenantId,
              cardId: f.card.id,
              slot: k.slot,
            });
            assert.deepEqual(opened, f.keys.get(k.slot), 'the replacement survives the rewrap');
          }
        }
      } finally {
        await keys.cleanup();
      }
    });
  });
}
