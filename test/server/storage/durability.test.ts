import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { sql } from 'kysely';
import { withStatementCache } from '../../../server/storage/statement-cache.js';
import { LAZY_SYNC_DELAY_MS, WalSync } from '../../../server/storage/wal-sync.js';
import {
  BACKSTOP_WAL_PAGES,
  CHECKPOINT_IDLE_MS,
  WalCheckpointer,
} from '../../../server/storage/wal-checkpoint.js';
import { getCard, migrate, openStorage, type Storage } from '../../../server/storage/index.js';
import { createTestCard, openSession, CARD_PIN, pinBytes } from '../cards/support/card-fixture.js';
import { tempKeyFileProvider } from './backends.js';
import { expectSw } from '../../apdu/piv/support/host.js';

/** Polls `check` every few ms until it holds (fails after `ms`). */
async function eventually(check: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) assert.fail(`not within ${ms} ms: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('WalSync', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-walsync-'));
    await writeFile(join(dir, 'db-wal'), 'frames');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('shares one fsync among the calls made while another runs (group commit)', async () => {
    const wal = new WalSync(join(dir, 'db'), (e) => assert.fail(e));
    await Promise.all(Array.from({ length: 20 }, () => wal.sync()));
    // The first call starts an fsync, the other 19 all wait for the single one after it.
    assert.ok(wal.flushes >= 1 && wal.flushes <= 2, `flushes: ${wal.flushes}`);
    const before = wal.flushes;
    await wal.sync();
    assert.equal(wal.flushes, before + 1, 'a call with nothing running gets its own fsync');
    await wal.close();
  });

  it('flushes a lazy commit in the background, once for many', async () => {
    const wal = new WalSync(join(dir, 'db'), (e) => assert.fail(e));
    for (let i = 0; i < 50; i++) wal.syncSoon();
    assert.equal(wal.flushes, 0, 'nothing flushed synchronously');
    await eventually(() => wal.flushes === 1, 20 * LAZY_SYNC_DELAY_MS, 'background flush');
    await new Promise((resolve) => setTimeout(resolve, 2 * LAZY_SYNC_DELAY_MS));
    assert.equal(wal.flushes, 1, 'fifty lazy commits, one fsync');
    await wal.close();
  });

  it('reports a WAL that cannot be opened to the caller of sync, and to the background handler', async () => {
    const errors: Error[] = [];
    const wal = new WalSync(join(dir, 'missing'), (e) => errors.push(e));
    await assert.rejects(wal.sync(), { code: 'ENOENT' });
    wal.syncSoon();
    await eventually(() => errors.length === 1, 20 * LAZY_SYNC_DELAY_MS, 'background error');
    await wal.close();
  });
});

describe('WalCheckpointer', () => {
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

  it('checkpoints once the commits pause, never while they keep coming', async () => {
    let runs = 0;
    // Far above the gaps between commits, so a slow machine does not see a pause that isn't one.
    const idleMs = 250;
    const checkpointer = new WalCheckpointer(
      async () => {
        runs++;
      },
      (e) => assert.fail(e),
      idleMs,
    );
    // Commits every 5 ms for longer than an idle period: no checkpoint in between.
    const start = Date.now();
    while (Date.now() - start < 2 * idleMs) {
      checkpointer.noteCommit();
      await sleep(5);
    }
    assert.equal(runs, 0, 'no checkpoint while commits keep coming');
    await eventually(() => runs === 1, 20 * idleMs, 'idle checkpoint');
    await sleep(3 * idleMs);
    assert.equal(runs, 1, 'nothing committed since: no second checkpoint');
    assert.equal(checkpointer.checkpoints, 1);
    checkpointer.noteCommit();
    await eventually(() => runs === 2, 20 * idleMs, 'checkpoint after the next pause');
    await checkpointer.close();
  });

  it('reports a failed checkpoint to the background handler and stops after close', async () => {
    const errors: Error[] = [];
    let runs = 0;
    const checkpointer = new WalCheckpointer(
      () => {
        runs++;
        return Promise.reject(new Error('disk full'));
      },
      (e) => errors.push(e),
      20,
    );
    checkpointer.noteCommit();
    await eventually(() => errors.length === 1, 2000, 'reported');
    assert.match(errors[0]!.message, /disk full/);
    assert.equal(checkpointer.checkpoints, 0, 'a failed checkpoint is not counted');
    await checkpointer.close();
    checkpointer.noteCommit();
    await sleep(100);
    assert.equal(runs, 1, 'nothing runs after close');
  });
});

describe('statement cache', () => {
  it('prepares a query text once and evicts the least recently used beyond its size', () => {
    const database = new BetterSqlite3(':memory:');
    const cached = withStatementCache(database, 2);
    const a = cached.prepare('select 1');
    assert.equal(cached.prepare('select 1'), a);
    cached.prepare('select 2');
    cached.prepare('select 1'); // most recent again
    cached.prepare('select 3'); // evicts 'select 2'
    assert.equal(cached.prepare('select 1'), a);
    assert.equal((cached.prepare('select 1').get() as Record<string, number>)['1'], 1);
    cached.close();
    assert.equal(database.open, false);
  });
});

describe('durability of SQLite transactions', () => {
  let dir: string;
  let storage: Storage;
  let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-durability-'));
    storage = await openStorage(`sqlite:${join(dir, 'cardlink.db')}`);
    await migrate(storage);
    keys = await tempKeyFileProvider();
  });
  after(async () => {
    await storage.close();
    await keys.cleanup();
    await rm(dir, { recursive: true, force: true });
  });

  it('checkpoints the WAL when idle, not inside commits', async () => {
    const [limit] = (await sql<{ wal_autocheckpoint: number }>`pragma wal_autocheckpoint`.execute(storage.db))
      .rows;
    assert.equal(limit?.wal_autocheckpoint, BACKSTOP_WAL_PAGES, 'commits checkpoint only past the backstop');
    await storage.transaction(async (tx) => {
      await sql`create table if not exists idle_t (x integer)`.execute(tx.db);
    });
    const before = storage.idleCheckpoints();
    for (let i = 0; i < 20; i++) {
      await storage.transaction(async (tx) => {
        await sql`insert into idle_t (x) values (${i})`.execute(tx.db);
      });
    }
    await eventually(() => storage.idleCheckpoints() > before, 20 * CHECKPOINT_IDLE_MS, 'idle checkpoint');
    // The checkpoint copied every frame, so the next commit starts the WAL over: it holds only
    // that commit's frames, not the twenty commits' (at least a frame each) before it.
    await storage.transaction(async (tx) => {
      await sql`insert into idle_t (x) values (${99})`.execute(tx.db);
    });
    const [after] = (
      await sql<{ busy: number; log: number; checkpointed: number }>`pragma wal_checkpoint(passive)`.execute(
        storage.db,
      )
    ).rows;
    assert.equal(after?.busy, 0);
    assert.ok(after!.log >= 1 && after!.log < 10, `the WAL restarted: ${after?.log} frames`);
    const rows = await sql<{ n: number }>`select count(*) as n from idle_t`.execute(storage.db);
    assert.equal(rows.rows[0]?.n, 21);
  });

  it('a transaction resolves after the WAL is fsynced; a relaxed one before, and is flushed soon', async () => {
    let before = storage.diskFlushes();
    await storage.transaction(async (tx) => {
      await sql`create table if not exists t (x integer)`.execute(tx.db);
    });
    assert.ok(storage.diskFlushes() > before, 'durable: fsynced before it resolved');
    await new Promise((resolve) => setTimeout(resolve, 2 * LAZY_SYNC_DELAY_MS));

    before = storage.diskFlushes();
    await storage.transaction(async (tx) => {
      await sql`insert into t values (1)`.execute(tx.db);
      tx.relaxDurability();
    });
    assert.equal(storage.diskFlushes(), before, 'relaxed: resolved without waiting for the disk');
    await eventually(() => storage.diskFlushes() > before, 20 * LAZY_SYNC_DELAY_MS, 'lazy flush');
  });

  it('a signature does not wait for the disk, a PIN try does', async () => {
    const created = await createTestCard(storage, keys.provider);
    const { host } = await openSession(storage, keys.provider, created.cardId);
    expectSw(await host.select(), '9000');
    await new Promise((resolve) => setTimeout(resolve, 2 * LAZY_SYNC_DELAY_MS));

    let before = storage.diskFlushes();
    const versionBefore = (await getCard(storage, created.cardId)).version;
    expectSw(await host.verifyPin(pinBytes(CARD_PIN)), '9000');
    assert.ok(storage.diskFlushes() > before, 'VERIFY answered after its fsync');
    assert.ok(
      (await getCard(storage, created.cardId)).version > versionBefore,
      'a PIN try is a new card version',
    );
    await new Promise((resolve) => setTimeout(resolve, 2 * LAZY_SYNC_DELAY_MS));

    before = storage.diskFlushes();
    const version = (await getCard(storage, created.cardId)).version;
    expectSw(await host.privateKeyOp(0x11, 0x9e, 0x81, new Uint8Array(32).fill(7)), '9000');
    assert.equal(storage.diskFlushes(), before, 'the signature answered before any fsync');
    assert.equal(
      (await getCard(storage, created.cardId)).version,
      version,
      'a signature changes no card state',
    );
    await eventually(() => storage.diskFlushes() > before, 20 * LAZY_SYNC_DELAY_MS, 'its record flushed');
  });
});
