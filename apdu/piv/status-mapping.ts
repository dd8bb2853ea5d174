import { SW, type StatusWord } from '../codec/index.js';
import type { CardStateErrorReason } from './crypto/errors.js';

/**
 * A key reference that holds no key (an empty slot) in GENERAL AUTHENTICATE, and GET METADATA of
 * an empty slot: `6A88` "referenced data or reference data not found". SP 800-73-4 Part 2 section
 * 3.2.4 (GENERAL AUTHENTICATE): a key reference the card does not support is answered `6A 88`;
 * a slot without a key supports no operation. Not `6A82` ("file or application not found"):
 * SP 800-73-4 gives that to data objects (GET DATA, section 3.1.2) and applications (SELECT,
 * section 3.1.1), never to key references. YubiKeys answer `6A88` to the metadata of an empty slot.
 */
export const SW_NO_KEY_IN_SLOT: StatusWord = SW.REFERENCE_NOT_FOUND;

/**
 * The status word for a CardStateError the card state refused a command's input with. The card
 * checks most conditions itself first; this covers what only the store can tell (an RSA block
 * not below the modulus, a point off the curve, a weak 3DES key, an object over the store's
 * limit) and races with another session. SP 800-73-4 Part 2 section 3 status words.
 */
export function statusForCardStateError(reason: CardStateErrorReason): StatusWord {
  switch (reason) {
    case 'INPUT_LENGTH':
    case 'INPUT_RANGE':
    case 'EC_POINT_INVALID':
    case 'KEY_TYPE_MISMATCH':
    case 'UNSUPPORTED_ALGORITHM':
    case 'KEY_INVALID':
    case 'REFERENCE_DATA_LENGTH':
    case 'PIN_POLICY': // no SP 800-73 word says "policy"; 6A80 is "incorrect data field"
      return SW.INCORRECT_DATA;
    case 'SLOT_INVALID':
      return SW.INCORRECT_P1P2;
    case 'SLOT_EMPTY':
      return SW_NO_KEY_IN_SLOT;
    case 'OBJECT_INVALID':
      return SW.NOT_ENOUGH_MEMORY;
    default:
      return SW.NO_PRECISE_DIAGNOSIS;
  }
}
