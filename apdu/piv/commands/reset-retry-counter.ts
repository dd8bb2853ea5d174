import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import { KEY_REF } from '../constants.js';
import { parseReferenceField, REFERENCE_DATA_MAX_BYTES } from '../reference-data.js';
import { failIfWrong } from './verify.js';

/**
 * RESET RETRY COUNTER (SP 800-73-4 Part 2 section 3.2.3): `00 2C 00 80 10 <PUK 8> <new PIN 8>`.
 * Unblocks the PIN with the PUK and sets a new PIN; the PIN is then not verified. A wrong PUK is
 * `63Cx` (PUK tries left); a blocked PUK is `6983` and stays blocked. Only the PIN (80) can be
 * reset (`6A88` otherwise).
 */
export async function resetRetryCounter(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0x00)
    throw new ApduError(SW.INCORRECT_P1P2, 'RESET RETRY COUNTER P1 must be 00', { p1: cmd.p1 });
  if (cmd.p2 !== KEY_REF.PIN)
    throw new ApduError(SW.REFERENCE_NOT_FOUND, 'only the PIN can be reset', { p2: cmd.p2 });
  if (cmd.data.length !== 2 * REFERENCE_DATA_MAX_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'RESET RETRY COUNTER takes two 8-byte fields', {
      length: cmd.data.length,
    });
  }
  const puk = parseReferenceField(cmd.data.subarray(0, REFERENCE_DATA_MAX_BYTES));
  const newPin = parseReferenceField(cmd.data.subarray(REFERENCE_DATA_MAX_BYTES));
  const outcome = await ctx.state.references.unblockPin(puk, newPin);
  if (!outcome.ok) ctx.security.unverify('puk');
  failIfWrong('puk', outcome);
  ctx.security.unverify('pin');
  return ok();
}
