/**
 * The issuer's PIN rules beyond the card's own (6..8 bytes, `reference-data.ts`): what a new PIN
 * must be under a card profile's PIN policy. SP 800-73-4 Part 2 section 2.4.3 leaves the PIN's
 * content to the issuer; SP 800-63B section 5.1.1.2 asks verifiers to refuse values that are
 * repetitive or sequential ("aaaaaa", "1234abcd"), which is the `rejectTrivial` rule here.
 *
 * Pure: the card server applies these rules on CHANGE REFERENCE DATA, RESET RETRY COUNTER and the
 * set-PIN after a fresh sign-in (server/cards/pin-rules.ts); the history of earlier PINs needs
 * the server's verifiers and is checked there.
 */

/** Why a new PIN was refused; stable names shared by the server's answers, the CLI and the PIN page. */
export type PinPolicyRefusal = 'too-short' | 'too-long' | 'not-digits' | 'trivial' | 'reused';

export const PIN_POLICY_REFUSALS: readonly PinPolicyRefusal[] = [
  'too-short',
  'too-long',
  'not-digits',
  'trivial',
  'reused',
];

/** The content rules of a PIN (or PUK) policy (lengths in digits, 6..8). */
export interface PinContentRules {
  readonly minLength: number;
  readonly maxLength: number;
  /** Refuse one repeated digit (111111) and runs up or down by one (123456, 876543). */
  readonly rejectTrivial: boolean;
}

/**
 * The PUK's policy (a card profile's `puk`) takes the same content rules: lengths, digits and
 * `rejectTrivial`, applied wherever a PUK gets a value (create-card, CHANGE REFERENCE DATA on
 * key reference 81). SP 800-73-4 Part 2 section 2.4.3 makes the PUK 8 bytes of any value; the
 * card takes 6..8 bytes like the YubiKey (`reference-data.ts`), and the profile narrows that to
 * digits a person can type at a PUK prompt (8 by default). It has no history: the PUK is the
 * issuer's, rarely changed, and its verifier is not kept once replaced.
 */
export type PukContentRules = PinContentRules;

/** How many earlier PINs a profile may keep to refuse their reuse (`pin.history`). */
export const MAX_PIN_HISTORY = 24;

const DIGIT_0 = 0x30;
const DIGIT_9 = 0x39;

/**
 * True for a value of one repeated byte, or of digits that each go up by one or each go down by
 * one (no wrap-around: 890123 is not a run). These are the first guesses of anyone holding a lost
 * card, so a try counter of 3 would not protect them.
 */
export function isTrivialPin(value: Uint8Array): boolean {
  if (value.length < 2) return true;
  const step = value[1]! - value[0]!;
  if (step !== 0 && step !== 1 && step !== -1) return false;
  for (let i = 1; i < value.length; i++) if (value[i]! - value[i - 1]! !== step) return false;
  return true;
}

/**
 * The first content rule `value` (a PIN or PUK without padding) breaks, or undefined when it keeps
 * them all.
 */
export function pinContentRefusal(rules: PinContentRules, value: Uint8Array): PinPolicyRefusal | undefined {
  for (const b of value) if (b < DIGIT_0 || b > DIGIT_9) return 'not-digits';
  if (value.length < rules.minLength) return 'too-short';
  if (value.length > rules.maxLength) return 'too-long';
  if (rules.rejectTrivial && isTrivialPin(value)) return 'trivial';
  return undefined;
}
