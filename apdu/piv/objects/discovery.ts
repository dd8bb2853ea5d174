import { concatBytes, encodeTlv } from '../../codec/ber-tlv.js';
import { PIV_AID } from '../constants.js';

/**
 * Discovery Object (tag 7E), SP 800-73-4 Part 1 section 3.3.2 and Table 18: the PIV AID and the
 * PIN usage policy. cardlink implements the PIV Card Application PIN only (no global PIN, no
 * on-card biometric comparison, no virtual contact interface), so the policy is 40 00.
 */

export const DISCOVERY_TAG = {
  AID: 0x4f,
  PIN_USAGE_POLICY: 0x5f2f,
} as const;

/** First byte of the PIN usage policy (SP 800-73-4 Part 1 section 3.3.2). */
export const PIN_POLICY_BITS = {
  PIV_PIN: 0x40,
  GLOBAL_PIN: 0x20,
  OCC: 0x10,
  VCI: 0x08,
  VCI_WITHOUT_PAIRING_CODE: 0x04,
} as const;

/** The value (content of 7E) of cardlink's Discovery Object. */
export function encodeDiscovery(): Uint8Array {
  return concatBytes([
    encodeTlv(DISCOVERY_TAG.AID, PIV_AID),
    // Second byte: which PIN is primary; 00 when the global PIN is not supported.
    encodeTlv(DISCOVERY_TAG.PIN_USAGE_POLICY, Uint8Array.of(PIN_POLICY_BITS.PIV_PIN, 0x00)),
  ]);
}
