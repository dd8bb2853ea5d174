/**
 * `cardlink admin` as an administrator meets it: the built CLI run as a child process against a
 * temp data dir (SQLite file and key file created there) and once against PostgreSQL, checked
 * through the database and the library.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openKeyFileProvider } from '../../../server/keys/key-file-provider.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { ensureUser, openStorage, registerDevice, type Storage } from '../../../server/storage/index.js';
import { expectSw } from '../../apdu/piv/support/host.js';
import { openSession, pinBytes } from '../cards/support/card-fixture.js';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../../support/cli-run.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';

const ISSUER = 'https://idp.example';

type Run = CliRun;

/** The environment without any CARDLINK_* setting of the machine, and a private state dir. */
function cleanEnv(stateDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return { ...envWithoutCardlinkSettings(), XDG_STATE_HOME: stateDir, ...extra };
}

function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<Run> {
  return runCardlink(['admin', ...args], env);
}

const show = (r: Run) => `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

function occurrences(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

/** One server's data dir (and database), with the CLI bound to it. */
class Site {
  constructor(
    readonly dir: string,
    readonly databaseUrl: string,
  ) {}

  get kekFile(): string {
    return join(this.dir, 'kek.json');
  }

  private flags(): string[] {
    return [
      '--data-dir',
      this.dir,
      ...(this.databaseUrl.startsWith('sqlite:') ? [] : ['--database-url', this.databaseUrl]),
    ];
  }

  run(args: string[], env: Record<string, string> = {}): Promise<Run> {
    return runCli([...args, ...this.flags()], cleanEnv(join(this.dir, 'state'), env));
  }

  /** Runs and expects exit 0; parses stdout as JSON when `--json` is among the arguments. */
  async ok<T = string>(args: string[], env: Record<string, string> = {}): Promise<T> {
    const r = await this.run(args, env);
    assert.equal(r.status, 0, show(r));
    return (args.includes('--json') ? JSON.parse(r.stdout) : r.stdout) as T;
  }

  /**
   * The database and key file opened in this process. On SQLite the CLI cannot open the file
   * meanwhile (exclusive lock): everything is closed again before `fn`'s promise settles.
   */
  async open<T>(fn: (storage: Storage, kek: KekProvider) => Promise<T>): Promise<T> {
    const storage = await openStorage(this.databaseUrl);
    // Kysely releases a SQLite file only once a query ran on it: run one, so close() unlocks it.
    await storage.db.selectFrom('schema_migrations').select('version').limit(1).execute();
    const kek = await openKeyFileProvider(this.kekFile, { create: false });
    try {
      return await fn(storage, kek);
    } finally {
      await kek.close();
      await storage.close();
    }
  }

  async cardRow(cardId: string) {
    return this.open((storage) =>
      storage.db
        .selectFrom('cards')
        .select(['session_epoch', 'session_id', 'version'])
        .where('id', '=', cardId)
        .executeTakeFirst(),
    );
  }
}

async function sqliteSite(): Promise<Site> {
  const dir = await mkdtemp(join(tmpdir(), 'cardlink-admin-cli-'));
  return new Site(dir, `sqlite:${join(dir, 'cardlink.db')}`);
}

interface CreatedJson {
  cardId: string;
  serial: number;
  label: string;
  generated: { pin: boolean; puk: boolean; managementKey: boolean };
  secrets: { pin?: string; puk?: string; managementKey?: { algorithm: string; key: string } };
}

interface CardJson {
  id: string;
  issuer: string;
  subject: string;
  label: string;
  serial: number;
  slots: { slot: string; algorithm: string }[];
  pinRetries: { remaining: number; limit: number };
}

interface AuditLine {
  id: number;
  eventType: string;
  cardId: string | null;
  details: Record<string, unknown>;
  hash: string;
}

const createArgs = (subject: string, tenant = 'acme') => [
  'create-card',
  '--issuer',
  ISSUER,
  '--subject',
  subject,
  '--tenant',
  tenant,
];

async function exportAudit(site: Site, extra: string[] = []): Promise<{ lines: AuditLine[]; raw: string }> {
  const raw = await site.ok(['audit', '--export', ...extra]);
  const lines = raw
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as AuditLine);
  return { lines, raw };
}

describe('cardlink admin on SQLite', () => {
  let site: Site;

  before(async () => {
    site = await sqliteSite();
  });
  after(async () => {
    await rm(site.dir, { recursive: true, force: true });
  });

  it('create-card shows the generated secrets once, and the card is listed', async () => {
    const r = await site.run(createArgs('alice'));
    assert.equal(r.status, 0, show(r));
    const id = /^card ([0-9a-f-]{36}) created$/m.exec(r.stdout)?.[1];
    assert.ok(id, r.stdout);
    const pin = /^ {2}PIN {13}(\d{8})$/m.exec(r.stdout)?.[1];
    const puk = /^ {2}PUK {13}(\d{8})$/m.exec(r.stdout)?.[1];
    const mgmt = /^ {2}management key {2}([0-9a-f]{48}) \(AES192\)$/m.exec(r.stdout)?.[1];
    assert.ok(pin && puk && mgmt, r.stdout);
    assert.match(r.stdout, /shown once/);
    for (const secret of [pin, puk, mgmt]) {
      assert.equal(occurrences(r.stdout, secret), 1, 'each secret printed once');
      assert.equal(occurrences(r.stderr, secret), 0);
    }

    const listRun = await site.run(['list-cards', '--json']);
    assert.equal(listRun.status, 0, show(listRun));
    const cards = JSON.parse(listRun.stdout) as CardJson[];
    const card = cards.find((c) => c.id === id);
    assert.ok(card, listRun.stdout);
    assert.equal(card.subject, 'alice');
    assert.deepEqual(
      card.slots.map((s) => s.slot),
      ['9A', '9C', '9D', '9E'],
    );
    const human = await site.ok(['list-cards', '--issuer', ISSUER, '--subject', 'alice']);
    assert.match(human, new RegExp(`^${id}  serial \\d+  "cardlink PIV card"`, 'm'));
    const { raw } = await exportAudit(site);
    for (const secret of [pin, puk, mgmt]) {
      assert.ok(!listRun.stdout.includes(secret) && !human.includes(secret) && !raw.includes(secret));
    }

    // The printed secrets are the card's.
    await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, id);
      expectSw(await s.host.verifyPin(pinBytes(pin)), '9000');
      expectSw(await s.host.mutualAuth('AES192', Buffer.from(mgmt, 'hex')), '9000');
      s.state.dispose();
    });

    const users = await site.ok<{ subject: string; cards: number }[]>(['list-users', '--json']);
    assert.deepEqual(
      users.map((u) => [u.subject, u.cards]),
      [['alice', 1]],
    );
  });

  it('create-card takes PIN, PUK and management key from the environment and never echoes them', async () => {
    const env = {
      CARDLINK_PIN: '24681357',
      CARDLINK_PUK: '11223344',
      CARDLINK_MGMT_KEY: '0102030405060708090a0b0c0d0e0f101112131415161718',
    };
    const r = await site.run([...createArgs('bob'), '--label', 'Bob card', '--json'], env);
    assert.equal(r.status, 0, show(r));
    const created = JSON.parse(r.stdout) as CreatedJson;
    assert.deepEqual(created.generated, { pin: false, puk: false, managementKey: false });
    assert.deepEqual(created.secrets, {});
    assert.equal(created.label, 'Bob card');
    for (const secret of Object.values(env)) assert.ok(!(r.stdout + r.stderr).includes(secret));

    await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.verifyPin(pinBytes('00000000')), '63C2', 'a wrong PIN is refused');
      expectSw(await s.host.verifyPin(pinBytes(env.CARDLINK_PIN)), '9000', 'the supplied PIN');
      expectSw(await s.host.mutualAuth('AES192', Buffer.from(env.CARDLINK_MGMT_KEY, 'hex')), '9000');
      s.state.dispose();
    });

    const bad = await site.run(createArgs('bob-2'), { CARDLINK_PIN: '12ab5x' });
    assert.equal(bad.status, 78, show(bad));
    assert.match(
      bad.stderr,
      /pin: must be digits only \(environment variable CARDLINK_PIN\) \[ERR_CONFIG_INVALID\]/,
    );
    assert.ok(!(bad.stdout + bad.stderr).includes('12ab5x'));
    const cards = await site.ok<CardJson[]>(['list-cards', '--json']);
    assert.ok(!cards.some((c) => c.subject === 'bob-2'), 'no card left behind');
  });

  it('unblock sets a generated PIN, shown once, or the one from CARDLINK_PIN', async () => {
    const { cardId } = await site.ok<CreatedJson>([...createArgs('carol'), '--json']);
    const r = await site.run(['unblock', cardId]);
    assert.equal(r.status, 0, show(r));
    const pin = /^ {2}PIN {13}(\d{8})$/m.exec(r.stdout)?.[1];
    assert.ok(pin, r.stdout);
    assert.equal(occurrences(r.stdout, pin), 1);
    await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, cardId);
      expectSw(await s.host.verifyPin(pinBytes(pin)), '9000');
      s.state.dispose();
    });

    const supplied = await site.ok<{ generated: boolean; pin?: string }>(['unblock', cardId, '--json'], {
      CARDLINK_PIN: '13572468',
    });
    assert.deepEqual(supplied, { cardId, generated: false });
    await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, cardId);
      expectSw(await s.host.verifyPin(pinBytes('13572468')), '9000');
      s.state.dispose();
    });
    const { lines } = await exportAudit(site, ['--card', cardId]);
    assert.equal(lines.filter((l) => l.eventType === 'pin.unblocked').length, 2);

    const missing = await site.run(['unblock', '00000000-0000-4000-8000-000000000000']);
    assert.equal(missing.status, 1, show(missing));
    assert.match(missing.stderr, /\[ERR_CARD_NOT_FOUND\]/);
  });

  it('force-logout ends the live session, bumps the session epoch and is audited', async () => {
    const { cardId } = await site.ok<CreatedJson>([...createArgs('dave'), '--json']);
    const sessionId = await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, cardId);
      s.state.dispose();
      return s.sessionId;
    });
    const live = await site.ok<{ id: string; cardId: string; fenced: boolean }[]>(['sessions', '--json']);
    assert.deepEqual(
      live.filter((s) => s.cardId === cardId).map((s) => [s.id, s.fenced]),
      [[sessionId, false]],
    );
    const before = await site.cardRow(cardId);
    assert.ok(before);

    const result = await site.ok<{ epoch: number; endedSessions: string[] }>([
      'force-logout',
      cardId,
      '--json',
    ]);
    const row = await site.cardRow(cardId);
    assert.equal(Number(row?.session_epoch), Number(before.session_epoch) + 1);
    assert.equal(result.epoch, Number(row?.session_epoch));
    assert.deepEqual(result.endedSessions, [sessionId]);
    assert.match(String(row?.session_id), /^admin:[0-9a-f-]{36}$/);

    const after = await site.ok<{ cardId: string }[]>(['sessions', '--json']);
    assert.ok(!after.some((s) => s.cardId === cardId), 'no live session left, not even the admin one');
    const { lines } = await exportAudit(site, ['--card', cardId]);
    const entry = lines.find((l) => l.eventType === 'admin.forced-logout');
    assert.ok(entry);
    assert.deepEqual(entry.details.endedSessions, [sessionId]);
    assert.equal(entry.details.epoch, result.epoch);

    const human = await site.ok(['force-logout', cardId]);
    assert.match(
      human,
      new RegExp(`card ${cardId}: session epoch now ${result.epoch + 1}; no session was live`),
    );
  });

  it('delete-card removes the card; deleting it again is ERR_CARD_NOT_FOUND', async () => {
    const { cardId } = await site.ok<CreatedJson>([...createArgs('erin'), '--json']);
    assert.equal(await site.ok(['delete-card', cardId]), `card ${cardId} deleted\n`);
    const cards = await site.ok<CardJson[]>(['list-cards', '--json']);
    assert.ok(!cards.some((c) => c.id === cardId));
    assert.equal(await site.cardRow(cardId), undefined);
    const keys = await site.open((storage) =>
      storage.db.selectFrom('card_keys').select('slot').where('card_id', '=', cardId).execute(),
    );
    assert.equal(keys.length, 0, 'sealed keys shredded');
    const again = await site.run(['delete-card', cardId]);
    assert.equal(again.status, 1, show(again));
    assert.match(again.stderr, /no such card \[ERR_CARD_NOT_FOUND\]/);
    const { lines } = await exportAudit(site, ['--card', cardId]);
    assert.deepEqual(
      lines.map((l) => l.eventType),
      ['card.created', 'card.deleted'],
    );
  });

  it('rotate-kek reports the new version; keys are rewrapped and cards still work', async () => {
    const created = await site.ok<CreatedJson>([...createArgs('frank'), '--json']);
    const previous = await site.open(async (_storage, kek) => kek.currentVersion);
    const rotation = await site.ok<{
      previousVersion: number;
      currentVersion: number;
      rewrapped: number;
      retired: number[];
    }>(['rotate-kek', '--json']);
    assert.equal(rotation.previousVersion, previous);
    assert.equal(rotation.currentVersion, previous + 1);
    assert.ok(rotation.rewrapped >= 5, `rewrapped ${rotation.rewrapped}`);
    assert.deepEqual(rotation.retired, [previous]);
    await site.open(async (storage, kek) => {
      assert.equal(kek.currentVersion, rotation.currentVersion);
      const versions = await storage.db.selectFrom('card_keys').select('kek_version').distinct().execute();
      assert.deepEqual(
        versions.map((v) => v.kek_version),
        [rotation.currentVersion],
      );
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.verifyPin(pinBytes(created.secrets.pin!)), '9000');
      s.state.dispose();
    });
    const human = await site.ok(['rotate-kek']);
    assert.match(
      human,
      new RegExp(`KEK rotated: version ${rotation.currentVersion} -> ${rotation.currentVersion + 1}`),
    );
  });

  it('approve-device approves a pending device once, audited', async () => {
    const deviceId = await site.open((storage) =>
      storage.transaction(async (tx) => {
        const user = await ensureUser(tx, 'acme', ISSUER, 'alice');
        return (
          await registerDevice(tx, {
            userId: user.id,
            publicKeySpki: Buffer.from('not-a-key'),
            name: 'laptop',
          })
        ).id;
      }),
    );
    const approval = await site.ok<{ alreadyApproved: boolean }>(['approve-device', deviceId, '--json']);
    assert.equal(approval.alreadyApproved, false);
    const status = await site.open((storage) =>
      storage.db.selectFrom('devices').select('status').where('id', '=', deviceId).executeTakeFirst(),
    );
    assert.equal(status?.status, 'approved');
    assert.match(await site.ok(['approve-device', deviceId]), /was already approved/);
    const { lines } = await exportAudit(site, ['--event', 'device.approved']);
    assert.deepEqual(
      lines.map((l) => l.details.deviceId),
      [deviceId],
    );
    const unknown = await site.run(['approve-device', 'no-such-device']);
    assert.equal(unknown.status, 1, show(unknown));
    assert.match(unknown.stderr, /no such device: no-such-device \[ERR_DEVICE_NOT_FOUND\]/);
  });

  it('audit queries with filters and a limit, and --export writes JSON lines', async () => {
    const { cardId } = await site.ok<CreatedJson>([...createArgs('grace'), '--json']);
    const result = await site.ok<{ entries: AuditLine[]; chain: { ok: boolean } }>([
      'audit',
      '--card',
      cardId,
      '--json',
    ]);
    assert.deepEqual(
      result.entries.map((e) => e.eventType),
      ['card.created'],
    );
    assert.equal(result.chain.ok, true);
    const limited = await site.ok<{ entries: AuditLine[] }>(['audit', '--limit', '2', '--json']);
    assert.equal(limited.entries.length, 2);
    const human = await site.ok(['audit', '--event', 'card.created', '--limit', '1']);
    assert.match(human, new RegExp(`^#\\d+ \\S+ admin:cli\\S* card\\.created card ${cardId} `, 'm'));
    assert.match(human, /^audit chain ok: \d+ entries, head [0-9a-f]{64}$/m);
    const { lines } = await exportAudit(site);
    assert.deepEqual(
      lines.map((l) => l.id),
      lines.map((_l, i) => i + 1),
      'the whole log, oldest first',
    );
    assert.ok(lines.every((l) => /^[0-9a-f]{64}$/.test(l.hash)));
    assert.ok(
      lines.some((l) => l.eventType === 'admin.audit-queried'),
      'queries are audited',
    );
    const bad = await site.run(['audit', '--limit', '0']);
    assert.equal(bad.status, 78, show(bad));
  });
});

