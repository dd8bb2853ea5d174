/**
 * Certificate renewal (docs/personalization.md, "Lifecycle"): `cardlink admin renew <cardId>` and
 * `cardlink admin renew --due` (run from a timer, like `ca crl`).
 *
 * Renewal is enrollment again (enroll.ts) with three differences:
 *   - the profile's `renewal.key` decides whether each slot gets a new key (`new`) or its current
 *     key is certified again (`same`);
 *   - the claims the templates need are read back from the card's current certificates (the
 *     administrator may override them with --claim), so a timer can renew without anyone typing
 *     the user's e-mail address again;
 *   - with new keys, the old key management key (9D) and its certificate move to the next retired
 *     slot (82..95) and the Key History object is rewritten, in the same transaction, so mail
 *     encrypted to the old certificate still decrypts with the card.
 *
 * Why not a timer inside the running server: the server never unseals the CA key (only the admin
 * process that signs does, docs/personalization.md "Security notes"); `renew --due` keeps it so.
 */
import {
  certificateObjectTag,
  decodeCertificateObject,
  SubjectAlternativeNameExtension,
  X509Certificate,
} from '../../apdu/piv/certificates/index.js';
import {
  encodeKeyHistory,
  keyHistoryOnCardCount,
  nextRetiredSlot,
  OBJECT_TAG,
  retiredCertificateTag,
} from '../../apdu/piv/objects/index.js';
import { isRetiredSlot, KEY_REF } from '../../apdu/piv/index.js';
import { publicKeySha256 } from '../archival/key-archive.js';
import { AUDIT_EVENTS } from '../audit/audit-log.js';
import { EnrollmentError } from '../ca/issue-certificate.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import {
  findCardKey,
  getCard,
  getCardObject,
  listCardKeys,
  listCardsWithCertificatesExpiringBefore,
  moveArchivedKeys,
  putCardKey,
  putCardObject,
  type FencedCard,
  type Storage,
} from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { checkClaimValue, resolveTemplate, type ResolvedTemplate } from './certificate-template.js';
import { enrollCard, type EnrolledCard } from './enroll.js';
import { MAX_RENEWAL_WINDOW_DAYS, parseCardProfile, type CardProfile } from './profile.js';

const DAY_MS = 86_400_000;

export interface RenewOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly cardId: string;
  /** Overrides the profile's `renewal.key`. */
  readonly keys?: 'new' | 'same';
  /** Claims that override those read from the current certificates. */
  readonly claims?: Readonly<Record<string, string>>;
  readonly actor?: string;
  readonly now?: Date;
  /** The recovery certificate file, for a profile with `archiveKeyManagementKey` (enroll.ts). */
  readonly recoveryCertificate?: string | undefined;
}

export interface RetiredKey {
  /** The retired slot (0x82..0x95) the old key management key moved to. */
  readonly slot: number;
  /** keysWithOnCardCerts written to the Key History object. */
  readonly keyHistoryOnCard: number;
}

export interface RenewedCard extends EnrolledCard {
  readonly keys: 'new' | 'same';
  readonly retired?: RetiredKey;
}

export async function renewCard(options: RenewOptions): Promise<RenewedCard> {
  const { storage, kek, cardId } = options;
  const card = await getCard(storage, cardId);
  const profile = parseCardProfile(card.profile, 'stored');
  const keys = options.keys ?? profile.renewal.key;
  const claims: Record<string, string> = await claimsFromCard(storage, cardId, profile);
  for (const [name, value] of Object.entries(options.claims ?? {}))
    claims[name] = checkClaimValue(name, value);
  const retiresKeyManagement = keys === 'new' && profile.slots.some((s) => s.slot === KEY_REF.KEY_MANAGEMENT);
  let retired: RetiredKey | undefined;
  const enrolled = await enrollCard({
    storage,
    kek,
    cardId,
    claims,
    keys,
    actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
    auditEvent: AUDIT_EVENTS.cardRenewed,
    recoveryCertificate: options.recoveryCertificate,
    ...(options.now ? { now: options.now } : {}),
    ...(retiresKeyManagement
      ? {
          beforeReplace: async (fenced: FencedCard) => {
            retired = await retireKeyManagementKey(fenced, kek);
            return retired
              ? {
                  retiredTo: `0x${retired.slot.toString(16)}`,
                  keyHistoryOnCard: retired.keyHistoryOnCard,
                }
              : undefined;
          },
        }
      : {}),
  });
  return { ...enrolled, keys, ...(retired ? { retired } : {}) };
}

