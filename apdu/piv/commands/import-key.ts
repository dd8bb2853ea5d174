import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import type { KeyAlgorithm } from '../card-state.js';
import {
  ok,
  parseDataTlvs,
  requireManagementKey,
  uniqueTlvs,
  type CommandContext,
  type CommandResponse,
} from '../command-context.js';
import {
  GENERATE_TAG,
  IMPORT_TAG,
  isKeySlot,
  isRetiredSlot,
  KEY_SIZE_BYTES,
  keyAlgorithmFromId,
} from '../constants.js';
import { ecPkcs8FromScalar, rsaPkcs8FromComponents } from '../crypto/pkcs8.js';
import { checkTouchPolicy, pinPolicyFromYubico } from '../key-policy.js';
import { refreshKeyHistory } from '../objects/key-history.js';

/**
 * IMPORT ASYMMETRIC KEY (Yubico extension, INS FE): `00 FE <algorithm> <slot> <TLVs>`, usually
 * chained. RSA: `01 p 02 q 03 dP 04 dQ 05 qInv` (public exponent 65537); EC: `06 <private
 * scalar>`; optional `AA 01 <PIN policy>`, `AB 01 <touch policy>`. Needs the management key.
 *
 * `6A86` for a slot that holds no private key or P1 that is no key algorithm; `6982` without the
 * management key; `6A80` for missing/extra components or a key that is not valid (non-prime
 * factors, CRT values that do not match, wrong size, scalar out of range).
 */
export async function importKey(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  const slot = cmd.p2;
  if (!isKeySlot(slot)) throw new ApduError(SW.INCORRECT_P1P2, 'not a key slot', { p2: slot });
  const algorithm = keyAlgorithmFromId(cmd.p1);
  if (algorithm === undefined) throw new ApduError(SW.INCORRECT_P1P2, 'not a key algorithm', { p1: cmd.p1 });
  requireManagementKey(ctx);

  const policyTags = [GENERATE_TAG.YK_PIN_POLICY, GENERATE_TAG.YK_TOUCH_POLICY];
  const rsa = algorithm === 'RSA2048' || algorithm === 'RSA3072';
  const componentTags: number[] = rsa
    ? [IMPORT_TAG.RSA_P, IMPORT_TAG.RSA_Q, IMPORT_TAG.RSA_DP, IMPORT_TAG.RSA_DQ, IMPORT_TAG.RSA_QINV]
    : [IMPORT_TAG.EC_PRIVATE];
  const items = uniqueTlvs(parseDataTlvs(cmd.data), [...componentTags, ...policyTags]);
  for (const tag of componentTags) {
    if (!items.get(tag)?.length) throw new ApduError(SW.INCORRECT_DATA, 'missing key component', { tag });
  }
  const pinPolicy = pinPolicyFromYubico(items.get(GENERATE_TAG.YK_PIN_POLICY), slot);
  checkTouchPolicy(items.get(GENERATE_TAG.YK_TOUCH_POLICY));

  const pkcs8 = toPkcs8(algorithm, items);
  try {
    await ctx.state.keys.importKey(slot, algorithm, pkcs8, pinPolicy);
  } finally {
    pkcs8.fill(0);
  }
  if (isRetiredSlot(slot)) await refreshKeyHistory(ctx.state);
  return ok();
}

function toPkcs8(algorithm: KeyAlgorithm, items: ReadonlyMap<number, Uint8Array>): Uint8Array {
  if (algorithm === 'ECCP256' || algorithm === 'ECCP384') {
    return ecPkcs8FromScalar(algorithm, items.get(IMPORT_TAG.EC_PRIVATE)!);
  }
  const p = items.get(IMPORT_TAG.RSA_P)!;
  const q = items.get(IMPORT_TAG.RSA_Q)!;
  // The key must have the size P1 announced (the conversion accepts both RSA sizes).
  const bits = (toBigInt(p) * toBigInt(q)).toString(2).length;
  if (bits !== KEY_SIZE_BYTES[algorithm] * 8) {
    throw new ApduError(SW.INCORRECT_DATA, 'RSA key size does not match P1', { bits });
  }
  return rsaPkcs8FromComponents({
    p,
    q,
    dP: items.get(IMPORT_TAG.RSA_DP)!,
    dQ: items.get(IMPORT_TAG.RSA_DQ)!,
    qInv: items.get(IMPORT_TAG.RSA_QINV)!,
  });
}

function toBigInt(bytes: Uint8Array): bigint {
  return BigInt('0x' + Buffer.from(bytes).toString('hex'));
}
