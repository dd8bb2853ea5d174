import { ApduError, SW, swVerifyFailed, type CommandApdu } from '../../codec/index.js';
import type { ReferenceKind, VerifyOutcome } from '../card-state.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import { parseReferenceField, referenceKindOf } from '../reference-data.js';

/**
 * VERIFY (SP 800-73-4 Part 2 section 3.2.1): `00 20 00 80 08 <PIN padded with FF>`.
 * P2 80 is the PIV PIN; cardlink also accepts 81 (PUK), which checks the PUK and grants nothing
 * (the PUK's only use is RESET RETRY COUNTER / CHANGE REFERENCE DATA, which carry it themselves).
 * The global PIN (00) is not implemented: `6A88`.
 *
 * - No data: `9000` when verified, `63Cx` (x tries left) when not, `6983` when blocked.
 * - P1 = FF, no data: forgets the verification (`9000`).
 * - Wrong value: `63Cx` with x tries left, and the reference is no longer verified; `6983` when
 *   that was the last try or the reference is blocked.
 * - A field that is not 8 bytes of 6..8 value bytes + FF padding: `6A80`, no try consumed.
 */

const P1_VERIFY = 0x00;
/** VERIFY's P1 that forgets the verification instead of checking a value. */
export const P1_RESET_STATUS = 0xff;

export async function verify(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  if (cmd.p1 !== P1_VERIFY && cmd.p1 !== P1_RESET_STATUS) {
    throw new ApduError(SW.INCORRECT_P1P2, 'VERIFY P1 must be 00 or FF', { p1: cmd.p1 });
  }
  const kind = referenceKindOf(cmd.p2);
  if (cmd.p1 === P1_RESET_STATUS) {
    if (cmd.data.length !== 0) throw new ApduError(SW.INCORRECT_DATA, 'VERIFY P1=FF takes no data');
    ctx.security.unverify(kind);
    return ok();
  }
  if (cmd.data.length === 0) {
    const status = await ctx.state.references.status(kind);
    if (status.remaining <= 0) throw new ApduError(SW.AUTH_METHOD_BLOCKED, 'reference blocked', { kind });
    if (ctx.security.isVerified(kind)) return ok();
    throw new ApduError(swVerifyFailed(status.remaining), 'not verified', { kind });
  }
  const value = parseReferenceField(cmd.data);
  const outcome = await ctx.state.references.verify(kind, value);
  if (!outcome.ok) ctx.security.unverify(kind);
  failIfWrong(kind, outcome);
  ctx.security.verified(kind);
  return ok();
}

/** `6983` when blocked (no tries left), `63Cx` for a wrong value; nothing for success. */
export function failIfWrong(kind: ReferenceKind, outcome: VerifyOutcome): void {
  if (outcome.ok) return;
  if (outcome.remaining <= 0) throw new ApduError(SW.AUTH_METHOD_BLOCKED, 'reference blocked', { kind });
  throw new ApduError(swVerifyFailed(outcome.remaining), 'wrong reference data', { kind });
}
