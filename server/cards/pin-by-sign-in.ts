/**
 * The PIN set by its user after a fresh sign-in at the identity provider, instead of a PIN letter
 * (docs/personalization.md, "First PIN and forgotten PIN"):
 *
 * - First PIN: a card made with no PIN known to anyone (`create-card --without-pin`, or the
 *   profile's `pin.firstPinBySignIn`) has its PIN blocked until its user sets one here.
 * - Forgotten PIN: a card whose profile has `pin.resetBySignIn` lets its user replace a PIN (blocked
 *   or not) the same way; without it only the PUK or an administrator can.
 *
 * What is checked, in this order, all by the server (the daemon only forwards the token):
 * 1. the access token is valid for this server (the same validator as the session's AUTH);
 * 2. its `auth_time` (RFC 9068 section 2.2.1) is at most `maxAgeSeconds` old: the user typed their
 *    IdP credentials just now (the tray asks with `prompt=login` and `max_age=0`), so a stolen
 *    laptop with a live session, or a long-lived refreshed token, cannot set a PIN. A token
 *    without `auth_time` is not fresh;
 * 3. the card belongs to the token's user (another user's card and no card are the same answer);
 * 4. the card's PIN is unset, or its profile allows `resetBySignIn`;
 * 5. the profile's PIN policy (content rules, then the history).
 * Then, in one transaction fenced on the epoch read in step 3 (the session holding the card keeps
 * it: only the PIN changes, which no session caches), the PIN verifier is replaced, the counter
 * restored, the old verifier joins the history, and the audit says who and how.
 */
import { canonicalReferenceValue, type PinPolicyRefusal } from '../../apdu/piv/index.js';
import { CardStateError } from '../../apdu/piv/crypto/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import { appendAudit, AUDIT_EVENTS } from '../audit/audit-log.js';
import type { TokenValidator } from '../auth/token-validator.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { createPinVerifier } from '../keys/pin-verifier.js';
import {
  fenceCard,
  findUser,
  readPinRecord,
  recordPinReplaced,
  setReference,
  type Storage,
} from '../storage/index.js';
import { checkPinContent, isRecentPin, pinPolicyError, pinRulesOf } from './pin-rules.js';
import { MAX_PIN_HISTORY } from '../../apdu/piv/index.js';

export { DEFAULT_FRESH_SIGN_IN_MAX_AGE_SECONDS } from '../config/server-config.js';

export interface PinBySignInDeps {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly validator: TokenValidator;
  /** `pin.freshSignInMaxAgeSeconds`. */
  readonly maxAgeSeconds: number;
  /** Allowed clock difference with the IdP, as for `exp` (`auth.clockToleranceSeconds`). */
  readonly clockToleranceSeconds: number;
  readonly now?: () => Date;
}

export interface PinBySignInResult {
  /** `first`: the card had no PIN yet; `reset`: a forgotten PIN was replaced. */
  readonly kind: 'first' | 'reset';
}

function refused(
  code: 'ERR_SIGN_IN_NOT_FRESH' | 'ERR_PIN_SET_NOT_ALLOWED' | 'ERR_PIN_POLICY' | 'ERR_CARD_NOT_FOUND',
  message: string,
  context: Record<string, string | number | boolean> = {},
): CardlinkError {
  return new CardlinkError(code, message, context);
}

/**
 * Sets the card's PIN for the token's user after the checks above. Throws a CardlinkError:
 * ERR_AUTH_TOKEN_INVALID (through the validator), ERR_SIGN_IN_NOT_FRESH, ERR_CARD_NOT_FOUND,
 * ERR_PIN_SET_NOT_ALLOWED, ERR_PIN_POLICY (`context.refusal`), ERR_CARD_TAKEN_OVER when the card
 * changed hands meanwhile.
 */
export async function setPinBySignIn(
  deps: PinBySignInDeps,
  accessToken: string,
  cardId: string,
  newPin: Uint8Array,
): Promise<PinBySignInResult> {
  const { storage, kek } = deps;
  const token = await deps.validator.validate(accessToken);
  const now = (deps.now ?? (() => new Date()))();
  const age = token.authTime ? (now.getTime() - token.authTime.getTime()) / 1000 : Infinity;
  if (!(age <= deps.maxAgeSeconds + deps.clockToleranceSeconds)) {
    throw refused(
      'ERR_SIGN_IN_NOT_FRESH',
      token.authTime
        ? `Setting a PIN needs a sign-in of the last ${deps.maxAgeSeconds} s; this one is ${Math.round(age)} s old. Sign in again.`
        : 'Setting a PIN needs a fresh sign-in; the token does not say when the user signed in (auth_time).',
      { maxAgeSeconds: deps.maxAgeSeconds, ...(Number.isFinite(age) ? { ageSeconds: Math.round(age) } : {}) },
    );
  }
  const user = await findUser(storage, token.issuer, token.subject);
  const record = await readPinRecord(storage, cardId, MAX_PIN_HISTORY).catch(() => undefined);
  if (!user || !record || record.userId !== user.id || record.tenantId !== token.tenant)
    throw refused('ERR_CARD_NOT_FOUND', 'No such card of this user.', { cardId: cardId.slice(0, 64) });
  const rules = pinRulesOf(record.profile);
  const kind = record.unset ? 'first' : 'reset';
  const audit = (eventType: string, details: Record<string, unknown>) =>
    storage.transaction((tx) => appendAudit(tx, { actor: `user:${user.id}`, eventType, cardId, details }));

  if (kind === 'reset' && !rules.resetBySignIn) {
    await audit(AUDIT_EVENTS.pinSetRefused, { reason: 'not-allowed' });
    throw refused(
      'ERR_PIN_SET_NOT_ALLOWED',
      "This card's PIN is set, and its policy does not let a sign-in replace it: use the PUK, or ask an administrator.",
    );
  }
  let value: Uint8Array;
  try {
    value = canonicalReferenceValue(newPin);
    checkPinContent(rules, value);
  } catch (error) {
    const refusal: PinPolicyRefusal =
      error instanceof CardStateError && error.reason === 'PIN_POLICY'
        ? (error.context.refusal as PinPolicyRefusal)
        : newPin.length < rules.minLength
          ? 'too-short'
          : 'too-long';
    await audit(AUDIT_EVENTS.pinSetRefused, { reason: 'policy', refusal });
    throw policyRefusal(refusal);
  }
  const current = record.unset ? [] : [record.verifier];
  if (await isRecentPin(kek, cardId, rules, [...current, ...record.history], value)) {
    await audit(AUDIT_EVENTS.pinSetRefused, { reason: 'policy', refusal: 'reused' });
    throw policyRefusal('reused');
  }
  const verifier = await createPinVerifier(kek, { cardId, kind: 'pin' }, value);
  await storage.transaction(async (tx) => {
    const card = await fenceCard(tx, { cardId, epoch: record.sessionEpoch });
    await setReference(card, 'pin', verifier);
    await recordPinReplaced(card, record.unset ? undefined : record.verifier, Math.max(rules.history - 1, 0));
    await appendAudit(tx, {
      actor: `user:${user.id}`,
      eventType: AUDIT_EVENTS.pinSetBySignIn,
      cardId,
      details: { kind, authTime: token.authTime!.toISOString() },
    });
  });
  return { kind };
}

function policyRefusal(refusal: PinPolicyRefusal): CardlinkError {
  const error = pinPolicyError(refusal);
  return new CardlinkError('ERR_PIN_POLICY', error.message, { refusal });
}
