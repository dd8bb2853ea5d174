import { CardlinkError } from '../../protocol/errors.js';

/**
 * The persistent card state was disposed (logout, takeover, close): it holds no key any more and
 * refuses every call. Open a new one after claiming the card again.
 */
export class CardStateClosedError extends CardlinkError {
  constructor(cardId: string) {
    super('ERR_CARD_STATE', 'the card state was disposed', { cardId, reason: 'closed' });
    this.name = 'CardStateClosedError';
  }
}

/**
 * A store method was called outside the command that is running on the same card state
 * (`runCommand`). Its writes would not belong to the command, and on SQLite its transaction would
 * wait for the command's own: route every call of a running command through it.
 */
export class OutsideCommandError extends CardlinkError {
  constructor(cardId: string) {
    super('ERR_INTERNAL', 'card state called outside the running command', { cardId });
    this.name = 'OutsideCommandError';
  }
}
