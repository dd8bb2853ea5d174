import { timingSafeEqual } from 'node:crypto';
import { ApduError, encodeTlv, SW, type CommandApdu } from '../../codec/index.js';
import type { ManagementKeyAlgorithm } from '../card-state.js';
import { ok, type CommandContext, type CommandResponse } from '../command-context.js';
import {
  DYN_AUTH,
  MANAGEMENT_ALGORITHM_ID,
  MANAGEMENT_BLOCK_BYTES,
  managementAlgorithmFromId,
} from '../constants.js';
import { parseDynamicAuthTemplate } from '../dynamic-auth.js';

/**
 * Management key (9B) authentication with GENERAL AUTHENTICATE, SP 800-73-4 Part 2 Appendix A
 * (A.1 / A.2), P1 = 03 (3DES), 08 (AES-128), 0A (AES-192) or 0C (AES-256), which must be the
 * algorithm of the card's management key (`6A80` otherwise, as YubiKeys answer). One block is
 * 8 bytes for 3DES and 16 for AES.
 *
 * External authentication (OpenSC `piv-tool -A A:9B:xx`):
 *   host `7C 02 81 00`            card `7C L 81 <challenge>`
 *   host `7C L 82 <E(challenge)>` card `9000`, or `6982` if wrong.
 *
 * Mutual authentication (yubico-piv-tool, ykman, OpenSC `M:9B:xx`):
 *   host `7C 02 80 00`                         card `7C L 80 <E(witness)>`
 *   host `7C L 80 <witness> 81 <challenge>`    card `7C L 82 <E(challenge)>`, or `6982`.
 *
 * The card never encrypts a host block before the host has proven the key (that would let anyone
 * answer the card's own challenge), and each challenge / witness is good for one answer only:
 * the next GENERAL AUTHENTICATE 9B consumes it, any other command drops it.
 *
 * `00 87 00 9B 04 7C 02 81 00` (P1 = 00, "no algorithm") is how OpenSC asks a PIV card for
 * random bytes (its C_GenerateRandom): it gets one random block and arms nothing.
 */
export async function authenticateManagementKey(
  cmd: CommandApdu,
  ctx: CommandContext,
): Promise<CommandResponse> {
  const pending = ctx.security.pendingChallenge;
  ctx.security.pendingChallenge = null; // one answer per challenge, whatever this command turns out to be
  if (cmd.p1 === RANDOM_ONLY_P1) return randomChallenge(cmd, ctx);
  const algorithm = await checkAlgorithm(cmd, ctx);
  const items = parseDynamicAuthTemplate(cmd.data);
  const shape = [...items.keys()].sort((a, b) => a - b).join(',');
  const blockBytes = MANAGEMENT_BLOCK_BYTES[algorithm];
  const empty = (tag: number) => items.get(tag)?.length === 0;

  if (shape === `${DYN_AUTH.CHALLENGE}` && empty(DYN_AUTH.CHALLENGE)) {
    // External authentication, step 1: hand out a challenge.
    const challenge = ctx.random(blockBytes);
    ctx.security.pendingChallenge = { kind: 'external', algorithm, challenge };
    return ok(template(DYN_AUTH.CHALLENGE, challenge));
  }
  if (shape === `${DYN_AUTH.RESPONSE}` && !empty(DYN_AUTH.RESPONSE)) {
    // External authentication, step 2: the host's encryption of our challenge.
    const response = items.get(DYN_AUTH.RESPONSE)!;
    if (pending?.kind !== 'external' || pending.algorithm !== algorithm) {
      throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'no management key challenge outstanding');
    }
    if (response.length !== blockBytes) throw new ApduError(SW.INCORRECT_DATA, 'response is not one block');
    const expected = await ctx.state.managementKey.encryptBlock(pending.challenge);
    if (!sameBytes(expected, response)) {
      throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'management key authentication failed');
    }
    ctx.security.managementAuthenticated = true;
    return ok();
  }
  if (shape === `${DYN_AUTH.WITNESS}` && empty(DYN_AUTH.WITNESS)) {
    // Mutual authentication, step 1: a random witness, encrypted.
    const witness = ctx.random(blockBytes);
    const encrypted = await ctx.state.managementKey.encryptBlock(witness);
    ctx.security.pendingChallenge = { kind: 'mutual', algorithm, witness };
    return ok(template(DYN_AUTH.WITNESS, encrypted));
  }
  if (shape === `${DYN_AUTH.WITNESS},${DYN_AUTH.CHALLENGE}` && !empty(DYN_AUTH.WITNESS)) {
    // Mutual authentication, step 2: the decrypted witness proves the host; then answer its challenge.
    const witness = items.get(DYN_AUTH.WITNESS)!;
    const challenge = items.get(DYN_AUTH.CHALLENGE)!;
    if (pending?.kind !== 'mutual' || pending.algorithm !== algorithm) {
      throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'no management key witness outstanding');
    }
    if (witness.length !== blockBytes || challenge.length !== blockBytes) {
      throw new ApduError(SW.INCORRECT_DATA, 'witness and challenge must be one block each');
    }
    if (!sameBytes(pending.witness, witness)) {
      throw new ApduError(SW.SECURITY_STATUS_NOT_SATISFIED, 'management key authentication failed');
    }
    const answer = await ctx.state.managementKey.encryptBlock(challenge);
    ctx.security.managementAuthenticated = true;
    return ok(template(DYN_AUTH.RESPONSE, answer));
  }
  throw new ApduError(SW.INCORRECT_DATA, 'unsupported management key authentication step');
}

/** P1 of OpenSC's "get challenge" (random bytes): no algorithm. */
const RANDOM_ONLY_P1 = 0x00;

async function randomChallenge(cmd: CommandApdu, ctx: CommandContext): Promise<CommandResponse> {
  const items = parseDynamicAuthTemplate(cmd.data);
  if (items.size !== 1 || items.get(DYN_AUTH.CHALLENGE)?.length !== 0) {
    throw new ApduError(SW.INCORRECT_DATA, 'P1 = 00 only serves challenge (random) requests');
  }
  const algorithm = await ctx.state.managementKey.algorithm();
  return ok(template(DYN_AUTH.CHALLENGE, ctx.random(MANAGEMENT_BLOCK_BYTES[algorithm])));
}

async function checkAlgorithm(cmd: CommandApdu, ctx: CommandContext): Promise<ManagementKeyAlgorithm> {
  const requested = managementAlgorithmFromId(cmd.p1);
  const actual = await ctx.state.managementKey.algorithm();
  if (requested !== actual) {
    throw new ApduError(SW.INCORRECT_DATA, 'algorithm does not match the management key', {
      p1: cmd.p1,
      expected: MANAGEMENT_ALGORITHM_ID[actual],
    });
  }
  return actual;
}

function template(tag: number, value: Uint8Array): Uint8Array {
  return encodeTlv(DYN_AUTH.TEMPLATE, encodeTlv(tag, value));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
