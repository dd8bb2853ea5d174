import { after, before, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import { sql } from 'kysely';
import {
  appendAudit,
  AUDIT_EVENTS,
  auditChainHead,
  entryHash,
  exportJsonLines,
  privateKeyOperationDetails,
  verifyChain,
  type AuditEntry,
} from '../../../server/audit/index.js';
import { AUDIT_GENESIS_HASH, type Storage } from '../../../server/storage/index.js';
import { BACKENDS, createBackend, type Backend } from '../storage/backends.js';

async function appendMany(storage: Storage, n: number, cardId = 'card-1'): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for (let i = 0; i < n; i++) {
    out.push(
      await storage.transaction((tx) =>
        appendAudit(tx, {
          actor: 'user:alice',
          eventType: i % 2 ? AUDIT_EVENTS.keyUsed : AUDIT_EVENTS.pinVerified,
          cardId,
          details: { n: i, nested: { b: 2, a: 1 } },
        }),
      ),
    );
  }
  return out;
}

async function collect(storage: Storage, filter = {}): Promise<AuditEntry[]> {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  const count = await exportJsonLines(storage, stream, filter);
  stream.end();
  const lines = Buffer.concat(chunks).toString('utf8').split('\n').filter(Boolean);
  assert.equal(lines.length, count);
  return lines.map((l) => JSON.parse(l) as AuditEntry);
}

describe('audit details', () => {
  it('carry only the digest of a private-key operation input', () => {
    const input = Buffer.from('to be signed');
    const details = privateKeyOperationDetails(0x9c, 'ECCP256', input);
    assert.deepEqual(details, {
      slot: '0x9c',
      algorithm: 'ECCP256',
      inputSha256: createHash('sha256').update(input).digest('hex'),
      inputLength: input.length,
    });
  });

  it('hash deterministically from the previous hash and the canonical entry', () => {
    const entry = {
      id: 1,
      time: '2026-01-01T00:00:00.000Z',
      actor: 'system',
      eventType: 'x',
      cardId: null,
      details: '{}',
    };
    const h = entryHash(Buffer.alloc(32), entry);
    assert.deepEqual(h, entryHash(Buffer.alloc(32), { ...entry }));
    assert.notDeepEqual(h, entryHash(Buffer.alloc(32, 1), entry));
    assert.notDeepEqual(h, entryHash(Buffer.alloc(32), { ...entry, actor: 'system ' }));
  });
});

