import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import { ok, requireManagementKey, type CommandContext, type CommandResponse } from '../command-context.js';
import { KEY_REF, MANAGEMENT_KEY_BYTES, managementAlgorithmFromId } from '../constants.js';

/**
 * SET MANAGEMENT KEY (Yubico extension, INS FF): `00 FF FF FF 03+n <algorithm> 9B <n> <key>`.
 * Needs the management key (`6982`). P2 = FE asks for a touch-protected key, which cardlink
 * cannot honour (no touch sensor): `6A86`. `6A80` for a body that is not exactly
 * algorithm / 9B / length / key, an unknown algorithm, a key of the wrong length or a weak 3DES
 * key. The session stays authenticated.
 */
const P1 = 0xff;
const P2_NO_TOUCH = 0xff;

export async function setManagementKey(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== P1 || cmd.p2 !== P2_NO_TOUCH) {
    throw new ApduError(SW.INCORRECT_P1P2, 'SET MANAGEMENT KEY takes P1 P2 = FF FF (no touch)', {
      p1: cmd.p1,
      p2: cmd.p2,
    });
  }
  requireManagementKey(ctx);
  const d = cmd.data;
  const algorithm = d.length >= 3 ? managementAlgorithmFromId(d[0]!) : undefined;
  if (algorithm === undefined || d[1] !== KEY_REF.CARD_MANAGEMENT) {
    throw new ApduError(SW.INCORRECT_DATA, 'expected <algorithm> 9B <length> <key>');
  }
  const length = d[2]!;
  if (length !== MANAGEMENT_KEY_BYTES[algorithm] || d.length !== 3 + length) {
    throw new ApduError(SW.INCORRECT_DATA, 'management key length does not fit the algorithm', { length });
  }
  const key = d.slice(3);
  try {
    await ctx.state.managementKey.replace(algorithm, key);
  } finally {
    key.fill(0);
  }
  return ok();
}
