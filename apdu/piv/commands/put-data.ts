import { ApduError, SW, type CommandApdu, type Tlv } from '../../codec/index.js';
import {
  ok,
  parseDataTlvs,
  requireManagementKey,
  requireP1P2,
  tagFromBytes,
  type CommandContext,
  type CommandResponse,
} from '../command-context.js';
import { DATA_P1P2, DATA_TAG } from '../constants.js';
import {
  dataObjectSpec,
  isRetiredCertificateTag,
  MAX_DATA_OBJECT_VALUE_BYTES,
  OBJECT_TAG,
} from '../objects/catalogue.js';
import { refreshKeyHistory } from '../objects/key-history.js';

/**
 * PUT DATA (SP 800-73-4 Part 2 section 3.3.2): `00 DB 3F FF Lc 5C len tag 53 len value`, or for
 * the Discovery Object `7E len value` and the BIT group template `7F61 len value`; usually
 * chained (CLA 10). Needs the management key (`6982`). An empty value deletes the object.
 *
 * `6A80` for a malformed body or a tag PIV does not define; `6A84` for a value over
 * MAX_DATA_OBJECT_VALUE_BYTES. Writing a retired certificate container updates the Key History.
 */
export async function putData(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  requireP1P2(cmd, DATA_P1P2);
  requireManagementKey(ctx);
  const { tag, value } = objectOf(parseDataTlvs(cmd.data));
  if (!dataObjectSpec(tag)) throw new ApduError(SW.INCORRECT_DATA, 'no such data object', { tag });
  if (value.length > MAX_DATA_OBJECT_VALUE_BYTES) {
    throw new ApduError(SW.NOT_ENOUGH_MEMORY, 'data object too large', { tag, length: value.length });
  }
  await ctx.state.objects.put(tag, value.slice());
  if (isRetiredCertificateTag(tag)) await refreshKeyHistory(ctx.state);
  return ok();
}

function objectOf(list: readonly Tlv[]): { tag: number; value: Uint8Array } {
  const [first, second] = list;
  if (
    list.length === 1 &&
    (first!.tag === OBJECT_TAG.DISCOVERY || first!.tag === OBJECT_TAG.BIOMETRIC_INFORMATION_TEMPLATES_GROUP)
  ) {
    return { tag: first!.tag, value: first!.value };
  }
  if (list.length === 2 && first!.tag === DATA_TAG.TAG_LIST && second!.tag === DATA_TAG.DATA) {
    return { tag: tagFromBytes(first!.value), value: second!.value };
  }
  throw new ApduError(SW.INCORRECT_DATA, 'PUT DATA takes 5C tag + 53 value, or a 7E / 7F61 object');
}
