/**
 * The card's answer to a PIN change or unblock in words, for `cardlink pin` and the tray's PIN page
 * (one wording for both), and the exit status the CLI gives each answer.
 */
import {
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
  type PinOperation,
} from '../../apdu/piv/index.js';
import type { PinPolicyRefusal } from '../../apdu/piv/index.js';
import type { PinResult, SetPinResult } from '../control/control-protocol.js';

/** What to tell the person; `ok` only when the card did it. */
export interface PinAnswer {
  readonly ok: boolean;
  readonly text: string;
}

const NAME = { pin: 'PIN', puk: 'PUK' } as const;

function tries(n: number): string {
  return n === 1 ? '1 try left' : `${n} tries left`;
}

export function describePinResult(operation: PinOperation, result: PinResult): PinAnswer {
  switch (result.outcome) {
    case 'done':
      return {
        ok: true,
        text:
          operation === 'change'
            ? 'Done: the PIN is changed.'
            : 'Done: the PIN is unblocked and set to the new PIN.',
      };
    case 'wrong':
      return {
        ok: false,
        text:
          `Wrong ${operation === 'change' ? 'current PIN' : 'PUK'}: ${tries(result.triesLeft)} ` +
          `before the ${NAME[result.reference]} is blocked. Nothing was changed.`,
      };
    case 'blocked':
      return {
        ok: false,
        text:
          result.reference === 'pin'
            ? 'The PIN is blocked. Unblock it with the PUK (Unblock PIN).'
            : 'The PUK is blocked: the PIN cannot be unblocked any more. Ask your administrator for a new card.',
      };
    case 'new-pin-invalid':
      return {
        ok: false,
        text: `The new PIN must be ${result.minLength} to ${result.maxLength} digits. Nothing was changed.`,
      };
    case 'value-invalid':
      return {
        ok: false,
        // 6A80: the daemon already checked the lengths it knows, so this is mostly the card's PIN
        // policy (apdu/piv/pin-policy.ts), whose rule the card cannot name in a status word.
        text:
          `The card refused the new PIN: it breaks your organisation's PIN policy (no simple ` +
          `sequences like 123456 or 111111, not one of your recent PINs, the allowed length), or the ` +
          `${operation === 'change' ? 'current PIN' : 'PUK'} is not ` +
          `${REFERENCE_DATA_MIN_BYTES} to ${REFERENCE_DATA_MAX_BYTES} characters. Nothing was changed.`,
      };
    case 'refused':
      return {
        ok: false,
        text: `The card refused (status ${result.statusWord.toString(16).toUpperCase().padStart(4, '0')}). Nothing was changed.`,
      };
  }
}

/**
 * The exit status of `cardlink pin` for each answer (docs/cli.md): 0 done, 2 wrong PIN or PUK
 * (tries left), 3 blocked, 65 (EX_DATAERR) a new PIN outside the rule or a value that cannot be a
 * PIN, 1 anything else the card refused.
 */
export function pinExitStatus(result: PinResult): number {
  switch (result.outcome) {
    case 'done':
      return 0;
    case 'wrong':
      return 2;
    case 'blocked':
      return 3;
    case 'new-pin-invalid':
    case 'value-invalid':
      return 65;
    case 'refused':
      return 1;
  }
}

/** Each PIN policy rule in words (apdu/piv/pin-policy.ts). */
export const PIN_POLICY_WORDS: Record<PinPolicyRefusal, string> = {
  'too-short': 'The new PIN is too short for your card.',
  'too-long': 'The new PIN is too long for your card.',
  'not-digits': 'The new PIN must be digits only.',
  trivial: 'The new PIN is too simple: no repeated digit (111111) and no run up or down (123456, 654321).',
  reused: 'The new PIN is one of your recent PINs: choose one you have not used before.',
};

/** The card server's answer to a set-PIN after a fresh sign-in, in words. */
export function describeSetPinResult(result: SetPinResult): PinAnswer {
  switch (result.outcome) {
    case 'done':
      return {
        ok: true,
        text: result.kind === 'first' ? 'Done: your PIN is set.' : 'Done: your new PIN is set and unblocked.',
      };
    case 'sign-in-not-fresh':
      return {
        ok: false,
        text: 'Your sign-in is too old to set a PIN. Sign in again, then set the PIN right away. Nothing was changed.',
      };
    case 'not-allowed':
      return {
        ok: false,
        text: "Your organisation does not let a sign-in replace this card's PIN: use Unblock PIN with the PUK, or ask your administrator.",
      };
    case 'policy':
      return { ok: false, text: `${PIN_POLICY_WORDS[result.refusal]} Nothing was changed.` };
  }
}

/**
 * The exit status of `cardlink pin set` for each answer (docs/cli.md), the statuses of the error
 * codes the server would give the same refusal: 0 done, 77 the sign-in is not fresh or the profile
 * lets no sign-in replace the PIN (ERR_SIGN_IN_NOT_FRESH, ERR_PIN_SET_NOT_ALLOWED), 65 the PIN
 * policy refused the new PIN (ERR_PIN_POLICY).
 */
export function setPinExitStatus(result: SetPinResult): number {
  switch (result.outcome) {
    case 'done':
      return 0;
    case 'sign-in-not-fresh':
    case 'not-allowed':
      return 77;
    case 'policy':
      return 65;
  }
}
