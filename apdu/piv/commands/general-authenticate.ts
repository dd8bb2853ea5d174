import type { CommandApdu } from '../../codec/index.js';
import type { CommandContext, CommandResponse } from '../command-context.js';
import { KEY_REF } from '../constants.js';
import { authenticateManagementKey } from './general-authenticate-management.js';
import { usePrivateKey } from './general-authenticate-private-key.js';

/**
 * GENERAL AUTHENTICATE (SP 800-73-4 Part 2 section 3.2.4): `00 87 <algorithm> <key reference>
 * 7C len {...}`. Key reference 9B is the management key (challenge-response, see
 * general-authenticate-management.ts); 9A, 9C, 9D, 9E and 82..95 are private keys (see
 * general-authenticate-private-key.ts); other references are `6A86`.
 */
export async function generalAuthenticate(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p2 === KEY_REF.CARD_MANAGEMENT) return authenticateManagementKey(cmd, ctx);
  return usePrivateKey(cmd, ctx);
}
