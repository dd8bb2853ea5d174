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
 * Why a command and not a timer inside the running server: the running server unseals the CA key
 * only for what a profile opts in to (short-lived 9A, renewal at sign-in, self-service enrollment;
 * docs/personalization.md "Security notes"); a card nobody signs in with is renewed by the admin
 * process that signs, from a timer (`renew --due`).
 *
 * With `externalCa` the organisation's CA issues the renewed certificates through the same adapter
 * as enrollment (server/ca/external-ca.ts). The card server cannot revoke what that CA issued: the
 * replaced certificates' serials are returned (`notRevoked`) so the administrator can revoke them
 * there. `renew --due` with an external CA finds the due cards by the certificates on the cards
 * themselves, since the embedded CA's register does not hold the external CA's certificates.
 *
 * A profile may opt in to renewal at sign-in (`renewal.atSignIn`): then the server renews a due card
 * when a session opens it (server/session/card-handling.ts), with this same renewCard.
 *
 * Two renewals of one card may overlap (two sign-ins at once, a sign-in and `renew --due`): keys
 * and certificates are prepared before the transaction, which is where the card is locked. So the
 * transaction first checks that the renewed slots' certificates are still those read at the start
 * (and, with `onlyIfDueAt`, that the card is still due); if not, the later renewal writes nothing
 * and fails with ERR_CARD_CHANGED_MEANWHILE, which renewal at sign-in takes as "already renewed".
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
import { isRetiredSlot, KEY_REF, KEY_SLOTS } from '../../apdu/piv/index.js';
import { publicKeySha256 } from '../archival/key-archive.js';
import { AUDIT_EVENTS } from '../audit/audit-log.js';
import type { ExternalCa } from '../ca/external-ca.js';
import { EnrollmentError, normaliseSerial } from '../ca/issue-certificate.js';
import { CardlinkError } from '../../protocol/errors.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import {
  findCardKey,
  firstCertificateExpiry,
  getCard,
  getCardObject,
  listCardKeys,
  listCardsWithCertificatesExpiringBefore,
  listRegisteredSerials,
  listSlotCertificateObjects,
  moveIssuedCertificate,
  moveArchivedKeys,
  putCardKey,
  putCardObject,
  type CardKeyRecord,
  type FencedCard,
  type Queryable,
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
  /** Have the organisation's CA issue (server/ca/external-ca.ts) instead of the embedded one. */
  readonly externalCa?: ExternalCa;
  /** Only these slots of the profile (renewal at sign-in leaves a short-lived 9A alone); all when absent. */
  readonly slots?: readonly number[];
  /** Added to the `card.renewed` audit entry's details. */
  readonly auditDetails?: Readonly<Record<string, string>>;
  /** The recovery certificate file, for a profile with `archiveKeyManagementKey` (enroll.ts). */
  readonly recoveryCertificate?: string | undefined;
  /**
   * Renew only if the card is still inside its renewal window at this time, checked again inside
   * the transaction (renewal at sign-in, `renew --due` with the embedded CA): a card another
   * renewal got to first fails with ERR_CARD_CHANGED_MEANWHILE and nothing is written.
   */
  readonly onlyIfDueAt?: Date;
}

/**
 * Another change reached the card between the start of a renewal and its transaction (a renewal
 * from a second sign-in, an enrollment): the renewal wrote nothing. Not a failure of the card.
 */
export class CardChangedMeanwhileError extends CardlinkError {
  constructor(cardId: string, what: 'certificates' | 'not-due') {
    super(
      'ERR_CARD_CHANGED_MEANWHILE',
      what === 'certificates'
        ? "the card's certificates changed while the renewal was prepared (renewed meanwhile); nothing was written"
        : 'the card was renewed meanwhile: it is no longer due; nothing was written',
      { cardId },
    );
    this.name = 'CardChangedMeanwhileError';
  }
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
  /**
   * Serials (lower-case hex) of the CA-issued certificates this renewal replaced that the card
   * server did not revoke: an external CA's (it keeps its own revocation; the card server cannot
   * sign for it). Empty when the embedded CA revoked everything it replaced.
   */
  readonly notRevoked: readonly string[];
}

