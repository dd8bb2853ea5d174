import { ApduError, concatBytes, encodeTlv, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import {
  isKeySlot,
  KEY_ALGORITHM_ID,
  KEY_REF,
  MANAGEMENT_ALGORITHM_ID,
  METADATA_TAG,
  YK_METADATA_PIN_ALGORITHM,
  YK_ORIGIN,
  YK_PIN_POLICY,
  YK_TOUCH_POLICY,
} from '../constants.js';
import { yubicoPinPolicyByte } from '../key-policy.js';
import { publicKeyTemplateContent } from '../public-key-template.js';
import { SW_NO_KEY_IN_SLOT } from '../status-mapping.js';

/**
 * GET METADATA (Yubico extension, INS F7, firmware 5.3+): `00 F7 00 <reference>`, no
 * authentication needed (it reveals no secret).
 *
 * - 80 PIN / 81 PUK: `01 01 FF` `05 01 00` (never the default value: cardlink ships no default
 *   secrets) `06 02 <limit> <tries left>`.
 * - 9B: `01 01 <algorithm>` `02 02 00 01` (touch never) `05 01 00`.
 * - Key slot: `01 01 <algorithm>` `02 02 <PIN policy> 01` `03 01 <origin>` `04 L <public key
 *   TLVs as in 7F49>`; `6A88` for an empty slot (as YubiKeys answer).
 * - Anything else: `6A88`.
 */
const NOT_DEFAULT = 0x00;

export async function getMetadata(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0x00) throw new ApduError(SW.INCORRECT_P1P2, 'GET METADATA P1 must be 00', { p1: cmd.p1 });
  const ref = cmd.p2;
  if (ref === KEY_REF.PIN || ref === KEY_REF.PUK) {
    const status = await ctx.state.references.status(ref === KEY_REF.PIN ? 'pin' : 'puk');
    return ok(
      concatBytes([
        tlv1(METADATA_TAG.ALGORITHM, YK_METADATA_PIN_ALGORITHM),
        tlv1(METADATA_TAG.IS_DEFAULT, NOT_DEFAULT),
        encodeTlv(METADATA_TAG.RETRIES, Uint8Array.of(clampByte(status.limit), clampByte(status.remaining))),
      ]),
    );
  }
  if (ref === KEY_REF.CARD_MANAGEMENT) {
    const algorithm = await ctx.state.managementKey.algorithm();
    return ok(
      concatBytes([
        tlv1(METADATA_TAG.ALGORITHM, MANAGEMENT_ALGORITHM_ID[algorithm]),
        encodeTlv(METADATA_TAG.POLICY, Uint8Array.of(YK_PIN_POLICY.default, YK_TOUCH_POLICY.never)),
        tlv1(METADATA_TAG.IS_DEFAULT, NOT_DEFAULT),
      ]),
    );
  }
  if (!isKeySlot(ref))
    throw new ApduError(SW.REFERENCE_NOT_FOUND, 'no metadata for this reference', { p2: ref });
  const info = await ctx.state.keys.info(ref);
  if (!info) throw new ApduError(SW_NO_KEY_IN_SLOT, 'no key in slot', { slot: ref });
  return ok(
    concatBytes([
      tlv1(METADATA_TAG.ALGORITHM, KEY_ALGORITHM_ID[info.algorithm]),
      encodeTlv(
        METADATA_TAG.POLICY,
        Uint8Array.of(yubicoPinPolicyByte(info.pinPolicy), YK_TOUCH_POLICY.never),
      ),
      tlv1(METADATA_TAG.ORIGIN, YK_ORIGIN[info.origin]),
      encodeTlv(METADATA_TAG.PUBLIC_KEY, publicKeyTemplateContent(info.algorithm, info.publicKeySpki)),
    ]),
  );
}

function tlv1(tag: number, byte: number): Uint8Array {
  return encodeTlv(tag, Uint8Array.of(byte));
}

function clampByte(n: number): number {
  return Math.max(0, Math.min(255, n));
}
