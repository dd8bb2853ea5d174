import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import {
  migrate,
  MIGRATIONS,
  openStorage,
  schemaVersion,
  type Migration,
  type Storage,
} from '../../../server/storage/index.js';
import { BACKENDS, createBackend, type Backend } from './backends.js';

for (const kind of BACKENDS) {
  describe(`migrations on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;

    before(async () => {
      backend = await createBackend(kind);
      storage = await openStorage(backend.url);
    });
    after(async () => {
      await storage.close();
      await backend.cleanup();
    });

    it('applies every migration once, then nothing', async () => {
      assert.equal(await schemaVersion(storage), 0);
      const first = await migrate(storage);
      assert.deepEqual(
        first.applied,
        MIGRATIONS.map((m) => m.version),
      );
      assert.equal(first.current, MIGRATIONS.length);
      const second = await migrate(storage);
      assert.deepEqual(second.applied, []);
      assert.equal(await schemaVersion(storage), MIGRATIONS.length);
      const rows = await storage.db.selectFrom('schema_migrations').selectAll().execute();
      assert.equal(rows.length, MIGRATIONS.length);
    });

    it('creates byte columns that round-trip bytes on this database', async () => {
      const head = await storage.db.selectFrom('audit_chain_head').selectAll().executeTakeFirstOrThrow();
      assert.ok(Buffer.isBuffer(head.last_hash));
      assert.equal(head.last_hash.length, 32);
      assert.equal(head.last_id, 0);
    });

    it('applies a later migration on top, and refuses a database newer than the code', async () => {
      const extra: Migration = {
        version: MIGRATIONS.length + 1,
        name: 'test: extra table',
        async up(db) {
          await db.schema.createTable('test_extra').addColumn('x', 'integer').execute();
        },
      };
      const result = await migrate(storage, [...MIGRATIONS, extra]);
      assert.deepEqual(result.applied, [extra.version]);
      await sql`select x from test_extra`.execute(storage.db);
      await assert.rejects(migrate(storage), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ERR_STORAGE');
        assert.match(e.message, /newer/);
        return true;
      });
    });

    it('rolls back a failing migration with its bookkeeping row', async () => {
      const before = await schemaVersion(storage);
      const broken: Migration = {
        version: before + 1,
        name: 'test: broken',
        async up(db) {
          await db.schema.createTable('test_broken').addColumn('x', 'integer').execute();
          await sql`select * from no_such_table`.execute(db);
        },
      };
      // The previous test's extra migration is applied already, so it is skipped here.
      const applied: Migration = {
        version: MIGRATIONS.length + 1,
        name: 'test: extra table',
        up: () => Promise.resolve(),
      };
      await assert.rejects(migrate(storage, [...MIGRATIONS, applied, broken]));
      assert.equal(await schemaVersion(storage), before);
      // DDL is transactional on both databases: the table is gone too.
      await assert.rejects(sql`select x from test_broken`.execute(storage.db));
    });
  });
}

describe('SQLite file', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-sqlite-file-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is created on first start, private, in a new directory', async () => {
    const file = join(dir, 'sub', 'cardlink.db');
    const storage = await openStorage(`sqlite:${file}`);
    try {
      await migrate(storage);
      assert.equal((await stat(file)).mode & 0o777, 0o600);
      assert.equal((await stat(join(dir, 'sub'))).mode & 0o777, 0o700);
    } finally {
      await storage.close();
    }
  });

  it('serves one process: a second open of the same file fails while the first is open', async () => {
    const file = join(dir, 'locked.db');
    const first = await openStorage(`sqlite:${file}`);
    try {
      await migrate(first);
      await assert.rejects(openStorage(`sqlite:${file}`), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ERR_STORAGE');
        assert.match(e.message, /in use/);
        return true;
      });
    } finally {
      await first.close();
    }
    const again = await openStorage(`sqlite:${file}`);
    await again.close();
  });
});