export async function renewCard(options: RenewOptions): Promise<RenewedCard> {
  const { storage, kek, cardId } = options;
  const card = await getCard(storage, cardId);
  const profile = parseCardProfile(card.profile, 'stored');
  const keys = options.keys ?? profile.renewal.key;
  // The slots this renewal replaces (enroll.ts takes the same ones).
  const renewing = profile.slots.map((s) => s.slot).filter((slot) => options.slots?.includes(slot) ?? true);
  const objects = await slotCertificateObjects(
    storage,
    cardId,
    profile.slots.map((s) => s.slot),
  );
  const current = certificatesOf(objects);
  const claims: Record<string, string> = claimsFromCertificates(current, profile);
  for (const [name, value] of Object.entries(options.claims ?? {}))
    claims[name] = checkClaimValue(name, value);
  const retiresKeyManagement = keys === 'new' && renewing.includes(KEY_REF.KEY_MANAGEMENT);
  // Before any key is made or certificate signed: a card whose retired slots are all taken can
  // never renew 9D with a new key, and must not cost CA signatures at every try.
  if (retiresKeyManagement) await retirementOf(storage, cardId);
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
    ...(options.externalCa ? { externalCa: options.externalCa } : {}),
    ...(options.slots ? { slots: options.slots } : {}),
    ...(options.auditDetails ? { auditDetails: options.auditDetails } : {}),
    precondition: async (fenced: FencedCard) => {
      const now = await slotCertificateObjects(fenced.tx, cardId, renewing);
      if (renewing.some((slot) => !sameBytes(now.get(slot), objects.get(slot))))
        throw new CardChangedMeanwhileError(cardId, 'certificates');
      if (
        options.onlyIfDueAt &&
        (await renewalDueSince(fenced.tx, cardId, profile, options.onlyIfDueAt)) === undefined
      )
        throw new CardChangedMeanwhileError(cardId, 'not-due');
    },
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
  const revoked = new Set(enrolled.revoked);
  // Only what this renewal replaced: a slot left out (a short-lived 9A) keeps its live certificate.
  const notRevoked = [...current]
    .filter(([slot, c]) => renewing.includes(slot) && !isSelfSigned(c))
    .map(([, c]) => c)
    .map((c) => normaliseSerial(c.serialNumber))
    .filter((serial) => !revoked.has(serial));
  return { ...enrolled, keys, notRevoked, ...(retired ? { retired } : {}) };
}

/** create-card's placeholders are self-signed; a CA's certificate names another issuer. */
function isSelfSigned(certificate: X509Certificate): boolean {
  return certificate.subject === certificate.issuer;
}

/** The certificate objects (as stored; absent when none) of these slots, by slot. */
async function slotCertificateObjects(
  q: Queryable,
  cardId: string,
  slots: readonly number[],
): Promise<Map<number, Uint8Array | undefined>> {
  const out = new Map<number, Uint8Array | undefined>();
  for (const slot of slots) {
    const tag = certificateObjectTag(slot);
    out.set(slot, tag === undefined ? undefined : await getCardObject(q, cardId, tag));
  }
  return out;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array | undefined): boolean {
  return a === undefined || b === undefined ? a === b : Buffer.from(a).equals(Buffer.from(b));
}

/** The readable certificates among certificate objects, by slot. */
function certificatesOf(objects: ReadonlyMap<number, Uint8Array | undefined>): Map<number, X509Certificate> {
  const out = new Map<number, X509Certificate>();
  for (const [slot, value] of objects) {
    const certificate = value ? readCertificateObject(value) : undefined;
    if (certificate) out.set(slot, certificate);
  }
  return out;
}

/** The readable certificates in the card's profile slots, by slot. */
async function currentSlotCertificates(
  storage: Storage,
  cardId: string,
  profile: CardProfile,
): Promise<Map<number, X509Certificate>> {
  return certificatesOf(
    await slotCertificateObjects(
      storage,
      cardId,
      profile.slots.map((s) => s.slot),
    ),
  );
}

