/**
 * The card profile's PIN and PUK policies as the card server enforces them (docs/personalization.md,
 * "PIN"); the PIN's:
 * the content rules of `apdu/piv/pin-policy.ts` (length, digits, no trivial sequences) and the
 * history of the last `history` PINs, on every way a PIN gets a new value: CHANGE REFERENCE DATA,
 * RESET RETRY COUNTER (reference-store.ts) and the set-PIN after a fresh sign-in
 * (pin-by-sign-in.ts).
 *
 * The policy is read from the profile stored with the card, so a card keeps the rules it was made
 * with. A card made before these members existed gets the lengths of its profile and no further
 * rule (rejectTrivial false, history 0, resetBySignIn false).
 */
import type { PinContentRules, PinPolicyRefusal, PukContentRules } from '../../apdu/piv/index.js';
import { CardStateError } from '../../apdu/piv/crypto/index.js';
import {
  MAX_PIN_HISTORY,
  pinContentRefusal,
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
} from '../../apdu/piv/index.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { checkPinVerifier } from '../keys/pin-verifier.js';

export interface CardPinRules extends PinContentRules {
  /** How many of the last PINs a new one must differ from (the current one included). */
  readonly history: number;
  /** Whether a user who forgot the PIN may set a new one after a fresh sign-in. */
  readonly resetBySignIn: boolean;
}

/** The PIN rules in a stored profile (tolerant: stored profiles were checked when the card was made). */
export function pinRulesOf(profile: unknown): CardPinRules {
  const pin = (profile as { pin?: Record<string, unknown> } | null)?.pin ?? {};
  const int = (v: unknown, fallback: number, min: number, max: number) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max ? v : fallback;
  const minLength = int(
    pin.minLength,
    REFERENCE_DATA_MIN_BYTES,
    REFERENCE_DATA_MIN_BYTES,
    REFERENCE_DATA_MAX_BYTES,
  );
  return {
    minLength,
    maxLength: int(pin.maxLength, REFERENCE_DATA_MAX_BYTES, minLength, REFERENCE_DATA_MAX_BYTES),
    rejectTrivial: pin.rejectTrivial === true,
    history: int(pin.history, 0, 0, MAX_PIN_HISTORY),
    resetBySignIn: pin.resetBySignIn === true,
  };
}

/**
 * The PUK rules in a stored profile (`puk`: lengths and rejectTrivial, apdu/piv/pin-policy.ts).
 * A card made before `puk.rejectTrivial` existed gets its profile's lengths and no further rule.
 */
export function pukRulesOf(profile: unknown): PukContentRules {
  const puk = (profile as { puk?: Record<string, unknown> } | null)?.puk ?? {};
  const int = (v: unknown, fallback: number, min: number) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= REFERENCE_DATA_MAX_BYTES ? v : fallback;
  const minLength = int(puk.minLength, REFERENCE_DATA_MIN_BYTES, REFERENCE_DATA_MIN_BYTES);
  return {
    minLength,
    maxLength: int(puk.maxLength, REFERENCE_DATA_MAX_BYTES, minLength),
    rejectTrivial: puk.rejectTrivial === true,
  };
}

/** A refusal of the PUK policy, as the card reports it (`6A80`, no try consumed). */
export function pukPolicyError(refusal: PinPolicyRefusal): CardStateError {
  return new CardStateError('PIN_POLICY', `the new PUK breaks the card's PUK policy (${refusal})`, {
    refusal,
    reference: 'puk',
  });
}

/** Throws `pukPolicyError` for a new PUK that breaks the content rules. */
export function checkPukContent(rules: PukContentRules, value: Uint8Array): void {
  const refusal = pinContentRefusal(rules, value);
  if (refusal) throw pukPolicyError(refusal);
}

/** A refusal of the policy, as the card reports it (`6A80`, no try consumed). */
export function pinPolicyError(refusal: PinPolicyRefusal): CardStateError {
  return new CardStateError('PIN_POLICY', `the new PIN breaks the card's PIN policy (${refusal})`, {
    refusal,
  });
}

/** Throws `pinPolicyError` for a value that breaks the content rules. */
export function checkPinContent(rules: CardPinRules, value: Uint8Array): void {
  const refusal = pinContentRefusal(rules, value);
  if (refusal) throw pinPolicyError(refusal);
}

/**
 * Whether `value` is one of the PINs behind `verifiers` (the current one first, then the history,
 * newest first; only the first `rules.history` count). Calls the key provider: never inside a
 * transaction. A verifier that cannot be compared (its PIN key version gone) fails the check
 * (ERR_KEY_PROVIDER) instead of counting as no match: a policy that silently forgot its history
 * would accept the PIN it exists to refuse. `retirePinKeyVersion` (server/keys/rewrap.ts) keeps
 * every version a history verifier uses, so this only happens to a key provider that lost one.
 */
export async function isRecentPin(
  kek: KekProvider,
  cardId: string,
  rules: CardPinRules,
  verifiers: readonly Uint8Array[],
  value: Uint8Array,
): Promise<boolean> {
  for (const verifier of verifiers.slice(0, rules.history)) {
    if ((await checkPinVerifier(kek, { cardId, kind: 'pin' }, verifier, value)).match) return true;
  }
  return false;
}