for (const kind of BACKENDS) {
  describe(`audit log on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open({ poolSize: 12 });
    });
    beforeEach(async () => {
      // A fresh, empty chain per test (as the migration leaves it).
      await storage.transaction(async (tx) => {
        await tx.db.deleteFrom('audit_log').execute();
        await tx.db
          .updateTable('audit_chain_head')
          .set({ last_id: 0, last_hash: AUDIT_GENESIS_HASH })
          .execute();
      });
    });
    after(() => backend.cleanup());

    it('chains entries and verifies an intact chain', async () => {
      const entries = await appendMany(storage, 5);
      assert.deepEqual(
        entries.map((e) => e.id),
        [1, 2, 3, 4, 5],
      );
      assert.equal(entries[0]!.prevHash, '00'.repeat(32));
      for (let i = 1; i < entries.length; i++) assert.equal(entries[i]!.prevHash, entries[i - 1]!.hash);
      const result = await verifyChain(storage, { batchSize: 2 });
      assert.deepEqual(result, { ok: true, count: 5, headHash: entries[4]!.hash });
      assert.deepEqual(await auditChainHead(storage), { lastId: 5, lastHash: entries[4]!.hash });
    });

    it('appends inside the caller transaction: a rollback leaves no entry and no gap', async () => {
      await appendMany(storage, 2);
      await assert.rejects(
        storage.transaction(async (tx) => {
          await appendAudit(tx, { actor: 'system', eventType: 'x' });
          throw new Error('the state change failed');
        }),
      );
      const [third] = await appendMany(storage, 1);
      assert.equal(third!.id, 3);
      assert.equal((await verifyChain(storage)).ok, true);
    });

    it('never forks under concurrent appends', async () => {
      await Promise.all(
        Array.from({ length: 40 }, (_, i) =>
          storage.transaction((tx) =>
            appendAudit(tx, { actor: `user:${i}`, eventType: AUDIT_EVENTS.keyUsed, cardId: `c${i % 3}` }),
          ),
        ),
      );
      assert.deepEqual(await verifyChain(storage), {
        ok: true,
        count: 40,
        headHash: (await auditChainHead(storage)).lastHash,
      });
    });

    it('reports the first modified entry', async () => {
      await appendMany(storage, 6);
      await sql`update audit_log set details = ${'{"n":99}'} where id = 4`.execute(storage.db);
      assert.deepEqual(await verifyChain(storage), {
        ok: false,
        firstBadId: 4,
        reason: 'hash-mismatch',
        count: 3,
      });
    });

    it('reports a modification even when the row hash is recomputed (the next link breaks)', async () => {
      const entries = await appendMany(storage, 6);
      const forged = {
        id: 3,
        time: entries[2]!.time,
        actor: 'user:mallory',
        eventType: entries[2]!.eventType,
        cardId: 'card-1',
        details: '{}',
      };
      const hash = entryHash(Buffer.from(entries[1]!.hash, 'hex'), forged);
      await sql`update audit_log set actor = ${'user:mallory'}, details = ${'{}'}, hash = ${hash} where id = 3`.execute(
        storage.db,
      );
      assert.deepEqual(await verifyChain(storage), {
        ok: false,
        firstBadId: 4,
        reason: 'prev-hash-mismatch',
        count: 3,
      });
    });

    it('reports a deleted entry', async () => {
      await appendMany(storage, 6);
      await sql`delete from audit_log where id = 3`.execute(storage.db);
      assert.deepEqual(await verifyChain(storage), { ok: false, firstBadId: 3, reason: 'missing', count: 2 });
    });

    it('reports reordered entries', async () => {
      await appendMany(storage, 6);
      // Swap the contents of entries 2 and 5, keeping the ids in place.
      await sql`update audit_log set id = -2 where id = 2`.execute(storage.db);
      await sql`update audit_log set id = 2 where id = 5`.execute(storage.db);
      await sql`update audit_log set id = 5 where id = -2`.execute(storage.db);
      assert.deepEqual(await verifyChain(storage), {
        ok: false,
        firstBadId: 2,
        reason: 'prev-hash-mismatch',
        count: 1,
      });
    });

    it('reports dropped newest entries against the chain head', async () => {
      await appendMany(storage, 6);
      await sql`delete from audit_log where id >= 5`.execute(storage.db);
      assert.deepEqual(await verifyChain(storage), {
        ok: false,
        firstBadId: 5,
        reason: 'truncated',
        count: 4,
      });
    });

    it('refuses secrets and raw bytes in details', async () => {
      for (const details of [
        { pin: '123456' },
        { new_puk: 'x' },
        { mgmtKey: 'x' },
        { blob: Buffer.from('x') },
        { a: { token: 't' } },
      ]) {
        await assert.rejects(
          storage.transaction((tx) => appendAudit(tx, { actor: 'system', eventType: 'x', details })),
        );
      }
      assert.equal((await auditChainHead(storage)).lastId, 0);
    });

    it('exports JSON lines, filtered, with hashes that match the chain', async () => {
      await appendMany(storage, 4, 'card-1');
      await appendMany(storage, 3, 'card-2');
      const all = await collect(storage);
      assert.equal(all.length, 7);
      assert.deepEqual(all[0]!.details, { n: 0, nested: { a: 1, b: 2 } });
      assert.equal(all[6]!.hash, (await auditChainHead(storage)).lastHash);
      const card2 = await collect(storage, { cardId: 'card-2' });
      assert.deepEqual(
        card2.map((e) => e.id),
        [5, 6, 7],
      );
      const used = await collect(storage, { eventType: AUDIT_EVENTS.keyUsed, fromId: 2, toId: 6 });
      assert.deepEqual(
        used.map((e) => e.id),
        [2, 4, 6],
      );
      const since = await collect(storage, { since: all[5]!.time });
      assert.ok(since.every((e) => e.time >= all[5]!.time));
    });
  });
}
