/**
 * Versioned schema migrations. `migrate(storage)` applies, in order, every migration whose version
 * is not yet in `schema_migrations`, each in its own transaction together with its bookkeeping
 * row. Running it again applies nothing (idempotent); two nodes running it at once on PostgreSQL
 * take turns on an advisory lock. A database migrated by a newer cardlink (a version this code
 * does not know) is refused rather than used.
 *
 * A migration, once released, never changes: a schema change is a new entry at the end of
 * `MIGRATIONS` plus the matching change in `schema.ts`.
 */
import { sql, type ColumnDataType, type Transaction } from 'kysely';
import { StorageError } from './errors.js';
import type { Database } from './schema.js';
import { toStorageError, type SqlDialect, type Storage } from './storage.js';

export interface Migration {
  /** 1, 2, 3, ... without gaps. */
  readonly version: number;
  readonly name: string;
  up(db: Transaction<Database>, dialect: SqlDialect): Promise<void>;
}

/** Key of the PostgreSQL advisory lock held while migrating ("cardlink" in ASCII, as int8). */
const MIGRATION_LOCK_KEY = 0x636172646c696e6bn;

/** The hash that precedes the first audit entry: 32 zero bytes. */
export const AUDIT_GENESIS_HASH = Buffer.alloc(32);

/** Per-dialect column types: `blob` does not exist on PostgreSQL, `bytea` does not on SQLite. */
function types(dialect: SqlDialect): { bytes: ColumnDataType; int64: ColumnDataType } {
  return dialect === 'postgres' ? { bytes: 'bytea', int64: 'bigint' } : { bytes: 'blob', int64: 'integer' };
}