describe('cardlink admin audit verify', () => {
  it('passes on an intact chain and fails (exit 1) after a row is changed with SQL', async () => {
    const site = await sqliteSite();
    try {
      await site.ok([...createArgs('heidi'), '--json']);
      await site.ok(['list-cards']);
      const good = await site.run(['audit', 'verify']);
      assert.equal(good.status, 0, show(good));
      assert.match(good.stdout, /^audit chain ok: 2 entries, head [0-9a-f]{64}$/m);

      await site.open((storage) =>
        storage.db
          .updateTable('audit_log')
          .set({ details: JSON.stringify({ count: 0 }) })
          .where('id', '=', 2)
          .execute(),
      );
      const broken = await site.run(['audit', 'verify']);
      assert.equal(broken.status, 1, show(broken));
      assert.match(broken.stdout, /audit chain BROKEN at entry 2 \(hash-mismatch\)/);
      const json = await site.run(['audit', 'verify', '--json']);
      assert.equal(json.status, 1, show(json));
      assert.deepEqual(JSON.parse(json.stdout), {
        ok: false,
        firstBadId: 2,
        reason: 'hash-mismatch',
        count: 1,
      });
      const query = await site.run(['audit']);
      assert.equal(query.status, 0, show(query));
      assert.match(query.stderr, /audit chain BROKEN at entry 2/);
    } finally {
      await rm(site.dir, { recursive: true, force: true });
    }
  });
});

