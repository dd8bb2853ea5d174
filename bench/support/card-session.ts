/**
 * One card opened the way a card server's session opens it, for benchmarks of the server's own
 * work without a network: the admin function creates the card (default profile: 9A RSA-2048 PIN
 * once, 9E P-256 PIN never, ...), the card is claimed for a session and opened through
 * `openPersistentCardState`, and a real PivCard answers. Production code only; nothing from test/.
 */
import { PivCard } from '../../apdu/piv/index.js';
import { createCard, loadDefaultProfile } from '../../server/admin/index.js';
import { openPersistentCardState, type PersistentCardState } from '../../server/cards/index.js';
import type { KekProvider } from '../../server/keys/kek-provider.js';
import { claimCard, type Storage } from '../../server/storage/index.js';

/** The benchmark card's PIN (its PUK is generated and unused). */
export const BENCH_CARD_PIN = '123456';

export interface BenchCardSession {
  readonly state: PersistentCardState;
  readonly card: PivCard;
  /** The next command sequence number of the session (`runCommand` takes them in order). */
  nextSeq(): number;
}

/** Creates a card for a benchmark user and opens it as a session (storage migrated already). */
export async function openBenchCardSession(storage: Storage, kek: KekProvider): Promise<BenchCardSession> {
  const created = await createCard({
    storage,
    kek,
    user: { issuer: 'https://idp.bench.invalid', subject: 'bench-user', tenant: 'bench' },
    profile: await loadDefaultProfile(),
    pin: BENCH_CARD_PIN,
    actor: 'admin:bench',
  });
  const sessionId = 'bench-session';
  const epoch = await storage.transaction((tx) => claimCard(tx, { cardId: created.cardId, sessionId }));
  const state = await openPersistentCardState({
    storage,
    kek,
    cardId: created.cardId,
    sessionId,
    epoch,
    actor: 'user:bench',
  });
  let seq = 0;
  return { state, card: new PivCard(state), nextSeq: () => seq++ };
}
