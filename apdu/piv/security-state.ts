import type { ManagementKeyAlgorithm, ReferenceKind } from './card-state.js';

/**
 * The card's volatile security status (ISO 7816-4 section 5.4, SP 800-73-4 Part 2 section 4):
 * what has been verified or authenticated since the last reset. Nothing here persists; a reset
 * (power cycle, warm reset) starts from a fresh SecurityState.
 */

/** A management-key challenge the card handed out and expects an answer to. */
export type PendingManagementChallenge =
  /** External authentication: the host must return the challenge encrypted (tag 82). */
  | { readonly kind: 'external'; readonly algorithm: ManagementKeyAlgorithm; readonly challenge: Uint8Array }
  /** Mutual authentication: the host must return the decrypted witness (tag 80). */
  | { readonly kind: 'mutual'; readonly algorithm: ManagementKeyAlgorithm; readonly witness: Uint8Array };

export class SecurityState {
  /** PIN (key reference 80) verified: unlocks PIN-"once" keys and PIN-protected objects. */
  pinVerified = false;
  /**
   * Set by each successful PIN VERIFY and spent by one private-key operation of a PIN-"always"
   * key (slot 9C by default): such a key needs a VERIFY right before each use.
   */
  pinAlwaysArmed = false;
  /** PUK (key reference 81) verified through VERIFY. Grants nothing by itself (see docs/piv-card.md). */
  pukVerified = false;
  /** Management key (9B) authenticated: unlocks PUT DATA, key generation and import, SET MANAGEMENT KEY. */
  managementAuthenticated = false;
  /** At most one outstanding management-key challenge; any other command drops it. */
  pendingChallenge: PendingManagementChallenge | null = null;

  isVerified(kind: ReferenceKind): boolean {
    return kind === 'pin' ? this.pinVerified : this.pukVerified;
  }

  /** Marks `kind` verified (a successful VERIFY). */
  verified(kind: ReferenceKind): void {
    if (kind === 'pin') {
      this.pinVerified = true;
      this.pinAlwaysArmed = true;
    } else {
      this.pukVerified = true;
    }
  }

  /** Drops the verified status of `kind` (VERIFY P1=FF, a failed VERIFY, a PIN reset). */
  unverify(kind: ReferenceKind): void {
    if (kind === 'pin') {
      this.pinVerified = false;
      this.pinAlwaysArmed = false;
    } else {
      this.pukVerified = false;
    }
  }
}
