import { ApduError, SW } from '../codec/index.js';
import type { PinPolicy } from './card-state.js';
import { KEY_REF, YK_PIN_POLICY, YK_TOUCH_POLICY } from './constants.js';

/**
 * PIN policy per slot (SP 800-73-4 Part 1 section 3.2 / Table 4b access rules; Yubico PIN
 * policy model): 9A PIV Authentication "once", 9C Digital Signature "always" (PIN right before
 * each use), 9D Key Management "once", 9E Card Authentication "never", retired 82..95 "once".
 * A key generated or imported with an explicit Yubico PIN policy (tag AA) keeps that policy.
 */
export function defaultPinPolicy(slot: number): PinPolicy {
  if (slot === KEY_REF.DIGITAL_SIGNATURE) return 'always';
  if (slot === KEY_REF.CARD_AUTHENTICATION) return 'never';
  return 'once';
}

/**
 * The PIN policy asked for by a Yubico `AA` byte (undefined: absent). 00 means the slot default;
 * the biometric "match" policies (04, 05) and unknown values are `6A80`.
 */
export function pinPolicyFromYubico(value: Uint8Array | undefined, slot: number): PinPolicy {
  if (value === undefined) return defaultPinPolicy(slot);
  if (value.length !== 1) throw new ApduError(SW.INCORRECT_DATA, 'PIN policy must be one byte');
  switch (value[0]) {
    case YK_PIN_POLICY.default:
      return defaultPinPolicy(slot);
    case YK_PIN_POLICY.never:
      return 'never';
    case YK_PIN_POLICY.once:
      return 'once';
    case YK_PIN_POLICY.always:
      return 'always';
    default:
      throw new ApduError(SW.INCORRECT_DATA, 'unsupported PIN policy', { policy: value[0]! });
  }
}

/** The Yubico byte of a PIN policy (metadata tag 02). */
export function yubicoPinPolicyByte(policy: PinPolicy): number {
  return YK_PIN_POLICY[policy];
}

/**
 * Checks a Yubico touch policy byte (tag AB). cardlink cards have no touch sensor: only 00
 * (default) and 01 (never) are accepted; 02 (always) and 03 (cached) are `6A80` rather than
 * silently dropped, so nobody believes a key is touch-protected when it is not.
 */
export function checkTouchPolicy(value: Uint8Array | undefined): void {
  if (value === undefined) return;
  if (value.length !== 1 || (value[0] !== YK_TOUCH_POLICY.default && value[0] !== YK_TOUCH_POLICY.never)) {
    throw new ApduError(SW.INCORRECT_DATA, 'touch policies are not supported');
  }
}
