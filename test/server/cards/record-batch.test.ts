/**
 * Group commit of private-key operation records (server/cards/record-batch.ts), on SQLite and on
 * PostgreSQL: one transaction for what is submitted together, each submission fenced and refused
 * on its own, the audit chain intact.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { verifyChain } from '../../../server/audit/audit-log.js';
import { recordBatcher } from '../../../server/cards/record-batch.js';
import { claimCard, findRecorded, type CardFence, type Storage } from '../../../server/storage/index.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  BACKENDS,
  createBackend,
  createFixtureCard,
  tempKeyFileProvider,
  type Backend,
} from '../storage/backends.js';

function signed(fence: CardFence, sessionId: string, seq: number) {
  return {
    fence,
    audits: [
      {
        actor: `device:${sessionId}`,
        eventType: 'key.used',
        cardId: fence.cardId,
        details: { slot: '0x9e', operation: 'sign', seq },
      },
    ],
    record: { sessionId, seq, response: Buffer.from([seq & 0xff, 0x90, 0x00]) },
  };
}

async function auditCount(storage: Storage, cardId: string): Promise<number> {
  const rows = await storage.db.selectFrom('audit_log').select('id').where('card_id', '=', cardId).execute();
  return rows.length;
}

for (const kind of BACKENDS) {
  describe(`record batch (${kind})`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: { provider: KekProvider; cleanup(): Promise<void> };
    const cards: { fence: CardFence; sessionId: string }[] = [];

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      for (let i = 0; i < 4; i++) {
        const card = await createFixtureCard(storage, keys.provider);
        const sessionId = randomUUID();
        const epoch = await storage.transaction((tx) => claimCard(tx, { cardId: card.id, sessionId }));
        cards.push({ fence: { cardId: card.id, epoch }, sessionId });
      }
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    it('commits what is submitted in one turn in one transaction, and each record is there', async () => {
      const batcher = recordBatcher(storage);
      const before = batcher.batches;
      const entries = await Promise.all(cards.map((c) => auditCount(storage, c.fence.cardId)));
      await Promise.all(cards.map((c) => batcher.submit(signed(c.fence, c.sessionId, 1))));
      assert.equal(batcher.batches, before + 1, 'four submissions, one transaction');
      for (const [i, c] of cards.entries()) {
        assert.deepEqual(await findRecorded(storage, c.sessionId, 1), Buffer.from([1, 0x90, 0x00]));
        assert.equal(await auditCount(storage, c.fence.cardId), entries[i]! + 1);
      }
      const chain = await verifyChain(storage);
      assert.equal(chain.ok, true);
    });

    it('refuses a taken-over session alone: its entry and record are not written, the others are', async () => {
      const [victim, ...others] = cards as [(typeof cards)[number], ...typeof cards];
      // Another session claims the victim's card: the victim's fence is stale now.
      await storage.transaction((tx) =>
        claimCard(tx, { cardId: victim.fence.cardId, sessionId: randomUUID() }),
      );
      const entriesBefore = await auditCount(storage, victim.fence.cardId);
      const batcher = recordBatcher(storage);
      const outcomes = await Promise.allSettled([
        batcher.submit(signed(victim.fence, victim.sessionId, 2)),
        ...others.map((c) => batcher.submit(signed(c.fence, c.sessionId, 2))),
      ]);
      assert.equal(outcomes[0]!.status, 'rejected');
      assert.equal((outcomes[0] as PromiseRejectedResult).reason.code, 'ERR_CARD_TAKEN_OVER');
      assert.ok(outcomes.slice(1).every((o) => o.status === 'fulfilled'));
      assert.equal(await findRecorded(storage, victim.sessionId, 2), undefined);
      assert.equal(await auditCount(storage, victim.fence.cardId), entriesBefore);
      for (const c of others) assert.ok(await findRecorded(storage, c.sessionId, 2));
      assert.equal((await verifyChain(storage)).ok, true);
    });

    it('refuses a sequence recorded before (and the second of two in one batch), keeping the first answer', async () => {
      const c = cards[1]!;
      const batcher = recordBatcher(storage);
      const entriesBefore = await auditCount(storage, c.fence.cardId);
      const outcomes = await Promise.allSettled([
        batcher.submit({
          ...signed(c.fence, c.sessionId, 2),
          record: { sessionId: c.sessionId, seq: 2, response: Buffer.from([0x6f, 0x00]) },
        }),
        batcher.submit(signed(c.fence, c.sessionId, 3)),
        batcher.submit(signed(c.fence, c.sessionId, 3)),
      ]);
      assert.deepEqual(
        outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { code: string }).code : 'ok')),
        ['ERR_COMMAND_ALREADY_RECORDED', 'ok', 'ERR_COMMAND_ALREADY_RECORDED'],
      );
      assert.deepEqual(await findRecorded(storage, c.sessionId, 2), Buffer.from([2, 0x90, 0x00]));
      assert.equal(await auditCount(storage, c.fence.cardId), entriesBefore + 1, 'only seq 3 left an entry');
      assert.equal((await verifyChain(storage)).ok, true);
    });

    it('refuses an entry with a secret at submission, before it could fail the batch', async () => {
      const c = cards[2]!;
      const batcher = recordBatcher(storage);
      const bad = signed(c.fence, c.sessionId, 10);
      assert.throws(
        () => batcher.submit({ ...bad, audits: [{ ...bad.audits[0]!, details: { pin: '123456' } }] }),
        /must not carry secrets/,
      );
      await batcher.submit(signed(c.fence, c.sessionId, 11));
      assert.equal(await findRecorded(storage, c.sessionId, 10), undefined);
      assert.ok(await findRecorded(storage, c.sessionId, 11));
    });

    it('rejects every submission of a transaction that fails, and writes none of them', async () => {
      // A closed storage of its own (SQLite's connection is exclusive): no transaction can begin.
      const elsewhere = await createBackend(kind);
      const other = await elsewhere.open();
      await other.close();
      const c = cards[3]!;
      const batcher = recordBatcher(other);
      const outcomes = await Promise.allSettled([
        batcher.submit(signed(c.fence, c.sessionId, 20)),
        batcher.submit(signed(c.fence, c.sessionId, 21)),
      ]);
      assert.ok(outcomes.every((o) => o.status === 'rejected'));
      assert.equal(await findRecorded(storage, c.sessionId, 20), undefined);
      assert.equal(await findRecorded(storage, c.sessionId, 21), undefined);
      await elsewhere.cleanup().catch(() => undefined); // closing twice may throw
    });
  });
}
