/**
 * Queries compiled once and run with new values (server/storage/compiled-query.ts), on SQLite and
 * PostgreSQL: the values land where their placeholders are, constants stay, each shape compiles its
 * own SQL, and a missing value is an error rather than a NULL. Inside a transaction they run on
 * the transaction's own connection (on SQLite straight on the prepared statement): they see its
 * writes and the builder's, fail like the builder, and refuse a transaction that has ended.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { compiledQuery } from '../../../server/storage/compiled-query.js';
import { isUniqueViolation, StorageError, type Storage, type Tx } from '../../../server/storage/index.js';
import { BACKENDS, createBackend, type Backend } from './backends.js';

const INSERT_TENANTS = compiledQuery((db, p, shape) =>
  db
    .insertInto('tenants')
    .values(
      Array.from({ length: shape }, (_, i) => ({
        id: p<string>(2 * i),
        name: p<string>(2 * i + 1),
        created_at: '2026-01-01T00:00:00.000Z', // a constant: the same in every run
      })),
    )
    .returning(['id', 'name', 'created_at']),
);

const TENANTS_BY_ID = compiledQuery((db, p, shape) =>
  db
    .selectFrom('tenants')
    .select(['id', 'name'])
    .where(
      'id',
      'in',
      Array.from({ length: shape }, (_, i) => p<string>(i)),
    )
    .orderBy('id'),
);

for (const kind of BACKENDS) {
  describe(`compiled queries (${kind})`, () => {
    let backend: Backend;
    let storage: Storage;
    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
    });
    after(() => backend.cleanup());

    it('runs one compiled statement with new values each time, constants kept', async () => {
      const first = await INSERT_TENANTS.execute(storage, ['t-a', 'first']);
      const second = await INSERT_TENANTS.execute(storage, ['t-b', 'second']);
      assert.deepEqual(first.rows, [{ id: 't-a', name: 'first', created_at: '2026-01-01T00:00:00.000Z' }]);
      assert.deepEqual(second.rows, [{ id: 't-b', name: 'second', created_at: '2026-01-01T00:00:00.000Z' }]);
    });

    it('compiles each shape on its own (multi-row insert, IN list)', async () => {
      const three = await INSERT_TENANTS.execute(storage, ['t-c', 'c', 't-d', 'd', 't-e', 'e'], 3);
      assert.deepEqual(
        three.rows.map((r) => r.id),
        ['t-c', 't-d', 't-e'],
      );
      const found = await TENANTS_BY_ID.execute(storage, ['t-e', 't-a'], 2);
      assert.deepEqual(found.rows, [
        { id: 't-a', name: 'first' },
        { id: 't-e', name: 'e' },
      ]);
      const one = await TENANTS_BY_ID.execute(storage, ['t-d'], 1);
      assert.deepEqual(one.rows, [{ id: 't-d', name: 'd' }]);
    });

    it('runs inside a transaction and rolls back with it', async () => {
      await assert.rejects(
        storage.transaction(async (tx) => {
          await INSERT_TENANTS.execute(tx, ['t-rolled-back', 'x']);
          assert.equal((await TENANTS_BY_ID.execute(tx, ['t-rolled-back'])).rows.length, 1);
          throw new Error('roll back');
        }),
        /roll back/,
      );
      assert.equal((await TENANTS_BY_ID.execute(storage, ['t-rolled-back'])).rows.length, 0);
    });

    it('shares the transaction with the query builder, both ways', async () => {
      const seen = await storage.transaction(async (tx) => {
        await tx.db
          .insertInto('tenants')
          .values({ id: 't-builder', name: 'b', created_at: '2026-01-01T00:00:00.000Z' })
          .execute();
        await INSERT_TENANTS.execute(tx, ['t-compiled', 'c']);
        const byBuilder = await tx.db
          .selectFrom('tenants')
          .select('id')
          .where('id', '=', 't-compiled')
          .executeTakeFirst();
        const byCompiled = await TENANTS_BY_ID.execute(tx, ['t-builder']);
        return { byBuilder: byBuilder?.id, byCompiled: byCompiled.rows.map((r) => r.id) };
      });
      assert.deepEqual(seen, { byBuilder: 't-compiled', byCompiled: ['t-builder'] });
    });

    it('fails a constraint violation as the driver error, and the transaction rolls back', async () => {
      let caught: unknown;
      try {
        await storage.transaction(async (tx) => {
          await INSERT_TENANTS.execute(tx, ['t-dup-new', 'x']);
          await INSERT_TENANTS.execute(tx, ['t-a', 'again']); // t-a exists
        });
      } catch (error) {
        caught = error;
      }
      assert.ok(caught instanceof StorageError, `got ${String(caught)}`);
      assert.ok(isUniqueViolation(caught.cause), 'the cause is the unique violation');
      assert.equal((await TENANTS_BY_ID.execute(storage, ['t-dup-new'])).rows.length, 0);
    });

    it('refuses a transaction that has ended instead of running outside it', async () => {
      let kept: Tx | undefined;
      await storage.transaction(async (tx) => {
        kept = tx;
        await TENANTS_BY_ID.execute(tx, ['t-a']);
      });
      await assert.rejects(INSERT_TENANTS.execute(kept!, ['t-late', 'x']), (error: unknown) => {
        assert.ok(error instanceof StorageError);
        assert.match(error.message, /transaction that has ended/);
        return true;
      });
      assert.equal((await TENANTS_BY_ID.execute(storage, ['t-late'])).rows.length, 0);
    });

    it('refuses too few values instead of binding NULL', async () => {
      await assert.rejects(INSERT_TENANTS.execute(storage, ['t-f', 'f', 't-g'], 2), RangeError);
      assert.equal((await TENANTS_BY_ID.execute(storage, ['t-f'])).rows.length, 0);
    });
  });
}
