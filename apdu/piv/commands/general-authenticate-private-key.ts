import { ApduError, encodeTlv, SW, type CommandApdu } from '../../codec/index.js';
import type { PinPolicy } from '../card-state.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import { DYN_AUTH, isKeySlot, KEY_ALGORITHM_ID, keyAlgorithmFromId } from '../constants.js';
import { parseDynamicAuthTemplate } from '../dynamic-auth.js';
import { SW_NO_KEY_IN_SLOT } from '../status-mapping.js';

/**
 * Private-key operations with GENERAL AUTHENTICATE (SP 800-73-4 Part 2 section 3.2.4 and
 * Appendix A.3/A.4), P1 = the key's algorithm (07 RSA-2048, 05 RSA-3072, 11 P-256, 14 P-384):
 *
 * - Sign / RSA decrypt: `7C L 82 00 81 L <input>` -> `7C L 82 L <result>`. RSA: the raw
 *   private-key operation on a modulus-sized block the host padded. EC: ECDSA over the hash in
 *   81 (shorter than the curve is fine), answered as a DER signature.
 * - ECDH: `7C L 82 00 85 L <04 X Y>` -> `7C L 82 L <shared secret X>`.
 *
 * Checks, in order: `6A86` not a key slot; `6A80` P1 not a key algorithm; `6A88` empty slot;
 * `6A80` P1 not the slot key's algorithm; `6982` PIN policy not met; `6A80` malformed template
 * or input the key cannot take. PIN policies: "never" (9E by default), "once" (PIN verified since
 * reset), "always" (9C by default: a successful VERIFY right before, spent by this operation).
 */
export async function usePrivateKey(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  const slot = cmd.p2;
  if (!isKeySlot(slot)) throw new ApduError(SW.INCORRECT_P1P2, 'not a key reference', { p2: slot });
  const algorithm = keyAlgorithmFromId(cmd.p1);
  if (algorithm === undefined) throw new ApduError(SW.INCORRECT_DATA, 'not a key algorithm', { p1: cmd.p1 });
  const info = await ctx.state.keys.info(slot);
  if (!info) throw new ApduError(SW_NO_KEY_IN_SLOT, 'no key in slot', { slot });
  if (info.algorithm !== algorithm) {
    throw new ApduError(SW.INCORRECT_DATA, 'algorithm does not match the key in the slot', {
      slot,
      p1: cmd.p1,
      expected: KEY_ALGORITHM_ID[info.algorithm],
    });
  }
  enforcePinPolicy(info.pinPolicy, ctx);

  const items = parseDynamicAuthTemplate(cmd.data);
  const response = items.get(DYN_AUTH.RESPONSE);
  const challenge = items.get(DYN_AUTH.CHALLENGE);
  const point = items.get(DYN_AUTH.EXPONENTIATION);
  if (items.size !== 2 || response?.length !== 0 || (challenge === undefined) === (point === undefined)) {
    throw new ApduError(SW.INCORRECT_DATA, 'expected 82 00 with 81 (sign) or 85 (ECDH)');
  }
  let result: Uint8Array;
  if (challenge !== undefined) {
    if (challenge.length === 0) throw new ApduError(SW.INCORRECT_DATA, 'empty input');
    result = await ctx.state.keys.sign(slot, challenge);
  } else {
    if (algorithm !== 'ECCP256' && algorithm !== 'ECCP384') {
      throw new ApduError(SW.INCORRECT_DATA, 'key agreement needs an EC key', { slot });
    }
    result = await ctx.state.keys.deriveSharedSecret(slot, point!);
  }
  if (info.pinPolicy === 'always') ctx.security.pinAlwaysArmed = false;
  return ok(encodeTlv(DYN_AUTH.TEMPLATE, encodeTlv(DYN_AUTH.RESPONSE, result)));
}

function enforcePinPolicy(policy: PinPolicy, ctx: CommandContext): void {
  const s = ctx.security;
  const satisfied =
    policy === 'never' ? true : policy === 'once' ? s.pinVerified : s.pinVerified && s.pinAlwaysArmed;
  if (!satisfied)
    throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'PIN verification required', { policy });
}