export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'tenants, users, devices, cards, keys, objects, sessions, applied commands, audit log',
    async up(db, dialect) {
      const { bytes, int64 } = types(dialect);
      await db.schema
        .createTable('tenants')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('users')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull().references('tenants.id'))
        .addColumn('issuer', 'text', (c) => c.notNull())
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addUniqueConstraint('users_issuer_subject_key', ['issuer', 'subject'])
        .execute();
      await db.schema
        .createTable('devices')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id').onDelete('cascade'))
        .addColumn('public_key_spki', bytes, (c) => c.notNull())
        .addColumn('thumbprint', 'text', (c) => c.notNull().unique())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('status', 'text', (c) => c.notNull().check(sql`status in ('pending', 'approved')`))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('approved_at', 'text')
        .execute();
      await db.schema.createIndex('devices_user_idx').on('devices').column('user_id').execute();
      await db.schema
        .createTable('cards')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('tenant_id', 'text', (c) => c.notNull().references('tenants.id'))
        .addColumn('user_id', 'text', (c) => c.notNull().references('users.id'))
        .addColumn('label', 'text', (c) => c.notNull())
        .addColumn('profile', 'text', (c) => c.notNull())
        .addColumn('serial', int64, (c) =>
          c
            .notNull()
            .unique()
            .check(sql`serial between 0 and 4294967295`),
        )
        .addColumn('guid', bytes, (c) => c.notNull())
        .addColumn('pin_verifier', bytes, (c) => c.notNull())
        .addColumn('pin_retries_remaining', 'integer', (c) => c.notNull())
        .addColumn('pin_retries_limit', 'integer', (c) => c.notNull())
        .addColumn('puk_verifier', bytes, (c) => c.notNull())
        .addColumn('puk_retries_remaining', 'integer', (c) => c.notNull())
        .addColumn('puk_retries_limit', 'integer', (c) => c.notNull())
        .addColumn('mgmt_algorithm', 'text', (c) => c.notNull())
        .addColumn('mgmt_sealed', bytes, (c) => c.notNull())
        .addColumn('mgmt_wrapped_key', bytes, (c) => c.notNull())
        .addColumn('mgmt_kek_version', 'integer', (c) => c.notNull())
        .addColumn('mgmt_key_version', int64, (c) => c.notNull())
        .addColumn('session_epoch', int64, (c) => c.notNull().defaultTo(0))
        .addColumn('session_id', 'text')
        .addColumn('version', int64, (c) => c.notNull().defaultTo(0))
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addCheckConstraint(
          'cards_pin_retries_check',
          sql`pin_retries_limit between 1 and 255 and pin_retries_remaining between 0 and pin_retries_limit`,
        )
        .addCheckConstraint(
          'cards_puk_retries_check',
          sql`puk_retries_limit between 1 and 255 and puk_retries_remaining between 0 and puk_retries_limit`,
        )
        .execute();
      await db.schema.createIndex('cards_user_idx').on('cards').column('user_id').execute();
      await db.schema.createIndex('cards_tenant_idx').on('cards').column('tenant_id').execute();
      await db.schema
        .createIndex('cards_mgmt_kek_version_idx')
        .on('cards')
        .column('mgmt_kek_version')
        .execute();
      await db.schema
        .createTable('card_objects')
        .addColumn('card_id', 'text', (c) => c.notNull().references('cards.id').onDelete('cascade'))
        .addColumn('tag', 'integer', (c) => c.notNull())
        .addColumn('value', bytes, (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('card_objects_pkey', ['card_id', 'tag'])
        .execute();
      await db.schema
        .createTable('card_keys')
        .addColumn('card_id', 'text', (c) => c.notNull().references('cards.id').onDelete('cascade'))
        .addColumn('slot', 'integer', (c) => c.notNull())
        .addColumn('algorithm', 'text', (c) => c.notNull())
        .addColumn('public_key_spki', bytes, (c) => c.notNull())
        .addColumn('sealed_private_key', bytes, (c) => c.notNull())
        .addColumn('wrapped_data_key', bytes, (c) => c.notNull())
        .addColumn('kek_version', 'integer', (c) => c.notNull())
        .addColumn('key_version', int64, (c) => c.notNull())
        .addColumn('pin_policy', 'text', (c) => c.notNull())
        .addColumn('touch_policy', 'text', (c) => c.notNull())
        .addColumn('origin', 'text', (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('updated_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('card_keys_pkey', ['card_id', 'slot'])
        .execute();
      await db.schema
        .createIndex('card_keys_kek_version_idx')
        .on('card_keys')
        .column('kek_version')
        .execute();
      await db.schema
        .createTable('sessions')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('card_id', 'text', (c) => c.notNull().references('cards.id').onDelete('cascade'))
        .addColumn('user_id', 'text')
        .addColumn('device_id', 'text')
        .addColumn('epoch', int64, (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('ended_at', 'text')
        .execute();
      await db.schema.createIndex('sessions_card_idx').on('sessions').column('card_id').execute();
      await db.schema
        .createTable('applied_commands')
        .addColumn('session_id', 'text', (c) => c.notNull().references('sessions.id').onDelete('cascade'))
        .addColumn('seq', int64, (c) => c.notNull())
        .addColumn('card_id', 'text', (c) => c.notNull().references('cards.id').onDelete('cascade'))
        .addColumn('response', bytes, (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('applied_commands_pkey', ['session_id', 'seq'])
        .execute();
      await db.schema
        .createIndex('applied_commands_card_idx')
        .on('applied_commands')
        .column('card_id')
        .execute();
      await db.schema
        .createIndex('applied_commands_created_idx')
        .on('applied_commands')
        .column('created_at')
        .execute();
      // No foreign key to cards: the audit trail outlives the cards it talks about.
      await db.schema
        .createTable('audit_log')
        .addColumn('id', int64, (c) => c.primaryKey())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .addColumn('actor', 'text', (c) => c.notNull())
        .addColumn('event_type', 'text', (c) => c.notNull())
        .addColumn('card_id', 'text')
        .addColumn('details', 'text', (c) => c.notNull())
        .addColumn('prev_hash', bytes, (c) => c.notNull())
        .addColumn('hash', bytes, (c) => c.notNull())
        .execute();
      await db.schema.createIndex('audit_log_card_idx').on('audit_log').column('card_id').execute();
      await db.schema.createIndex('audit_log_created_idx').on('audit_log').column('created_at').execute();
      await db.schema
        .createTable('audit_chain_head')
        .addColumn('id', 'integer', (c) => c.primaryKey().check(sql`id = 1`))
        .addColumn('last_id', int64, (c) => c.notNull())
        .addColumn('last_hash', bytes, (c) => c.notNull())
        .execute();
      await db
        .insertInto('audit_chain_head')
        .values({ id: 1, last_id: 0, last_hash: AUDIT_GENESIS_HASH })
        .execute();
    },
  },
  {
    version: 2,
    name: 'issuing CAs and the certificates they issued (docs/personalization.md)',
    async up(db, dialect) {
      const { bytes, int64 } = types(dialect);
      await db.schema
        .createTable('issuing_cas')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('certificate', bytes, (c) => c.notNull())
        .addColumn('sealed_private_key', bytes, (c) => c.notNull())
        .addColumn('wrapped_data_key', bytes, (c) => c.notNull())
        .addColumn('kek_version', 'integer', (c) => c.notNull())
        .addColumn('key_version', int64, (c) => c.notNull())
        .addColumn('origin', 'text', (c) => c.notNull().check(sql`origin in ('generated', 'imported')`))
        .addColumn('crl_url', 'text', (c) => c.notNull())
        .addColumn('crl_number', int64, (c) => c.notNull().defaultTo(0))
        .addColumn('crl', bytes)
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      // No foreign key to cards: a revoked certificate stays listed after its card is erased.
      await db.schema
        .createTable('issued_certificates')
        .addColumn('serial', 'text', (c) => c.primaryKey())
        .addColumn('ca_id', 'text', (c) => c.notNull().references('issuing_cas.id'))
        .addColumn('card_id', 'text')
        .addColumn('slot', 'integer')
        .addColumn('subject', 'text', (c) => c.notNull())
        .addColumn('not_after', 'text', (c) => c.notNull())
        .addColumn('issued_at', 'text', (c) => c.notNull())
        .addColumn('revoked_at', 'text')
        .addColumn('revocation_reason', 'text')
        .execute();
      await db.schema
        .createIndex('issued_certificates_card_idx')
        .on('issued_certificates')
        .column('card_id')
        .execute();
      await db.schema
        .createIndex('issued_certificates_revoked_idx')
        .on('issued_certificates')
        .columns(['ca_id', 'revoked_at'])
        .execute();
    },
  },
  {
    version: 3,
    name: 'PIN set by the user after a fresh sign-in, and the history of earlier PINs (docs/personalization.md)',
    async up(db, dialect) {
      const { bytes } = types(dialect);
      // 1: the card was made with no PIN known to anyone (blocked until the user sets one).
      await db.schema
        .alterTable('cards')
        .addColumn('pin_unset', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
      // Earlier PINs as keyed, salted verifiers (server/keys/pin-verifier.ts), newest seq last.
      await db.schema
        .createTable('pin_history')
        .addColumn('card_id', 'text', (c) => c.notNull())
        .addColumn('seq', 'integer', (c) => c.notNull())
        .addColumn('verifier', bytes, (c) => c.notNull())
        .addColumn('replaced_at', 'text', (c) => c.notNull())
        .addPrimaryKeyConstraint('pin_history_pk', ['card_id', 'seq'])
        .execute();
    },
  },
  {
    version: 4,
    name: 'issuing CA keys kept inside the PKCS#11 token (ca init --key-in-hsm, docs/personalization.md)',
    async up(db, dialect) {
      const { bytes } = types(dialect);
      // One row per CA whose private key is a token object: its CKA_LABEL and CKA_ID. Such a CA's
      // issuing_cas row holds no sealed key (empty sealed_private_key and wrapped_data_key,
      // kek_version 0) and KEK rotation leaves it alone.
      await db.schema
        .createTable('issuing_ca_token_keys')
        .addColumn('ca_id', 'text', (c) => c.primaryKey().references('issuing_cas.id'))
        .addColumn('key_label', 'text', (c) => c.notNull())
        .addColumn('key_id', bytes, (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
    },
  },
  {
    version: 5,
    name: 'key management keys archived under a recovery certificate (docs/personalization.md)',
    async up(db, dialect) {
      const { bytes } = types(dialect);
      // No foreign key to cards: an archive outlives its card's erasure on purpose (recovering the
      // mail of a lost or erased card is what it is for; docs/security-model.md).
      await db.schema
        .createTable('archived_keys')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('card_id', 'text', (c) => c.notNull())
        // Null once the key is on the card no more (a later enrollment replaced it).
        .addColumn('slot', 'integer')
        .addColumn('public_key_sha256', 'text', (c) => c.notNull())
        .addColumn('certificate_serial', 'text')
        .addColumn('certificate_sha256', 'text')
        .addColumn('recipient_sha256', 'text', (c) => c.notNull())
        .addColumn('envelope', bytes, (c) => c.notNull())
        .addColumn('created_at', 'text', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('archived_keys_card_idx').on('archived_keys').column('card_id').execute();
    },
  },
];

export interface MigrateResult {
  /** Versions applied by this call, in order (empty when the schema was already current). */
  readonly applied: readonly number[];
  /** The schema version now in the database. */
  readonly current: number;
}

/** Brings the schema up to date. Safe to run on every start and from `cardlink server migrate`. */
export async function migrate(
  storage: Storage,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<MigrateResult> {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1)
      throw new StorageError('migration versions must be 1, 2, 3, ...', { version: m.version });
  });
  const applied: number[] = [];
  let current = 0;
  for (const migration of migrations) {
    const done = await storage.transaction(async (tx) => {
      if (tx.dialect === 'postgres')
        await sql`select pg_advisory_xact_lock(${sql.raw(MIGRATION_LOCK_KEY.toString())})`.execute(tx.db);
      await tx.db.schema
        .createTable('schema_migrations')
        .ifNotExists()
        .addColumn('version', 'integer', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('applied_at', 'text', (c) => c.notNull())
        .execute();
      const versions = (await tx.db.selectFrom('schema_migrations').select('version').execute()).map(
        (r) => r.version,
      );
      const newest = Math.max(0, ...versions);
      if (newest > migrations.length) {
        throw new StorageError('the database schema is newer than this cardlink', {
          databaseVersion: newest,
          knownVersion: migrations.length,
        });
      }
      if (versions.includes(migration.version)) return false;
      await migration.up(tx.db, tx.dialect);
      await tx.db
        .insertInto('schema_migrations')
        .values({ version: migration.version, name: migration.name, applied_at: new Date().toISOString() })
        .execute();
      return true;
    });
    if (done) applied.push(migration.version);
    current = migration.version;
  }
  return { applied, current };
}

/** The schema version in the database (0 before the first migration). */
export async function schemaVersion(storage: Storage): Promise<number> {
  try {
    const row = await storage.db
      .selectFrom('schema_migrations')
      .select((eb) => eb.fn.max('version').as('v'))
      .executeTakeFirst();
    return Number(row?.v ?? 0);
  } catch (error) {
    if (isMissingTable(error)) return 0;
    throw toStorageError(error, storage.dialect);
  }
}

function isMissingTable(error: unknown): boolean {
  const e = error as { code?: unknown; message?: unknown } | null;
  return e?.code === '42P01' || (typeof e?.message === 'string' && e.message.startsWith('no such table'));
}
