import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
  claimCard,
  fenceCard,
  findRecorded,
  getCard,
  getCardObject,
  acknowledgeCommands,
  lockCardForChange,
  reclaimCard,
  endSession,
  putCardObject,
  recordCommand,
  type CardClaimedEvent,
  type Storage,
} from '../../../server/storage/index.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  BACKENDS,
  claim,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  type Backend,
} from './backends.js';

const CHUID = 0x5fc102;

function isTakenOver(e: Error & { code?: string }): boolean {
  return e.code === 'ERR_CARD_TAKEN_OVER';
}

/** Resolves with the first claim event for `cardId` (or rejects after `ms`). */
function nextClaim(events: CardClaimedEvent[], cardId: string, ms = 2_000): Promise<CardClaimedEvent> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const poll = (): void => {
      const hit = events.find((e) => e.cardId === cardId);
      if (hit) resolve(hit);
      else if (Date.now() - started > ms) reject(new Error('no claim event'));
      else setTimeout(poll, 5);
    };
    poll();
  });
}

for (const kind of BACKENDS) {
  describe(`card sessions on ${kind}`, () => {
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

    it('each claim bumps the epoch; the older session is fenced off', async () => {
      const card = await createFixtureCard(storage, provider);
      const a = await claim(storage, card.id);
      const b = await claim(storage, card.id);
      assert.equal(b.epoch, a.epoch + 1);
      assert.equal((await getCard(storage, card.id)).sessionId, b.sessionId);

      await assert.rejects(
        storage.transaction(async (tx) =>
          putCardObject(await fenceCard(tx, { cardId: card.id, epoch: a.epoch }), CHUID, Buffer.of(1)),
        ),
        isTakenOver,
      );
      assert.equal(await getCardObject(storage, card.id, CHUID), undefined);
      await storage.transaction(async (tx) =>
        putCardObject(await fenceCard(tx, { cardId: card.id, epoch: b.epoch }), CHUID, Buffer.of(2)),
      );
      assert.deepEqual(await getCardObject(storage, card.id, CHUID), Buffer.of(2));
    });

    it('announces a claim to listeners, only once it commits', async () => {
      const card = await createFixtureCard(storage, provider);
      const events: CardClaimedEvent[] = [];
      const unsubscribe = await storage.onCardClaimed((e) => events.push(e));
      try {
        await assert.rejects(
          storage.transaction(async (tx) => {
            await claimCard(tx, { cardId: card.id, sessionId: randomUUID() });
            throw new Error('login failed after the claim');
          }),
        );
        await new Promise((r) => setTimeout(r, 50));
        assert.equal(events.filter((e) => e.cardId === card.id).length, 0);
        assert.equal((await getCard(storage, card.id)).sessionEpoch, 0);

        const { epoch } = await claim(storage, card.id);
        assert.deepEqual(await nextClaim(events, card.id), { cardId: card.id, epoch });
      } finally {
        await unsubscribe();
      }
    });

    it('records a command with its state change, exactly once', async () => {
      const card = await createFixtureCard(storage, provider);
      const { sessionId, epoch } = await claim(storage, card.id);
      const fence = { cardId: card.id, epoch };
      const response = Buffer.from('9000', 'hex');

      // A command whose transaction fails leaves neither state nor record.
      await assert.rejects(
        storage.transaction(async (tx) => {
          const fenced = await fenceCard(tx, fence);
          await putCardObject(fenced, CHUID, Buffer.of(7));
          await recordCommand(fenced, sessionId, 1, response);
          throw new Error('crash before commit');
        }),
      );
      assert.equal(await findRecorded(storage, sessionId, 1), undefined);
      assert.equal(await getCardObject(storage, card.id, CHUID), undefined);

      await storage.transaction(async (tx) => {
        const fenced = await fenceCard(tx, fence);
        await putCardObject(fenced, CHUID, Buffer.of(7));
        await recordCommand(fenced, sessionId, 1, response);
      });
      assert.deepEqual(await findRecorded(storage, sessionId, 1), response);

      // Applying seq 1 again is refused and rolls back its state change.
      await assert.rejects(
        storage.transaction(async (tx) => {
          const fenced = await fenceCard(tx, fence);
          await putCardObject(fenced, CHUID, Buffer.of(8));
          await recordCommand(fenced, sessionId, 1, response);
        }),
        (e: Error & { code?: string }) => e.code === 'ERR_COMMAND_ALREADY_RECORDED',
      );
      assert.deepEqual(await getCardObject(storage, card.id, CHUID), Buffer.of(7));

      assert.equal(await storage.transaction((tx) => acknowledgeCommands(tx, sessionId, 1)), 1);
      assert.equal(await findRecorded(storage, sessionId, 1), undefined);
      await storage.transaction((tx) => endSession(tx, sessionId));
    });
  });
}

