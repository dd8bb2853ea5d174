/**
 * Child process of kill-consistency.test.ts (not a test file). Claims the card, prints `ready`,
 * then loops until it is killed: generates a key in 9A (P-256 and RSA-2048 in turn) and changes
 * the PIN from one value to the other, each as a recorded command of its session.
 *
 *   node kill-child.js <database url> <key file> <card id> <current PIN> <other PIN>
 */
import { randomUUID } from 'node:crypto';
import { openPersistentCardState } from '../../../../server/cards/index.js';
import { openKeyFileProvider } from '../../../../server/keys/key-file-provider.js';
import { claimCard, openStorage } from '../../../../server/storage/index.js';

const [url, keyFile, cardId, currentPin, otherPin] = process.argv.slice(2);
if (!url || !keyFile || !cardId || !currentPin || !otherPin) {
  process.stderr.write('usage: kill-child <url> <key file> <card id> <pin> <other pin>\n');
  process.exit(64);
}
const bytes = (pin: string) => new Uint8Array(Buffer.from(pin, 'latin1'));
const OK = Uint8Array.of(0x90, 0x00);

const storage = await openStorage(url);
const kek = await openKeyFileProvider(keyFile, { create: false });
const sessionId = randomUUID();
const epoch = await storage.transaction((tx) => claimCard(tx, { cardId, sessionId }));
const state = await openPersistentCardState({
  storage,
  kek,
  cardId,
  sessionId,
  epoch,
  actor: 'user:kill-child',
});
process.stdout.write('ready\n');

const pins = [currentPin, otherPin];
let seq = 0;
for (let cycle = 0; ; cycle++) {
  const algorithm = cycle % 2 === 0 ? 'ECCP256' : 'RSA2048';
  await state.runCommand(seq++, async (view) => {
    await view.keys.generate(0x9a, algorithm, 'once');
    return OK;
  });
  // The parent may wait for this before it picks its moment to kill (see kill-consistency.test.ts).
  if (cycle === 0) process.stdout.write('generated\n');
  await state.runCommand(seq++, async (view) => {
    const outcome = await view.references.change('pin', bytes(pins[0]!), bytes(pins[1]!));
    if (!outcome.ok) throw new Error('the child lost track of the PIN');
    return OK;
  });
  pins.reverse();
}
