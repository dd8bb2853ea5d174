import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import {
  ok,
  parseDataTlvs,
  requireManagementKey,
  uniqueTlvs,
  type CommandContext,
  type CommandResponse,
} from '../command-context.js';
import { GENERATE_TAG, isKeySlot, isRetiredSlot, keyAlgorithmFromId } from '../constants.js';
import { checkTouchPolicy, pinPolicyFromYubico } from '../key-policy.js';
import { refreshKeyHistory } from '../objects/key-history.js';
import { publicKeyTemplate } from '../public-key-template.js';

/**
 * GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 Part 2 section 3.3.3):
 * `00 47 00 <slot> AC L { 80 01 <algorithm> [AA 01 <PIN policy>] [AB 01 <touch policy>] }`
 * (AA/AB: Yubico extensions). Needs the management key. Answers `7F49 L { 81 modulus 82
 * exponent }` (RSA) or `7F49 L { 86 point }` (EC), chained with GET RESPONSE for RSA.
 *
 * `6A86` for P1 other than 00 or a slot that holds no private key; `6982` without the management
 * key; `6A80` for a malformed template or an unsupported algorithm or policy. The slot's
 * certificate is left as it was (the issuer replaces it). A retired slot updates the Key History.
 */
export async function generateKeyPair(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0x00) throw new ApduError(SW.INCORRECT_P1P2, 'GENERATE P1 must be 00', { p1: cmd.p1 });
  const slot = cmd.p2;
  if (!isKeySlot(slot)) throw new ApduError(SW.INCORRECT_P1P2, 'not a key slot', { p2: slot });
  requireManagementKey(ctx);
  const outer = parseDataTlvs(cmd.data);
  if (outer.length !== 1 || outer[0]!.tag !== GENERATE_TAG.CONTROL_TEMPLATE) {
    throw new ApduError(SW.INCORRECT_DATA, 'GENERATE takes one control reference template (AC)');
  }
  const items = uniqueTlvs(parseDataTlvs(outer[0]!.value), [
    GENERATE_TAG.ALGORITHM,
    GENERATE_TAG.YK_PIN_POLICY,
    GENERATE_TAG.YK_TOUCH_POLICY,
  ]);
  const algorithmId = items.get(GENERATE_TAG.ALGORITHM);
  const algorithm = algorithmId?.length === 1 ? keyAlgorithmFromId(algorithmId[0]!) : undefined;
  if (algorithm === undefined) throw new ApduError(SW.INCORRECT_DATA, 'missing or unsupported algorithm');
  const pinPolicy = pinPolicyFromYubico(items.get(GENERATE_TAG.YK_PIN_POLICY), slot);
  checkTouchPolicy(items.get(GENERATE_TAG.YK_TOUCH_POLICY));

  const info = await ctx.state.keys.generate(slot, algorithm, pinPolicy);
  if (isRetiredSlot(slot)) await refreshKeyHistory(ctx.state);
  return ok(publicKeyTemplate(info.algorithm, info.publicKeySpki));
}
