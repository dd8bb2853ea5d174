import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';

/** GET SERIAL (Yubico extension, INS F8): `00 F8 00 00` -> the card's 32-bit serial, big-endian. */
export async function getSerial(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0 || cmd.p2 !== 0) throw new ApduError(SW.INCORRECT_P1P2, 'GET SERIAL takes P1 P2 = 00 00');
  const serial = ctx.state.identity.serial >>> 0;
  return ok(Uint8Array.of(serial >>> 24, (serial >>> 16) & 0xff, (serial >>> 8) & 0xff, serial & 0xff));
}
