import { ApduError, concatBytes, encodeTlv, SW, type CommandApdu } from '../../codec/index.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import {
  ADVERTISED_ALGORITHMS,
  KEY_ALGORITHM_ID,
  MIN_SELECT_AID_BYTES,
  NIST_RID,
  PIV_AID,
  PIV_PIX,
} from '../constants.js';

/**
 * SELECT (SP 800-73-4 Part 2 section 3.1.1; ISO 7816-4 section 11.1.1), by DF name only.
 *
 * - Any prefix of the PIV AID of at least 5 bytes (the RID) selects PIV: OpenSC sends 9 bytes,
 *   yubico-piv-tool 5, others the full 11.
 * - Any other AID answers `6A82` and PIV stays selected: PIV is the card's only and default
 *   application, so the probes of other middleware (coolkey, muscle, ...) must not disturb it.
 * - Selecting PIV again keeps the security status (PIN, management key): OpenSC re-selects often.
 */

/** Tags of the Application Property Template (SP 800-73-4 Part 2 Table 3). */
export const APT_TAG = {
  TEMPLATE: 0x61,
  AID: 0x4f,
  COEXISTENT_TAG_ALLOCATION_AUTHORITY: 0x79,
  APPLICATION_LABEL: 0x50,
  CRYPTOGRAPHIC_ALGORITHMS: 0xac,
  ALGORITHM_IDENTIFIER: 0x80,
  OBJECT_IDENTIFIER: 0x06,
} as const;

/** Application label (tag 50) in the SELECT answer. */
export const APPLICATION_LABEL = 'cardlink PIV';

/** P1 = 04: select by DF name. P2 = 00: return FCI (the APT); 0C: no response data. */
const P1_BY_NAME = 0x04;
const P2_RETURN_FCI = 0x00;
const P2_NO_RESPONSE = 0x0c;

/**
 * 61 { 4F PIX+version, 79 { 4F RID }, 50 label, AC { 80 id ... , 06 00 } }.
 * AC lists the asymmetric algorithms; its `06` object identifier is 00 because no secure
 * messaging cipher suite is offered (SP 800-73-4 Part 2 Table 3 note).
 */
export function applicationPropertyTemplate(): Uint8Array {
  return encodeTlv(APT_TAG.TEMPLATE, [
    encodeTlv(APT_TAG.AID, PIV_PIX),
    encodeTlv(APT_TAG.COEXISTENT_TAG_ALLOCATION_AUTHORITY, encodeTlv(APT_TAG.AID, NIST_RID)),
    encodeTlv(APT_TAG.APPLICATION_LABEL, new TextEncoder().encode(APPLICATION_LABEL)),
    encodeTlv(
      APT_TAG.CRYPTOGRAPHIC_ALGORITHMS,
      concatBytes([
        ...ADVERTISED_ALGORITHMS.map((a) =>
          encodeTlv(APT_TAG.ALGORITHM_IDENTIFIER, Uint8Array.of(KEY_ALGORITHM_ID[a])),
        ),
        encodeTlv(APT_TAG.OBJECT_IDENTIFIER, Uint8Array.of(0x00)),
      ]),
    ),
  ]);
}

const APT = applicationPropertyTemplate();

/** True when `aid` is the PIV AID or a prefix of it of at least 5 bytes. */
export function isPivAid(aid: Uint8Array): boolean {
  if (aid.length < MIN_SELECT_AID_BYTES || aid.length > PIV_AID.length) return false;
  return aid.every((b, i) => b === PIV_AID[i]);
}

export async function select(cmd: CommandApdu, _ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== P1_BY_NAME) {
    throw new ApduError(SW.FUNCTION_NOT_SUPPORTED, 'only selection by DF name (AID) is supported', {
      p1: cmd.p1,
    });
  }
  if (!isPivAid(cmd.data)) throw new ApduError(SW.FILE_NOT_FOUND, 'no such application');
  if (cmd.p2 === P2_NO_RESPONSE) return ok();
  if (cmd.p2 !== P2_RETURN_FCI)
    throw new ApduError(SW.INCORRECT_P1P2, 'unsupported SELECT option', { p2: cmd.p2 });
  return ok(APT);
}
