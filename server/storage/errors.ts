import { CardlinkError } from '../../protocol/errors.js';

/** A database operation failed (connection, constraint, lock). The cause holds the driver's error. */
export class StorageError extends CardlinkError {
  constructor(
    message: string,
    context: Record<string, string | number | boolean> = {},
    options?: { cause?: unknown },
  ) {
    super('ERR_STORAGE', message, context, options);
    this.name = 'StorageError';
  }
}

export class CardNotFoundError extends CardlinkError {
  constructor(cardId: string) {
    super('ERR_CARD_NOT_FOUND', 'no such card', { cardId });
    this.name = 'CardNotFoundError';
  }
}

/**
 * Another session claimed the card after this one (its epoch is stale). The write was not made;
 * the session must stop serving the card.
 */
export class CardTakenOverError extends CardlinkError {
  constructor(cardId: string, epoch: number) {
    super('ERR_CARD_TAKEN_OVER', 'the card was claimed by another session', { cardId, epoch });
    this.name = 'CardTakenOverError';
  }
}

/** `recordCommand` for a (session, sequence) that already has a recorded response. */
export class CommandAlreadyRecordedError extends CardlinkError {
  constructor(sessionId: string, seq: number) {
    super('ERR_COMMAND_ALREADY_RECORDED', 'a response is already recorded for this command', {
      sessionId,
      seq,
    });
    this.name = 'CommandAlreadyRecordedError';
  }
}
