import { ApduError, encodeTlv, SW, type CommandApdu } from '../../codec/index.js';
import {
  ok,
  parseDataTlvs,
  requireP1P2,
  tagFromBytes,
  type CommandContext,
  type CommandResponse,
} from '../command-context.js';
import { DATA_P1P2, DATA_TAG } from '../constants.js';
import { dataObjectSpec } from '../objects/catalogue.js';

/**
 * GET DATA (SP 800-73-4 Part 2 section 3.1.2): `00 CB 3F FF Lc 5C len tag Le`.
 *
 * Answers `53 len value` (the Discovery Object as `7E len value`, the BIT group template as
 * `7F61 len value`), chained with `61xx` / GET RESPONSE when longer than Le. `6A82` for a
 * container PIV does not define or the card does not hold; `6982` for a PIN-protected container
 * (fingerprints, facial image, printed information, iris, pairing code) before the PIN is verified.
 */
export async function getData(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  requireP1P2(cmd, DATA_P1P2);
  const list = parseDataTlvs(cmd.data);
  if (list.length !== 1 || list[0]!.tag !== DATA_TAG.TAG_LIST) {
    throw new ApduError(SW.INCORRECT_DATA, 'GET DATA takes exactly one tag list (5C)');
  }
  const tag = tagFromBytes(list[0]!.value);
  const spec = dataObjectSpec(tag);
  if (!spec) throw new ApduError(SW.FILE_NOT_FOUND, 'no such data object', { tag });
  if (spec.read === 'pin' && !ctx.security.pinVerified) {
    throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'data object needs the PIN', { tag });
  }
  const value = await ctx.state.objects.get(tag);
  if (value === undefined || value.length === 0)
    throw new ApduError(SW.FILE_NOT_FOUND, 'data object absent', { tag });
  return ok(encodeTlv(spec.envelope, value));
}