/**
 * Moves the card's key management key and its certificate to the next retired slot and rewrites
 * the Key History object (rules in apdu/piv/objects/key-history.ts). Does nothing when 9D holds
 * no key or no certificate (with no certificate on the card, middleware could not find the key
 * for a message anyway). Fails when all 20 retired slots are in use: the administrator decides
 * which old key may go (docs/personalization.md).
 */
async function retireKeyManagementKey(fenced: FencedCard, kek: KekProvider): Promise<RetiredKey | undefined> {
  const { tx, cardId, tenantId } = fenced;
  const tag = certificateObjectTag(KEY_REF.KEY_MANAGEMENT)!;
  const [old, certificate] = await Promise.all([
    findCardKey(tx, cardId, KEY_REF.KEY_MANAGEMENT),
    getCardObject(tx, cardId, tag),
  ]);
  if (!old || !certificate || certificate.length === 0) return undefined;
  const held = (await listCardKeys(tx, cardId)).map((k) => k.slot);
  const slot = nextRetiredSlot(held);
  if (slot === undefined)
    throw new EnrollmentError('every retired key management slot (82..95) is in use', { slot: '9D' });

  // The seal binds the slot: open it where it was, seal it again for the retired slot.
  const pkcs8 = await unsealSecret(kek, old.key, { tenantId, cardId, slot: KEY_REF.KEY_MANAGEMENT });
  try {
    const sealed = await sealSecret(kek, pkcs8, { tenantId, cardId, slot }, fenced.version);
    await putCardKey(fenced, {
      slot,
      algorithm: old.algorithm,
      publicKeySpki: old.publicKeySpki,
      key: sealed,
      pinPolicy: old.pinPolicy,
      touchPolicy: old.touchPolicy,
      origin: old.origin,
    });
  } finally {
    pkcs8.fill(0);
  }
  // Its archives (old mail is what they are for) follow the key to the retired slot.
  await moveArchivedKeys(tx, cardId, publicKeySha256(old.publicKeySpki), KEY_REF.KEY_MANAGEMENT, slot);
  // The same certificate object format (70/71/FE) serves the retired containers.
  await putCardObject(fenced, retiredCertificateTag(slot - KEY_REF.RETIRED_FIRST), certificate);

  const withCertificates: number[] = [];
  for (const s of [...held, slot]) {
    if (!isRetiredSlot(s)) continue;
    const cert = await getCardObject(tx, cardId, retiredCertificateTag(s - KEY_REF.RETIRED_FIRST));
    if (cert && cert.length > 0) withCertificates.push(s);
  }
  const keyHistoryOnCard = keyHistoryOnCardCount(withCertificates);
  await putCardObject(fenced, OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(keyHistoryOnCard));
  return { slot, keyHistoryOnCard };
}

/**
 * The claims the card's current certificates were filled with: the e-mail and UPN SANs, and each
 * `{claim}` of a template's subject matched against the certificate's subject. A claim found in
 * no certificate stays missing (a subject that needs it then refuses the renewal, ERR_ENROLLMENT,
 * until the administrator gives it with --claim).
 */
