/**
 * Test helpers (not a test file): a card made by the admin functions, opened by a session through
 * `openPersistentCardState` and a real `PivCard`, and a host that drives it with APDUs.
 */
import { randomUUID } from 'node:crypto';
import { PivCard } from '../../../../apdu/piv/index.js';
import {
  createCard,
  loadDefaultProfile,
  parseCardProfile,
  profileToJson,
  type CreatedCard,
} from '../../../../server/admin/index.js';
import { openPersistentCardState, type PersistentCardState } from '../../../../server/cards/index.js';
import type { KekProvider } from '../../../../server/keys/kek-provider.js';
import { claimCard, type Storage } from '../../../../server/storage/index.js';
import { Host } from '../../../apdu/piv/support/host.js';

export const CARD_PIN = '123456';
export const CARD_PUK = '12345678';
/** AES-192 management key of test cards (the default profile's algorithm). */
export const CARD_MGMT_KEY = Buffer.from('0102030405060708090a0b0c0d0e0f101112131415161718', 'hex');

export const pinBytes = (pin: string): Uint8Array => new Uint8Array(Buffer.from(pin, 'latin1'));

/** A card from the default profile (overrides merged into its JSON), with known secrets. */
export async function createTestCard(
  storage: Storage,
  kek: KekProvider,
  overrides: Record<string, unknown> = {},
  options: { tenant?: string; subject?: string; recoveryCertificate?: string } = {},
): Promise<CreatedCard> {
  const base = profileToJson(await loadDefaultProfile());
  // The tests' PINs (123456, 654321) are trivial: the PIN policy is tested in pin-rules.test.ts.
  base.pin = { ...(base.pin as object), rejectTrivial: false };
  const profile = parseCardProfile({ ...base, ...overrides });
  return createCard({
    storage,
    kek,
    user: {
      issuer: 'https://idp.example',
      subject: options.subject ?? `user-${randomUUID()}`,
      tenant: options.tenant ?? 'tenant-test',
    },
    profile,
    pin: CARD_PIN,
    puk: CARD_PUK,
    managementKey: CARD_MGMT_KEY,
    // A profile with archiveKeyManagementKey needs it (server/archival/).
    ...(options.recoveryCertificate ? { recoveryCertificate: options.recoveryCertificate } : {}),
    actor: 'admin:test',
  });
}

export interface Session {
  readonly sessionId: string;
  readonly epoch: number;
  readonly state: PersistentCardState;
  readonly card: PivCard;
  /** Drives the card through `runCommand` with consecutive sequence numbers. */
  readonly host: Host;
  /** Drives the card directly (each store call its own unit). */
  readonly directHost: Host;
  nextSeq(): number;
}

/** Claims the card for a new session and opens it. */
export async function openSession(storage: Storage, kek: KekProvider, cardId: string): Promise<Session> {
  const sessionId = randomUUID();
  const epoch = await storage.transaction((tx) => claimCard(tx, { cardId, sessionId }));
  const state = await openPersistentCardState({
    storage,
    kek,
    cardId,
    sessionId,
    epoch,
    actor: `user:test`,
  });
  const card = new PivCard(state);
  let seq = 0;
  const nextSeq = () => seq++;
  const host = new Host({
    transmit: async (apdu) =>
      (await state.runCommand(nextSeq(), (view) => card.transmit(apdu, view))).response,
  });
  return { sessionId, epoch, state, card, host, directHost: new Host(card), nextSeq };
}

/** Audit entries of one card and type, oldest first. */
export async function auditOf(
  storage: Storage,
  cardId: string,
  eventType: string,
): Promise<{ id: number; details: Record<string, unknown> }[]> {
  const rows = await storage.db
    .selectFrom('audit_log')
    .select(['id', 'details'])
    .where('card_id', '=', cardId)
    .where('event_type', '=', eventType)
    .orderBy('id')
    .execute();
  return rows.map((r) => ({ id: r.id, details: JSON.parse(r.details) as Record<string, unknown> }));
}
