/**
 * Changing and unblocking the PIN from the holder's side (the daemon, for `cardlink pin` and the
 * tray's PIN page): the two commands, the rule a new PIN must meet before it goes to the card, and
 * what the card's status word means for the person who typed the values.
 *
 * CHANGE REFERENCE DATA (SP 800-73-4 Part 2 section 3.2.2) `00 24 00 80 10 <current PIN> <new PIN>`
 * and RESET RETRY COUNTER (section 3.2.3) `00 2C 00 80 10 <PUK> <new PIN>`, each value padded to
 * 8 bytes with FF (reference-data.ts). The card checks the current PIN (or the PUK) and answers
 * `9000`, `63Cx` (wrong, x tries left), `63C0` / `6983` (blocked) or `6A80` (a field it cannot
 * take).
 *
 * The new PIN: 6 to 8 digits. The length is the card's (REFERENCE_DATA_MIN_BYTES..MAX_BYTES); the
 * digits are SP 800-73-4 Part 2 section 2.4.3's PIN character set, the rule `cardlink admin` holds
 * the issuer's PINs to (server/admin/profile.ts), so a PIN a holder chooses is one every PIV
 * middleware can type. The current PIN and the PUK are only checked to fit a field: whether they
 * are right is for the card to say (and to count).
 */
import { SW, verifyTriesLeft, type StatusWord } from '../codec/index.js';
import { INS, KEY_REF } from './constants.js';
import {
  padReferenceValue,
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
  REFERENCE_DATA_PAD_BYTE,
} from './reference-data.js';

/** Which PIN operation: change (the current PIN proves the holder) or unblock (the PUK does). */
export type PinOperation = 'change' | 'unblock';

/**
 * What the card's answer means. `wrong`: the PIN (change) or PUK (unblock) was not right, with
 * the tries it has left (at least 1); `blocked`: that reference is blocked (or just became so);
 * `new-pin-invalid`: the new PIN breaks the rule above (nothing was sent); `value-invalid`: the
 * current PIN or PUK cannot be one (not 6..8 bytes; nothing was sent, no try used); `refused`:
 * any other status word (the card could not do it; the word says why).
 */
export type PinChangeOutcome =
  | { outcome: 'done' }
  | { outcome: 'wrong'; reference: 'pin' | 'puk'; triesLeft: number }
  | { outcome: 'blocked'; reference: 'pin' | 'puk' }
  | { outcome: 'new-pin-invalid'; minLength: number; maxLength: number }
  | { outcome: 'value-invalid'; reference: 'pin' | 'puk' }
  | { outcome: 'refused'; statusWord: number };

/** The reference that proves the holder in each operation. */
export function provingReference(operation: PinOperation): 'pin' | 'puk' {
  return operation === 'change' ? 'pin' : 'puk';
}

/** Whether `value` may become the PIN: 6 to 8 ASCII digits (see the file comment). */
export function isValidNewPin(value: string): boolean {
  return (
    value.length >= REFERENCE_DATA_MIN_BYTES &&
    value.length <= REFERENCE_DATA_MAX_BYTES &&
    /^[0-9]+$/.test(value)
  );
}

/**
 * The bytes of a typed current PIN or PUK, or undefined when it cannot be one: not 6..8 bytes of
 * UTF-8, or holding the pad byte (which UTF-8 never produces, so only the length decides).
 */
export function typedReferenceBytes(value: string): Uint8Array | undefined {
  const bytes = new Uint8Array(Buffer.from(value, 'utf8'));
  if (bytes.length < REFERENCE_DATA_MIN_BYTES || bytes.length > REFERENCE_DATA_MAX_BYTES) return undefined;
  if (bytes.includes(REFERENCE_DATA_PAD_BYTE)) return undefined;
  return bytes;
}

/**
 * The command for `operation`, or the outcome that stops it before the card: the new PIN breaks
 * the rule, or the current PIN / PUK cannot be one. The caller sends the command, then overwrites
 * it (it holds both values).
 */
export function pinOperationCommand(
  operation: PinOperation,
  proof: string,
  newPin: string,
): { command: Uint8Array } | { outcome: PinChangeOutcome } {
  if (!isValidNewPin(newPin)) {
    return {
      outcome: {
        outcome: 'new-pin-invalid',
        minLength: REFERENCE_DATA_MIN_BYTES,
        maxLength: REFERENCE_DATA_MAX_BYTES,
      },
    };
  }
  const proofBytes = typedReferenceBytes(proof);
  if (!proofBytes) return { outcome: { outcome: 'value-invalid', reference: provingReference(operation) } };
  const ins = operation === 'change' ? INS.CHANGE_REFERENCE_DATA : INS.RESET_RETRY_COUNTER;
  const command = new Uint8Array(5 + 2 * REFERENCE_DATA_MAX_BYTES);
  // CLA 00, INS, P1 00, P2 80 (the PIN; section 3.2.2 / 3.2.3), Lc 10.
  command.set([0x00, ins, 0x00, KEY_REF.PIN, 2 * REFERENCE_DATA_MAX_BYTES]);
  const first = padReferenceValue(proofBytes);
  const second = padReferenceValue(new Uint8Array(Buffer.from(newPin, 'latin1')));
  command.set(first, 5);
  command.set(second, 5 + REFERENCE_DATA_MAX_BYTES);
  first.fill(0);
  second.fill(0);
  proofBytes.fill(0);
  return { command };
}

/** What the card's status word `sw` to `operation`'s command means (SP 800-73-4 Part 2 sections 3.2.2, 3.2.3). */
export function pinOperationOutcome(operation: PinOperation, sw: StatusWord): PinChangeOutcome {
  const reference = provingReference(operation);
  if (sw === SW.OK) return { outcome: 'done' };
  // 6983: ISO 7816-4 table 6 "authentication method blocked"; 63C0: no tries left.
  if (sw === SW.AUTH_METHOD_BLOCKED || sw === SW.VERIFY_FAILED_00) return { outcome: 'blocked', reference };
  const triesLeft = verifyTriesLeft(sw);
  if (triesLeft !== undefined) return { outcome: 'wrong', reference, triesLeft };
  // 6A80: a field the card cannot take (its own length rule, stricter than ours would be).
  if (sw === SW.INCORRECT_DATA) return { outcome: 'value-invalid', reference };
  return { outcome: 'refused', statusWord: sw };
}