describe('fencing across two PostgreSQL connections (two server nodes)', () => {
  let backend: Backend;
  let nodeA: Storage;
  let nodeB: Storage;
  let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;

  before(async () => {
    backend = await createBackend('postgres');
    nodeA = await backend.open({ poolSize: 2 });
    nodeB = await backend.open({ poolSize: 2 });
    keys = await tempKeyFileProvider();
  });
  after(async () => {
    await backend.cleanup();
    await keys.cleanup();
  });

  it('node B takes the card over: node A is notified and its next write is refused', async () => {
    const card = await createFixtureCard(nodeA, keys.provider);
    const a = await claim(nodeA, card.id);
    const seenByA: CardClaimedEvent[] = [];
    const unsubscribe = await nodeA.onCardClaimed((e) => seenByA.push(e));
    try {
      const b = await claim(nodeB, card.id);
      const event = await nextClaim(seenByA, card.id);
      assert.deepEqual(event, { cardId: card.id, epoch: b.epoch });
      assert.ok(event.epoch > a.epoch, 'A learns its epoch is stale');
      await assert.rejects(
        nodeA.transaction(async (tx) =>
          putCardObject(await fenceCard(tx, { cardId: card.id, epoch: a.epoch }), CHUID, Buffer.of(1)),
        ),
        isTakenOver,
      );
    } finally {
      await unsubscribe();
    }
  });

  it("an administrator's change on node B: node A hears `changed`, keeps the claim, and writes again after reclaiming", async () => {
    const card = await createFixtureCard(nodeA, keys.provider);
    const a = await claim(nodeA, card.id);
    const seenByA: CardClaimedEvent[] = [];
    const unsubscribe = await nodeA.onCardClaimed((e) => seenByA.push(e));
    try {
      const changed = await nodeB.transaction(async (tx) => {
        const f = await lockCardForChange(tx, card.id);
        await putCardObject(f, CHUID, Buffer.of(0xbb));
        return (await getCard(tx, card.id)).sessionEpoch;
      });
      const event = await nextClaim(seenByA, card.id);
      assert.deepEqual(event, { cardId: card.id, epoch: changed, changed: true });
      assert.equal((await getCard(nodeA, card.id)).sessionId, a.sessionId, 'the claim stays');
      // A write begun on the old view is refused...
      await assert.rejects(
        nodeA.transaction(async (tx) =>
          putCardObject(await fenceCard(tx, { cardId: card.id, epoch: a.epoch }), CHUID, Buffer.of(1)),
        ),
        isTakenOver,
      );
      // ...and after reclaiming, the same claim writes under its new epoch.
      const epoch = await nodeA.transaction((tx) => reclaimCard(tx, card.id, a.sessionId));
      assert.equal(epoch, changed + 1);
      await nodeA.transaction(async (tx) =>
        putCardObject(await fenceCard(tx, { cardId: card.id, epoch: epoch! }), CHUID, Buffer.of(2)),
      );
      assert.deepEqual([...(await getCardObject(nodeA, card.id, CHUID))!], [2]);
      // Once another device has claimed the card, reclaiming fails: that is a takeover.
      await claim(nodeB, card.id);
      assert.equal(await nodeA.transaction((tx) => reclaimCard(tx, card.id, a.sessionId)), undefined);
      assert.equal(seenByA.filter((e) => e.changed).length, 1, 'reclaiming announces nothing');
    } finally {
      await unsubscribe();
    }
  });

  it('a claim waits for an in-flight fenced write, and the write never lands after it', async () => {
    const card = await createFixtureCard(nodeA, keys.provider);
    const a = await claim(nodeA, card.id);
    let releaseA!: () => void;
    const aHolds = new Promise<void>((r) => (releaseA = r));
    let aFenced!: () => void;
    const fenced = new Promise<void>((r) => (aFenced = r));

    const writeA = nodeA.transaction(async (tx) => {
      const f = await fenceCard(tx, { cardId: card.id, epoch: a.epoch });
      aFenced();
      await aHolds; // A's transaction keeps the card row locked
      await putCardObject(f, CHUID, Buffer.of(0xaa));
    });
    await fenced;
    let bDone = false;
    const claimB = claim(nodeB, card.id).then((r) => {
      bDone = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(bDone, false, "B's claim waits for A's transaction");
    releaseA();
    await writeA;
    const b = await claimB;
    assert.equal(b.epoch, a.epoch + 1);
    assert.deepEqual(await getCardObject(nodeB, card.id, CHUID), Buffer.of(0xaa));
    await assert.rejects(
      nodeA.transaction(async (tx) =>
        putCardObject(await fenceCard(tx, { cardId: card.id, epoch: a.epoch }), CHUID, Buffer.of(0xbb)),
      ),
      isTakenOver,
    );
    assert.deepEqual(await getCardObject(nodeB, card.id, CHUID), Buffer.of(0xaa));
  });
});
