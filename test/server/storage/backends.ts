/**
 * Test helpers (not a test file): the two database backends, and a card fixture. Tests of DB-level
 * behaviour run once per entry of `BACKENDS`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createTestDatabase } from '../../support/postgres.js';
import {
  claimCard,
  createCard,
  createTenant,
  ensureUser,
  findTenant,
  INITIAL_CARD_VERSION,
  MANAGEMENT_KEY_SLOT,
  migrate,
  newCardId,
  openStorage,
  type CardRecord,
  type OpenStorageOptions,
  type Storage,
} from '../../../server/storage/index.js';
import { openKeyFileProvider } from '../../../server/keys/key-file-provider.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { createPinVerifier } from '../../../server/keys/pin-verifier.js';
import { sealSecret } from '../../../server/keys/sealing.js';

export const BACKENDS = ['sqlite', 'postgres'] as const;
export type BackendKind = (typeof BACKENDS)[number];

export interface Backend {
  readonly kind: BackendKind;
  readonly url: string;
  /** A new, migrated storage on the backend's database (PostgreSQL: as many as you like). */
  open(options?: OpenStorageOptions): Promise<Storage>;
  /** Closes every storage opened here and removes the database. */
  cleanup(): Promise<void>;
}

export async function createBackend(kind: BackendKind): Promise<Backend> {
  const opened: Storage[] = [];
  let url: string;
  let remove: () => Promise<void>;
  if (kind === 'sqlite') {
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-sqlite-'));
    url = `sqlite:${join(dir, 'cardlink.db')}`;
    remove = () => rm(dir, { recursive: true, force: true });
  } else {
    const database = await createTestDatabase();
    url = database.url;
    remove = () => database.drop();
  }
  return {
    kind,
    url,
    async open(options) {
      const storage = await openStorage(url, options);
      opened.push(storage);
      await migrate(storage);
      return storage;
    },
    async cleanup() {
      for (const s of opened) await s.close();
      await remove();
    },
  };
}

/** A key file provider in a fresh temp dir. */
export async function tempKeyFileProvider(): Promise<{
  provider: KekProvider;
  path: string;
  cleanup(): Promise<void>;
}> {
  const dir = await mkdtemp(join(tmpdir(), 'cardlink-keys-'));
  const path = join(dir, 'keys.json');
  const provider = await openKeyFileProvider(path);
  return {
    provider,
    path,
    async cleanup() {
      await provider.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export const TEST_PIN = Buffer.from('123456\xff\xff', 'latin1');
export const TEST_PUK = Buffer.from('12345678', 'latin1');
export const TEST_MGMT_KEY = Buffer.alloc(32, 0x42);

let serial = Math.floor(Math.random() * 1_000_000);

/** A tenant, a user and a card with PIN, PUK and a sealed management key. */
export async function createFixtureCard(
  storage: Storage,
  provider: KekProvider,
  options: { pinRetries?: number; pukRetries?: number; tenantId?: string } = {},
): Promise<CardRecord> {
  const id = newCardId();
  const tenantId = options.tenantId ?? randomUUID();
  const pinVerifier = await createPinVerifier(provider, { cardId: id, kind: 'pin' }, TEST_PIN);
  const pukVerifier = await createPinVerifier(provider, { cardId: id, kind: 'puk' }, TEST_PUK);
  const managementKey = await sealSecret(
    provider,
    TEST_MGMT_KEY,
    { tenantId, cardId: id, slot: MANAGEMENT_KEY_SLOT },
    INITIAL_CARD_VERSION,
  );
  return storage.transaction(async (tx) => {
    if (!(await findTenant(tx, tenantId))) await createTenant(tx, 'test tenant', tenantId);
    const user = await ensureUser(tx, tenantId, 'https://idp.example', `user-${randomUUID()}`);
    return createCard(tx, {
      id,
      tenantId,
      userId: user.id,
      label: 'test card',
      profile: { slots: ['9a', '9c'] },
      serial: serial++,
      guid: randomBytes(16),
      pinVerifier,
      pinRetriesLimit: options.pinRetries ?? 3,
      pukVerifier,
      pukRetriesLimit: options.pukRetries ?? 3,
      managementKeyAlgorithm: 'AES256',
      managementKey,
    });
  });
}

/** Claims the card for a new session id; returns the session id and epoch. */
export async function claim(storage: Storage, cardId: string): Promise<{ sessionId: string; epoch: number }> {
  const sessionId = randomUUID();
  const epoch = await storage.transaction((tx) => claimCard(tx, { cardId, sessionId }));
  return { sessionId, epoch };
}
