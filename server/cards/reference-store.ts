/**
 * PIN and PUK of a persistent card (SP 800-73-4 Part 2 section 3.2.1, key references 80 and 81).
 *
 * Each try goes: (1) one transaction that fences the session and consumes the try with the atomic
 * decrement of `consumeReferenceTry`, committed before anything is compared (a command run by
 * `runCommand` records the provisional "wrong value" answer in the same commit); (2) the
 * comparison against the keyed verifier (`checkPinVerifier`, the PIN key stays in the key
 * provider), outside any transaction; (3) one transaction with the outcome: on a match the counter
 * is restored (and the new PIN/PUK set), the audit entry says what happened. Concurrent wrong
 * tries each cost one decrement; a crash or provider error in (2) leaves the try counted.
 * Lengths, padding and the kind check are the card's rules (`apdu/piv/reference-data.ts`), the
 * same the in-memory state applies.
 */
import { statusOnly, SW, swVerifyFailed } from '../../apdu/codec/index.js';
import type { ReferenceDataStore, ReferenceKind, RetryStatus, VerifyOutcome } from '../../apdu/piv/index.js';
import {
  canonicalReferenceValue,
  checkReferenceKind,
  MAX_PIN_HISTORY,
  referenceCandidate,
} from '../../apdu/piv/index.js';
import { AUDIT_EVENTS } from '../audit/audit-log.js';
import { checkPinVerifier, createPinVerifier } from '../keys/pin-verifier.js';
import {
  consumeReferenceTry,
  readPinRecord,
  recordPinReplaced,
  referenceStatus,
  restoreReference,
  setReference,
  type FencedCard,
} from '../storage/index.js';
import type { CommandUnit } from './command-unit.js';
import {
  checkPinContent,
  checkPukContent,
  isRecentPin,
  pinPolicyError,
  pinRulesOf,
  pukRulesOf,
} from './pin-rules.js';
import type { StoreContext } from './store-context.js';

/**
 * The answer a wrong value gets (`63Cx`, or `6983` once blocked; SP 800-73-4 Part 2 section
 * 3.2.1): recorded as a command's provisional response when its try is consumed, before the
 * comparison decides.
 */
export function wrongReferenceResponse(remaining: number): Uint8Array {
  return statusOnly(remaining > 0 ? swVerifyFailed(remaining) : SW.AUTH_METHOD_BLOCKED);
}

export function referenceStore(ctx: StoreContext): ReferenceDataStore {
  return {
    status(kind) {
      return ctx.call(async (unit): Promise<RetryStatus> => {
        checkReferenceKind(kind);
        const r = await referenceStatus(await unit.reader(), ctx.fence.cardId, kind);
        return { remaining: r.remaining, limit: r.limit };
      });
    },

    verify(kind, candidate) {
      return ctx.call(async (unit) => {
        checkReferenceKind(kind);
        const value = referenceCandidate(candidate);
        return tryReference(ctx, unit, kind, value, () =>
          ctx.audit(unit, AUDIT_EVENTS.pinVerified, { reference: kind }),
        );
      });
    },

    change(kind, current, next) {
      return ctx.call(async (unit) => {
        checkReferenceKind(kind);
        const value = referenceCandidate(current);
        const canonicalNext = canonicalReferenceValue(next); // refused before any try is consumed
        const policy = kind === 'pin' ? await pinPolicyCheck(ctx, unit, canonicalNext) : undefined;
        if (kind === 'puk') await pukPolicyCheck(unit, ctx.fence.cardId, canonicalNext);
        // Made before the try: no key provider call while a transaction is open.
        const verifier = await createPinVerifier(ctx.kek, { cardId: ctx.fence.cardId, kind }, canonicalNext);
        const outcome = await tryReference(ctx, unit, kind, value, async (card, previous) => {
          // A reused PIN is told only to who knows the current one: the try is restored, nothing set.
          if (policy?.reused) return;
          await setReference(card, kind, verifier);
          if (policy) await recordPinReplaced(card, previous, policy.keep);
          await ctx.audit(unit, AUDIT_EVENTS.pinChanged, { reference: kind });
        });
        if (outcome.ok && policy?.reused) throw pinPolicyError('reused');
        return outcome;
      });
    },

    unblockPin(puk, newPin) {
      return ctx.call(async (unit) => {
        const value = referenceCandidate(puk);
        const canonicalPin = canonicalReferenceValue(newPin);
        const policy = await pinPolicyCheck(ctx, unit, canonicalPin);
        const verifier = await createPinVerifier(
          ctx.kek,
          { cardId: ctx.fence.cardId, kind: 'pin' },
          canonicalPin,
        );
        const outcome = await tryReference(ctx, unit, 'puk', value, async (card) => {
          if (policy.reused) return;
          await setReference(card, 'pin', verifier);
          await recordPinReplaced(card, policy.current, policy.keep);
          await ctx.audit(unit, AUDIT_EVENTS.pinUnblocked, { reference: 'pin', with: 'puk' });
        });
        if (outcome.ok && policy.reused) throw pinPolicyError('reused');
        return outcome;
      });
    },
  };
}

