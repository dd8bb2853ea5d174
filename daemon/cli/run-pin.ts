/**
 * `cardlink pin change|unblock`, run: choose the card, read the secrets (secret-input.ts), send one
 * `change-pin` / `unblock-pin` request to the daemon and say what the card answered, with an exit
 * status per answer (pin-words.ts).
 */
import type { PinOperation } from '../../apdu/piv/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import type { CardStatus, PinResult } from '../control/control-protocol.js';
import { configFrom, out, withDaemon } from './cli-common.js';
import type { PinArgs } from './pin-command.js';
import { describePinResult, pinExitStatus } from './pin-words.js';
import { readSecrets } from './secret-input.js';

/**
 * The card `wanted` names (its id, else its label), or the only card in the reader. ERR_USAGE when
 * that is ambiguous, ERR_CARD_NOT_FOUND when there is none.
 */
export function chooseCard(cards: readonly CardStatus[], wanted: string | undefined): CardStatus {
  const inReader = cards.filter((c) => c.state === 'inserted');
  const list = (cs: readonly CardStatus[]) => cs.map((c) => `"${c.label}" (${c.cardId})`).join(', ');
  if (wanted === undefined) {
    if (inReader.length === 1) return inReader[0]!;
    if (inReader.length === 0)
      throw new CardlinkError('ERR_CARD_NOT_FOUND', 'no card is in the reader: sign in and connect first');
    throw new CardlinkError(
      'ERR_USAGE',
      `several cards are in the reader; name one with --card: ${list(inReader)}`,
    );
  }
  const byId = cards.find((c) => c.cardId === wanted);
  const byLabel = cards.filter((c) => c.label === wanted);
  if (!byId && byLabel.length > 1)
    throw new CardlinkError(
      'ERR_USAGE',
      `several cards are labelled "${wanted}"; name one by id: ${list(byLabel)}`,
    );
  const card = byId ?? byLabel[0];
  if (!card)
    throw new CardlinkError('ERR_CARD_NOT_FOUND', `no card "${wanted}"; the cards: ${list(cards) || 'none'}`);
  if (card.state !== 'inserted')
    throw new CardlinkError('ERR_CARD_NOT_FOUND', `card "${card.label}" is not in the reader: connect first`);
  return card;
}

const PROMPTS: Record<PinOperation, { proof: string; fromStdin: string }> = {
  change: { proof: 'Current PIN: ', fromStdin: 'the current PIN, the new PIN' },
  unblock: { proof: 'PUK: ', fromStdin: 'the PUK, the new PIN' },
};

export async function runPin(operation: PinOperation, args: PinArgs): Promise<void> {
  const terminal = process.stdin.isTTY === true;
  const result = await withDaemon(configFrom(args), async (c): Promise<PinResult> => {
    const card = chooseCard(await c.request('cards'), args.card);
    if (terminal) out(`${operation === 'change' ? 'Changing' : 'Unblocking'} the PIN of "${card.label}".`);
    const prompts = terminal
      ? [PROMPTS[operation].proof, 'New PIN: ', 'New PIN again: ']
      : [PROMPTS[operation].proof, 'New PIN: '];
    const [proof, newPin, again] = await readSecrets(prompts, {
      input: process.stdin,
      prompts: process.stderr,
    });
    if (!proof || !newPin)
      throw new CardlinkError('ERR_USAGE', 'an empty line: nothing was sent to the card');
    if (terminal && newPin !== again)
      throw new CardlinkError('ERR_USAGE', 'the two new PINs differ: nothing was sent to the card');
    return operation === 'change'
      ? c.request('change-pin', { cardId: card.cardId, currentPin: proof, newPin })
      : c.request('unblock-pin', { cardId: card.cardId, puk: proof, newPin });
  });
  const answer = describePinResult(operation, result);
  out(answer.text);
  process.exitCode = pinExitStatus(result);
}
