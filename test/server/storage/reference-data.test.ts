import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  fenceCard,
  getCard,
  referenceStatus,
  setReference,
  verifyReference,
  type CardFence,
  type Storage,
} from '../../../server/storage/index.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  checkPinVerifier,
  createPinVerifier,
  pinVerifierKeyVersion,
} from '../../../server/keys/pin-verifier.js';
import {
  BACKENDS,
  claim,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  TEST_PIN,
  TEST_PUK,
  type Backend,
} from './backends.js';

/** Wrong PINs sent at once; the PIN's retry limit equals it, so every try must count. */
const CONCURRENT_TRIES = 50;

for (const kind of BACKENDS) {
  describe(`PIN and PUK verification on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let provider: KekProvider;

    before(async () => {
      backend = await createBackend(kind);
      // PostgreSQL: a pool wide enough that the tries really run in parallel connections.
      storage = await backend.open({ poolSize: 20 });
      keys = await tempKeyFileProvider();
      provider = keys.provider;
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    const compareWith = (cardId: string, kind: 'pin' | 'puk', candidate: Uint8Array) => (verifier: Buffer) =>
      checkPinVerifier(provider, { cardId, kind }, verifier, candidate);

    it(`counts each of ${CONCURRENT_TRIES} concurrent wrong PINs exactly once, down to blocked`, async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: CONCURRENT_TRIES });
      const { epoch } = await claim(storage, card.id);
      const fence: CardFence = { cardId: card.id, epoch };
      const wrong = Buffer.from('999999\xff\xff', 'latin1');
      const results = await Promise.all(
        Array.from({ length: CONCURRENT_TRIES }, () =>
          verifyReference(storage, fence, 'pin', compareWith(card.id, 'pin', wrong)),
        ),
      );
      assert.ok(results.every((r) => !r.ok));
      // Each try saw its own counter value: 49, 48, ..., 0 in some order.
      const seen = results.map((r) => r.remaining).sort((a, b) => a - b);
      assert.deepEqual(
        seen,
        Array.from({ length: CONCURRENT_TRIES }, (_, i) => i),
      );
      assert.deepEqual(await referenceStatus(storage, card.id, 'pin'), {
        remaining: 0,
        limit: CONCURRENT_TRIES,
      });

      // Blocked: even the right PIN fails, and nothing is compared.
      let compared = false;
      const blocked = await verifyReference(storage, fence, 'pin', async (v) => {
        compared = true;
        return compareWith(card.id, 'pin', TEST_PIN)(v);
      });
      assert.deepEqual(blocked, { ok: false, remaining: 0 });
      assert.equal(compared, false);
    });

    it('restores the counter on the right PIN and keeps it down on a wrong one', async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: 3 });
      const { epoch } = await claim(storage, card.id);
      const fence = { cardId: card.id, epoch };
      const wrong = await verifyReference(
        storage,
        fence,
        'pin',
        compareWith(card.id, 'pin', Buffer.from('000000')),
      );
      assert.deepEqual(wrong, { ok: false, remaining: 2 });
      const right = await verifyReference(storage, fence, 'pin', compareWith(card.id, 'pin', TEST_PIN));
      assert.deepEqual(right, { ok: true, remaining: 3 });
      assert.deepEqual(await referenceStatus(storage, card.id, 'pin'), { remaining: 3, limit: 3 });
    });

    it('keeps the try counted when the comparison fails midway', async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: 3 });
      const { epoch } = await claim(storage, card.id);
      await assert.rejects(
        verifyReference(storage, { cardId: card.id, epoch }, 'pin', () =>
          Promise.reject(new Error('HSM down')),
        ),
        /HSM down/,
      );
      assert.equal((await referenceStatus(storage, card.id, 'pin')).remaining, 2);
    });

    it('refuses a stale session without consuming a try', async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: 3 });
      const old = await claim(storage, card.id);
      await claim(storage, card.id);
      await assert.rejects(
        verifyReference(
          storage,
          { cardId: card.id, epoch: old.epoch },
          'pin',
          compareWith(card.id, 'pin', TEST_PIN),
        ),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_TAKEN_OVER',
      );
      assert.equal((await referenceStatus(storage, card.id, 'pin')).remaining, 3);
    });

    it('unblocks the PIN with the PUK (RESET RETRY COUNTER)', async () => {
      const card = await createFixtureCard(storage, provider, { pinRetries: 2 });
      const { epoch } = await claim(storage, card.id);
      const fence = { cardId: card.id, epoch };
      for (let i = 0; i < 2; i++) {
        await verifyReference(storage, fence, 'pin', compareWith(card.id, 'pin', Buffer.from('000000')));
      }
      assert.equal((await referenceStatus(storage, card.id, 'pin')).remaining, 0);
      const puk = await verifyReference(storage, fence, 'puk', compareWith(card.id, 'puk', TEST_PUK));
      assert.equal(puk.ok, true);
      const newPin = Buffer.from('24681357', 'latin1');
      const verifier = await createPinVerifier(provider, { cardId: card.id, kind: 'pin' }, newPin);
      await storage.transaction(async (tx) => setReference(await fenceCard(tx, fence), 'pin', verifier));
      assert.deepEqual(await referenceStatus(storage, card.id, 'pin'), { remaining: 2, limit: 2 });
      const ok = await verifyReference(storage, fence, 'pin', compareWith(card.id, 'pin', newPin));
      assert.equal(ok.ok, true);
      const old = await verifyReference(storage, fence, 'pin', compareWith(card.id, 'pin', TEST_PIN));
      assert.equal(old.ok, false);
    });

    it('moves a verifier to the current PIN key when the PIN is verified', async () => {
      const card = await createFixtureCard(storage, provider);
      const { epoch } = await claim(storage, card.id);
      const before = await storage.db
        .selectFrom('cards')
        .select('pin_verifier')
        .where('id', '=', card.id)
        .executeTakeFirstOrThrow();
      const oldVersion = pinVerifierKeyVersion(before.pin_verifier);
      const newVersion = await provider.rotatePinKey();
      assert.ok(newVersion > oldVersion);
      const result = await verifyReference(
        storage,
        { cardId: card.id, epoch },
        'pin',
        compareWith(card.id, 'pin', TEST_PIN),
      );
      assert.equal(result.ok, true);
      const afterRow = await storage.db
        .selectFrom('cards')
        .select('pin_verifier')
        .where('id', '=', card.id)
        .executeTakeFirstOrThrow();
      assert.equal(pinVerifierKeyVersion(afterRow.pin_verifier), newVersion);
      const again = await verifyReference(
        storage,
        { cardId: card.id, epoch },
        'pin',
        compareWith(card.id, 'pin', TEST_PIN),
      );
      assert.equal(again.ok, true);
      assert.equal((await getCard(storage, card.id)).pinRetries.remaining, 3);
    });
  });
}
