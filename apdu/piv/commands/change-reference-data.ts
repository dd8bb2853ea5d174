import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import { parseReferenceField, REFERENCE_DATA_MAX_BYTES, referenceKindOf } from '../reference-data.js';
import { failIfWrong } from './verify.js';

/**
 * CHANGE REFERENCE DATA (SP 800-73-4 Part 2 section 3.2.2): `00 24 00 80|81 10 <old 8> <new 8>`,
 * each field 6..8 bytes padded with FF (`6A80` otherwise, no try consumed). A wrong current value
 * is `63Cx` / `6983` exactly as VERIFY; a blocked PUK stays blocked.
 */
export async function changeReferenceData(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0x00)
    throw new ApduError(SW.INCORRECT_P1P2, 'CHANGE REFERENCE DATA P1 must be 00', { p1: cmd.p1 });
  const kind = referenceKindOf(cmd.p2);
  if (cmd.data.length !== 2 * REFERENCE_DATA_MAX_BYTES) {
    throw new ApduError(SW.INCORRECT_DATA, 'CHANGE REFERENCE DATA takes two 8-byte fields', {
      length: cmd.data.length,
    });
  }
  const current = parseReferenceField(cmd.data.subarray(0, REFERENCE_DATA_MAX_BYTES));
  const next = parseReferenceField(cmd.data.subarray(REFERENCE_DATA_MAX_BYTES));
  const outcome = await ctx.state.references.change(kind, current, next);
  if (!outcome.ok) ctx.security.unverify(kind);
  failIfWrong(kind, outcome);
  return ok();
}
