/**
 * The card profile's PIN policy as the card server enforces it (docs/personalization.md, "PIN"):
 * the content rules of `apdu/piv/pin-policy.ts` (length, digits, no trivial sequences) and the
 * history of the last `history` PINs, on every way a PIN gets a new value: CHANGE REFERENCE DATA,
 * RESET RETRY COUNTER (reference-store.ts) and the set-PIN after a fresh sign-in
 * (pin-by-sign-in.ts).
 *
 * The policy is read from the profile stored with the card, so a card keeps the rules it was made
 * with. A card made before these members existed gets the lengths of its profile and no further
 * rule (rejectTrivial false, history 0, resetBySignIn false).
 */
import type { PinContentRules, PinPolicyRefusal } from '../../apdu/piv/index.js';
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
 * transaction. A verifier under a PIN key version the provider no longer has cannot be compared
 * and counts as no match (KEK rotation only keeps the versions current verifiers use).
 */
export async function isRecentPin(
  kek: KekProvider,
  cardId: string,
  rules: CardPinRules,
  verifiers: readonly Uint8Array[],
  value: Uint8Array,
): Promise<boolean> {
  for (const verifier of verifiers.slice(0, rules.history)) {
    try {
      if ((await checkPinVerifier(kek, { cardId, kind: 'pin' }, verifier, value)).match) return true;
    } catch {
      // An old verifier under a retired PIN key: not comparable, not a match.
    }
  }
  return false;
}