function readCertificateObject(value: Uint8Array): X509Certificate | undefined {
  if (value.length === 0) return undefined;
  try {
    return new X509Certificate(decodeCertificateObject(value));
  } catch {
    return undefined; // not a certificate we can read: it contributes nothing
  }
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
  const retirement = await retirementOf(tx, cardId);
  if (!retirement) return undefined;
  const { old, certificate, held, slot } = retirement;

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
  // The CA's register follows the certificate to its retired slot (a certificate from an external
  // CA has no row there; one the card server cannot parse was never issued by it either).
  const serial = certificateSerial(certificate);
  if (serial !== undefined) await moveIssuedCertificate(tx, cardId, serial, slot);

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
 * Where the card's key management key would retire to: undefined when 9D holds no key or no
 * certificate (nothing to retire), an ERR_ENROLLMENT when every retired slot is in use. renewCard
 * asks before preparing anything, retireKeyManagementKey again inside the transaction.
 */
async function retirementOf(
  q: Queryable,
  cardId: string,
): Promise<{ old: CardKeyRecord; certificate: Uint8Array; held: number[]; slot: number } | undefined> {
  const tag = certificateObjectTag(KEY_REF.KEY_MANAGEMENT)!;
  const [old, certificate] = await Promise.all([
    findCardKey(q, cardId, KEY_REF.KEY_MANAGEMENT),
    getCardObject(q, cardId, tag),
  ]);
  if (!old || !certificate || certificate.length === 0) return undefined;
  const held = (await listCardKeys(q, cardId)).map((k) => k.slot);
  const slot = nextRetiredSlot(held);
  if (slot === undefined)
    throw new EnrollmentError('every retired key management slot (82..95) is in use', { slot: '9D' });
  return { old, certificate, held, slot };
}

/** The serial (as the register writes it) of a certificate object, or undefined when unreadable. */
function certificateSerial(object: Uint8Array): string | undefined {
  try {
    return normaliseSerial(new X509Certificate(decodeCertificateObject(object)).serialNumber);
  } catch {
    return undefined;
  }
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
  return claimsFromCertificates(await currentSlotCertificates(storage, cardId, profile), profile);
}

function claimsFromCertificates(
  certificates: ReadonlyMap<number, X509Certificate>,
  profile: CardProfile,
): Record<string, string> {
  const claims: Record<string, string> = {};
  for (const s of profile.slots) {
    const certificate = certificates.get(s.slot);
    if (!certificate) continue;
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

/**
 * The slots whose certificates renewal looks after: all of the profile's, except a short-lived 9A
 * (`shortLived9AHours`), which is re-issued at every sign-in and always about to expire: counted,
 * it would make the card due at every sign-in and every `renew --due`.
 */
export function renewedSlots(profile: CardProfile): number[] {
  return profile.slots
    .map((s) => s.slot)
    .filter((slot) => !(slot === KEY_REF.PIV_AUTHENTICATION && profile.shortLived9AHours !== undefined));
}

/**
 * When the card is inside its profile's renewal window at `now`: the earliest notAfter of its
 * unrevoked CA-issued certificates (of `renewedSlots`), else undefined (not due, or no such
 * certificate: a card never enrolled has nothing to renew).
 */
export async function renewalDueSince(
  q: Queryable,
  cardId: string,
  profile: CardProfile,
  now: Date,
): Promise<string | undefined> {
  const renewed = new Set(renewedSlots(profile));
  const others = profile.slots.map((s) => s.slot).filter((slot) => !renewed.has(slot));
  const first = await firstCertificateExpiry(q, cardId, others);
  return first === undefined ? undefined : insideWindow(first, profile, now);
}

/** `notAfter` when it falls inside the profile's renewal window at `now`, else undefined. */
function insideWindow(notAfter: string, profile: CardProfile, now: Date): string | undefined {
  return Date.parse(notAfter) <= now.getTime() + profile.renewal.windowDays * DAY_MS ? notAfter : undefined;
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
 *
 * Without `externalCa` the due cards are those whose certificates from the embedded CA (its
 * register, `issued_certificates`) expire; with it, those whose external CA's certificates do,
 * read from the cards' slot certificates (CA-issued: not self-signed, not in the register). Each
 * set is renewed by the CA that issued it.
 */
export async function renewDueCards(options: {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly actor?: string;
  readonly now?: Date;
  readonly externalCa?: ExternalCa;
  readonly recoveryCertificate?: string | undefined;
}): Promise<DueRenewal[]> {
  const now = options.now ?? new Date();
  const cutoff = new Date(now.getTime() + MAX_RENEWAL_WINDOW_DAYS * DAY_MS);
  const candidates = options.externalCa
    ? await listCardsWithExternalCertificatesExpiringBefore(options.storage, cutoff)
    : await listCardsWithCertificatesExpiringBefore(options.storage, cutoff);
  const results: DueRenewal[] = [];
  for (const c of candidates) {
    const card = await getCard(options.storage, c.cardId);
    const profile = parseCardProfile(card.profile, 'stored');
    // An external CA's certificates are not in the embedded CA's register: their expiry comes from
    // the scan of the cards' certificates (the candidate's own first notAfter).
    const firstNotAfter = options.externalCa
      ? insideWindow(c.firstNotAfter, profile, now)
      : await renewalDueSince(options.storage, c.cardId, profile, now);
    if (firstNotAfter === undefined) continue;
    try {
      const renewed = await renewCard({
        storage: options.storage,
        kek: options.kek,
        cardId: c.cardId,
        slots: renewedSlots(profile),
        recoveryCertificate: options.recoveryCertificate,
        ...(options.actor ? { actor: options.actor } : {}),
        ...(options.now ? { now: options.now } : {}),
        // The embedded CA's due cards are checked again under the card's lock; the external CA's
        // by their certificates being the ones read (renewCard always checks that).
        ...(options.externalCa ? { externalCa: options.externalCa } : { onlyIfDueAt: now }),
      });
      results.push({ cardId: c.cardId, firstNotAfter, renewed });
    } catch (error) {
      const code = (error as { code?: unknown }).code;
      results.push({
        cardId: c.cardId,
        firstNotAfter,
        error: typeof code === 'string' ? code : 'ERR_INTERNAL',
      });
    }
  }
  return results;
}

/** Rows read per page when scanning the cards' certificate objects. */
const CERTIFICATE_SCAN_PAGE = 500;
/** The slots whose certificate objects the scan reads (retired 82..95 hold old keys on purpose). */
const SCANNED_SLOTS = KEY_SLOTS.filter((slot) => !isRetiredSlot(slot));
/** The slot of each scanned certificate object tag. */
const SLOT_OF_TAG = new Map(SCANNED_SLOTS.map((slot) => [certificateObjectTag(slot)!, slot]));

/** What the scan needs to know of one card to tell whether a certificate is the external CA's to renew. */
interface ScannedCard {
  /** Serials in the embedded CA's register (its certificates, not the external CA's). */
  readonly registered: Set<string>;
  /** The slots whose certificates count: the profile's renewedSlots, less those with an imported key. */
  readonly counted: Set<number>;
}

async function scannedCard(storage: Storage, cardId: string): Promise<ScannedCard> {
  const profile = parseCardProfile((await getCard(storage, cardId)).profile, 'stored');
  // A key and certificate put in with import-p12 (origin `imported`) came from a CA cardlink does
  // not drive: its expiry is not the external CA's business.
  const imported = new Set(
    (await listCardKeys(storage, cardId)).filter((k) => k.origin === 'imported').map((k) => k.slot),
  );
  return {
    registered: await listRegisteredSerials(storage, cardId),
    counted: new Set(renewedSlots(profile).filter((slot) => !imported.has(slot))),
  };
}

/**
 * Cards holding a certificate from an external CA (on the card, not self-signed, not in the
 * embedded CA's register) that expires before `cutoff`, the soonest first. Only the slots renewal
 * looks after count (`renewedSlots` of the card's profile: not a short-lived 9A), and not a slot
 * whose key was imported (import-p12: a third party's certificate, not the external CA's).
 */
async function listCardsWithExternalCertificatesExpiringBefore(
  storage: Storage,
  cutoff: Date,
): Promise<{ cardId: string; firstNotAfter: string }[]> {
  const tags = [...SLOT_OF_TAG.keys()];
  const first = new Map<string, Date>();
  const cards = new Map<string, ScannedCard>();
  let after: { cardId: string; tag: number } | undefined;
  for (;;) {
    const page = await listSlotCertificateObjects(storage, tags, CERTIFICATE_SCAN_PAGE, after);
    for (const row of page) {
      const certificate = readCertificateObject(row.value);
      if (!certificate || isSelfSigned(certificate) || certificate.notAfter >= cutoff) continue;
      let card = cards.get(row.cardId);
      if (!card) cards.set(row.cardId, (card = await scannedCard(storage, row.cardId)));
      if (!card.counted.has(SLOT_OF_TAG.get(row.tag)!)) continue;
      if (card.registered.has(normaliseSerial(certificate.serialNumber))) continue;
      const known = first.get(row.cardId);
      if (!known || certificate.notAfter < known) first.set(row.cardId, certificate.notAfter);
    }
    if (page.length < CERTIFICATE_SCAN_PAGE) break;
    const last = page.at(-1)!;
    after = { cardId: last.cardId, tag: last.tag };
    // Rows come by card: only the last card's facts can be needed on the next page.
    const kept = cards.get(last.cardId);
    cards.clear();
    if (kept) cards.set(last.cardId, kept);
  }
  return [...first]
    .sort((a, b) => a[1].getTime() - b[1].getTime())
    .map(([cardId, notAfter]) => ({ cardId, firstNotAfter: notAfter.toISOString() }));
}
