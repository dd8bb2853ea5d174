import { CardlinkError, type CardlinkErrorCode } from '../../protocol/errors.js';
import { describeStatusWord, type StatusWord } from './status-words.js';

/**
 * The stable error code of each ISO/IEC 7816-4 status word class (section 5.6, table 5), by SW1.
 * Callers match the class (`ERR_APDU_WRONG_PARAMETERS`), and `sw` for the exact status word.
 */
export const APDU_ERROR_CODE_BY_SW1: ReadonlyMap<number, CardlinkErrorCode> = new Map<
  number,
  CardlinkErrorCode
>([
  // Warning processing: 62 memory unchanged, 63 memory changed (63Cx: verification failed).
  [0x62, 'ERR_APDU_WARNING'],
  [0x63, 'ERR_APDU_WARNING'],
  // Execution errors: 64 memory unchanged, 65 memory changed, 66 security-related.
  [0x64, 'ERR_APDU_EXECUTION_ERROR'],
  [0x65, 'ERR_APDU_EXECUTION_ERROR'],
  [0x66, 'ERR_APDU_EXECUTION_ERROR'],
  // Checking errors, one class each.
  [0x67, 'ERR_APDU_WRONG_LENGTH'],
  [0x68, 'ERR_APDU_CLA_FUNCTION_NOT_SUPPORTED'],
  [0x69, 'ERR_APDU_COMMAND_NOT_ALLOWED'],
  // 6A wrong parameters with SW2 saying which (incorrect data, not found, ...), 6B without.
  [0x6a, 'ERR_APDU_WRONG_PARAMETERS'],
  [0x6b, 'ERR_APDU_WRONG_PARAMETERS'],
  [0x6c, 'ERR_APDU_WRONG_LE'],
  [0x6d, 'ERR_APDU_INS_NOT_SUPPORTED'],
  [0x6e, 'ERR_APDU_CLA_NOT_SUPPORTED'],
  [0x6f, 'ERR_APDU_NO_PRECISE_DIAGNOSIS'],
]);

/**
 * The code of an ApduError with status word `sw`: its ISO 7816-4 class, or `ERR_APDU_MALFORMED`
 * for a status word outside the warning and error classes (no card code throws one).
 */
export function apduErrorCode(sw: StatusWord): CardlinkErrorCode {
  return APDU_ERROR_CODE_BY_SW1.get((sw >>> 8) & 0xff) ?? 'ERR_APDU_MALFORMED';
}

/**
 * A command the card must refuse with a specific status word. Card code throws it;
 * the dispatcher turns it into a response APDU. The message never carries APDU data.
 */
export class ApduError extends CardlinkError {
  readonly sw: StatusWord;

  constructor(sw: StatusWord, reason: string, context: Record<string, string | number | boolean> = {}) {
    super(apduErrorCode(sw), `${describeStatusWord(sw)}: ${reason}`, { ...context, sw });
    this.name = 'ApduError';
    this.sw = sw;
  }
}