/**
 * Consumes a try, compares, and on a match restores the counter and runs `onMatch` in the same
 * transaction. Blocked: nothing is compared.
 */
async function tryReference(
  ctx: StoreContext,
  unit: CommandUnit,
  kind: ReferenceKind,
  candidate: Uint8Array,
  onMatch: (card: FencedCard, compared: Uint8Array) => Promise<void>,
): Promise<VerifyOutcome> {
  const consumed = await unit.write((card) => consumeReferenceTry(card.tx, ctx.fence, kind));
  if (!consumed) {
    await ctx.audit(unit, AUDIT_EVENTS.pinFailed, { reference: kind, remaining: 0, blocked: true });
    return { ok: false, remaining: 0 };
  }
  // The try is durable before the comparison starts.
  await unit.checkpoint(wrongReferenceResponse(consumed.remaining));

  const result = await checkPinVerifier(
    ctx.kek,
    { cardId: ctx.fence.cardId, kind },
    consumed.verifier,
    candidate,
  );
  if (!result.match) {
    const blocked = consumed.remaining === 0;
    await ctx.audit(unit, blocked ? AUDIT_EVENTS.pinBlocked : AUDIT_EVENTS.pinFailed, {
      reference: kind,
      remaining: consumed.remaining,
    });
    return { ok: false, remaining: consumed.remaining };
  }
  await unit.write(async (card) => {
    await restoreReference(card.tx, ctx.fence, kind, result.replacementVerifier ?? consumed.verifier);
    await onMatch(card, consumed.verifier);
  });
  return { ok: true };
}

/** What the PIN policy said about a new PIN before any try: whether it is reused, what to keep. */
interface PinPolicyVerdict {
  readonly reused: boolean;
  /** History entries to keep (the current PIN is one of the profile's `history`). */
  readonly keep: number;
  /** The current PIN's verifier (none while the PIN was never set). */
  readonly current: Uint8Array | undefined;
}

/** The profile's PUK policy on a new PUK: a refusal throws (`6A80`) before any try is consumed. */
async function pukPolicyCheck(unit: CommandUnit, cardId: string, next: Uint8Array): Promise<void> {
  const record = await readPinRecord(await unit.reader(), cardId, 0);
  checkPukContent(pukRulesOf(record.profile), next);
}

/**
 * The profile's PIN policy on a new PIN: the content rules throw (`6A80`, before any try); the
 * history is compared here, before the try and outside any transaction (the key provider), but
 * its answer is only given after the current PIN or the PUK matched.
 */
async function pinPolicyCheck(
  ctx: StoreContext,
  unit: CommandUnit,
  next: Uint8Array,
): Promise<PinPolicyVerdict> {
  const record = await readPinRecord(await unit.reader(), ctx.fence.cardId, MAX_PIN_HISTORY);
  const rules = pinRulesOf(record.profile);
  checkPinContent(rules, next);
  const current = record.unset ? undefined : record.verifier;
  const verifiers = current ? [current, ...record.history] : record.history;
  const reused = await isRecentPin(ctx.kek, ctx.fence.cardId, rules, verifiers, next);
  return { reused, keep: Math.max(rules.history - 1, 0), current };
}
