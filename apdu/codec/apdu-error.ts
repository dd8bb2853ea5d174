import { CardlinkError } from '../../protocol/errors.js';
import { describeStatusWord, type StatusWord } from './status-words.js';

/**
 * A command the card must refuse with a specific status word. Card code throws it;
 * the dispatcher turns it into a response APDU. The message never carries APDU data.
 */
export class ApduError extends CardlinkError {
  readonly sw: StatusWord;

  constructor(sw: StatusWord, reason: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_APDU_MALFORMED', `${describeStatusWord(sw)}: ${reason}`, { ...context, sw });
    this.name = 'ApduError';
    this.sw = sw;
  }
}