export async function claimsFromCard(
  storage: Storage,
  cardId: string,
  profile: CardProfile,
): Promise<Record<string, string>> {
  const claims: Record<string, string> = {};
  for (const s of profile.slots) {
    const tag = certificateObjectTag(s.slot);
    const value = tag === undefined ? undefined : await getCardObject(storage, cardId, tag);
    if (!value || value.length === 0) continue;
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(decodeCertificateObject(value));
    } catch {
      continue; // not a certificate we can read: it contributes nothing
    }
    const template = resolveTemplate(s.slot, s.algorithm, s.template, profile.certificateValidityDays);
    for (const [name, value] of Object.entries(claimsFromCertificate(certificate, template)))
      claims[name] ??= value;
  }
  return claims;
}

export function claimsFromCertificate(
  certificate: X509Certificate,
  template: ResolvedTemplate,
): Record<string, string> {
  const claims: Record<string, string> = {};
  const san = certificate.getExtension(SubjectAlternativeNameExtension);
  for (const name of san?.names.items ?? []) {
    for (const kind of ['email', 'upn'] as const) {
      const pattern = template.san[kind];
      if (name.type === kind && pattern !== undefined)
        Object.assign(claims, matchPattern(pattern, name.value));
    }
  }
  for (const { attribute, value } of template.subject) {
    const found = certificate.subjectName.getField(attribute)[0];
    if (found !== undefined) Object.assign(claims, matchPattern(value, found));
  }
  return claims;
}

/** `{claim}`s of a template value recovered from the value it produced, or none if it does not fit. */
function matchPattern(pattern: string, produced: string): Record<string, string> {
  const names: string[] = [];
  const source = pattern
    .split(/(\{[A-Za-z0-9_.-]{1,64}\})/)
    .map((part) => {
      const m = /^\{([A-Za-z0-9_.-]{1,64})\}$/.exec(part);
      if (!m) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      names.push(m[1]!);
      return '(.+?)';
    })
    .join('');
  const match = new RegExp(`^${source}$`, 's').exec(produced);
  if (!match) return {};
  const out: Record<string, string> = {};
  names.forEach((name, i) => {
    // `serial` is the card's own, not a claim.
    if (name !== 'serial') out[name] = match[i + 1]!;
  });
  return out;
}

export interface DueRenewal {
  readonly cardId: string;
  readonly firstNotAfter: string;
  readonly renewed?: RenewedCard;
  /** The error code when this card's renewal failed (the others go on). */
  readonly error?: string;
}

/**
 * Renews every card with a CA-issued certificate inside its profile's renewal window
 * (`renewal.windowDays`, default 30). One card's failure does not stop the others; each result
 * says what happened. Meant for a daily timer (docs/server-admin.md).
 */
export async function renewDueCards(options: {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly actor?: string;
  readonly now?: Date;
  readonly recoveryCertificate?: string | undefined;
}): Promise<DueRenewal[]> {
  const now = options.now ?? new Date();
  const candidates = await listCardsWithCertificatesExpiringBefore(
    options.storage,
    new Date(now.getTime() + MAX_RENEWAL_WINDOW_DAYS * DAY_MS),
  );
  const results: DueRenewal[] = [];
  for (const c of candidates) {
    const card = await getCard(options.storage, c.cardId);
    const profile = parseCardProfile(card.profile, 'stored');
    if (Date.parse(c.firstNotAfter) > now.getTime() + profile.renewal.windowDays * DAY_MS) continue;
    try {
      const renewed = await renewCard({
        storage: options.storage,
        kek: options.kek,
        cardId: c.cardId,
        recoveryCertificate: options.recoveryCertificate,
        ...(options.actor ? { actor: options.actor } : {}),
        ...(options.now ? { now: options.now } : {}),
      });
      results.push({ cardId: c.cardId, firstNotAfter: c.firstNotAfter, renewed });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      results.push({
        cardId: c.cardId,
        firstNotAfter: c.firstNotAfter,
        error: typeof code === 'string' ? code : 'ERR_INTERNAL',
      });
    }
  }
  return results;
}
