import { ApduError, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import { REPORTED_VERSION } from '../constants.js';

/**
 * GET VERSION (Yubico extension, INS FD): `00 FD 00 00` -> 3 bytes major, minor, patch.
 * yubico-piv-tool needs it to connect; see REPORTED_VERSION for the value chosen.
 */
export async function getVersion(cmd: CommandApdu, _ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== 0 || cmd.p2 !== 0) throw new ApduError(SW.INCORRECT_P1P2, 'GET VERSION takes P1 P2 = 00 00');
  return ok(REPORTED_VERSION.slice());
}