describe('cardlink admin configuration', () => {
  it('a bad --config file fails with exit 78, naming the file and the key', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-admin-config-'));
    try {
      const file = join(dir, 'server.json');
      await writeFile(file, JSON.stringify({ dataDir: dir, limits: { maxInFlight: 0 } }));
      const r = await runCli(['list-cards', '--config', file], cleanEnv(dir));
      assert.equal(r.status, 78, show(r));
      assert.ok(r.stderr.includes(`${file}: setting "limits.maxInFlight" must be a whole number`), r.stderr);
      assert.match(r.stderr, /\[ERR_CONFIG_INVALID\]/);

      await writeFile(file, JSON.stringify({ dataDir: dir, databseUrl: 'sqlite:x.db' }));
      const typo = await runCli(['sessions', '--config', file], cleanEnv(dir));
      assert.equal(typo.status, 78, show(typo));
      assert.ok(typo.stderr.includes(`${file}: setting "databseUrl" is not a known setting`), typo.stderr);

      const usage = await runCli(['list-cards', '--issuer', ISSUER, '--data-dir', dir], cleanEnv(dir));
      assert.equal(usage.status, 64, show(usage));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('cardlink admin on PostgreSQL', () => {
  let database: TestDatabase;
  let site: Site;

  before(async () => {
    database = await createTestDatabase('cardlink_admin_cli');
    site = new Site(await mkdtemp(join(tmpdir(), 'cardlink-admin-pg-')), database.url);
  });
  after(async () => {
    await database.drop();
    await rm(site.dir, { recursive: true, force: true });
  });

  it('creates, lists, fences a live session on force-logout (with the claim event) and verifies the audit', async () => {
    const created = await site.ok<CreatedJson>([...createArgs('ivan', 'pg-tenant'), '--json']);
    assert.match(created.secrets.pin ?? '', /^\d{8}$/);
    const cards = await site.ok<CardJson[]>(['list-cards', '--json']);
    assert.deepEqual(
      cards.map((c) => c.id),
      [created.cardId],
    );

    // A live session in this process while the CLI runs (PostgreSQL allows both).
    await site.open(async (storage, kek) => {
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.verifyPin(pinBytes(created.secrets.pin!)), '9000');
      const claims: { cardId: string; epoch: number }[] = [];
      const unsubscribe = await storage.onCardClaimed((event) => claims.push(event));
      try {
        const result = await site.ok<{ epoch: number; endedSessions: string[] }>([
          'force-logout',
          created.cardId,
          '--json',
        ]);
        assert.equal(result.epoch, s.epoch + 1);
        assert.deepEqual(result.endedSessions, [s.sessionId]);
        const deadline = Date.now() + 5_000;
        while (!claims.some((c) => c.cardId === created.cardId && c.epoch === result.epoch)) {
          assert.ok(Date.now() < deadline, `no claim event: ${JSON.stringify(claims)}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        await assert.rejects(
          s.state.objects.put(0x5fc108, Uint8Array.of(0xbc, 0)),
          (e: Error & { code?: string }) => e.code === 'ERR_CARD_TAKEN_OVER',
        );
      } finally {
        await unsubscribe();
        s.state.dispose();
      }
    });

    const verify = await site.ok<{ ok: boolean; count: number }>(['audit', 'verify', '--json']);
    assert.equal(verify.ok, true);
    assert.ok(verify.count >= 3);
    const { lines } = await exportAudit(site, ['--card', created.cardId]);
    assert.deepEqual(
      lines.map((l) => l.eventType).filter((t) => t !== 'pin.verified'),
      ['card.created', 'admin.forced-logout'],
    );
  });
});
