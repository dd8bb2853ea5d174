/**
 * Whether the PIN or the PUK is blocked, as far as one command and its answer tell. For a host
 * that only passes APDUs along (the daemon, which tells the user when a card's PIN got blocked):
 * it never sees the retry counters, only the answers to the commands that use them.
 *
 * - VERIFY (SP 800-73-4 Part 2 section 3.2.1) and CHANGE REFERENCE DATA (section 3.2.2) with key
 *   reference 80 (PIN) or 81 (PUK) speak of that reference: `6983` (ISO 7816-4 table 6,
 *   authentication method blocked) or `63C0` (no tries left) blocked; `9000` or `63Cx` with x > 0
 *   usable. VERIFY with P1 = FF only forgets the verification and says nothing.
 * - RESET RETRY COUNTER (section 3.2.3) checks the PUK: `6983` / `63C0` the PUK is blocked, `63Cx`
 *   usable; `9000` both usable (the PIN was reset, with a new value and full tries).
 * - Anything else (other status words: `6A80` a malformed field, `6A88` another reference, `6F00`
 *   no answer from the server) tells nothing.
 */
import { SW } from '../codec/status-words.js';
import type { ReferenceKind } from './card-state.js';
import { INS, KEY_REF, VERIFY_P1 } from './constants.js';

/** What an answer told: per reference, blocked (true) or usable (false); absent: nothing known. */
export type ReferenceBlocking = Partial<Record<ReferenceKind, boolean>>;

/** What `response` (data and SW1 SW2) says about blocked references, given `command`. */
export function referenceBlocking(command: Uint8Array, response: Uint8Array): ReferenceBlocking {
  if (command.length < 4 || response.length < 2) return {};
  const ins = command[1]!;
  const p1 = command[2]!;
  const p2 = command[3]!;
  const sw = (response[response.length - 2]! << 8) | response[response.length - 1]!;
  const blocked = sw === SW.AUTH_METHOD_BLOCKED || sw === SW.VERIFY_FAILED_00;
  const usable = sw === SW.OK || ((sw & 0xfff0) === SW.VERIFY_FAILED_00 && !blocked);
  if (!blocked && !usable) return {};
  if (ins === INS.RESET_RETRY_COUNTER) {
    if (p2 !== KEY_REF.PIN) return {};
    return sw === SW.OK ? { pin: false, puk: false } : { puk: blocked };
  }
  // VERIFY and CHANGE REFERENCE DATA name the reference they check in P2.
  if (ins === INS.CHANGE_REFERENCE_DATA || (ins === INS.VERIFY && p1 !== VERIFY_P1.RESET_STATUS)) {
    const kind = p2 === KEY_REF.PIN ? 'pin' : p2 === KEY_REF.PUK ? 'puk' : undefined;
    return kind ? { [kind]: blocked } : {};
  }
  return {};
}
