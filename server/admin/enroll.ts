/**
 * `cardlink admin enroll`: personalization with certificates from the issuing CA
 * (docs/personalization.md). For every slot of the card's profile:
 *
 *   1. a new key pair is generated here, in the card server (the private key never leaves it);
 *   2. a PKCS#10 request is signed by that key through the same key-store signer a card slot uses
 *      (proof of possession: the CA checks the request's signature before it issues);
 *   3. the CA issues the certificate from the slot's template, filled with the user's claims:
 *      the embedded CA (server/ca/issuing-ca.ts), or the organisation's through the external CA
 *      command (server/ca/external-ca.ts), which gets a request carrying the template's names
 *      and usages, also signed by the new key.
 *
 * Then ONE transaction fences the card (`lockCardForChange`: the epoch goes up, so a write begun
 * on the old keys is refused, but a session holding the card keeps it: it reloads the card and
 * pushes CARD_CHANGED, and the daemon re-inserts it with the new certificates), replaces the slots' sealed
 * keys, writes the certificates into the card's certificate objects, registers them, revokes the
 * certificates they supersede and appends the audit entry. A failure leaves the card as it was.
 * When something was revoked, a new CRL is signed afterwards, outside that transaction: when that
 * signature fails (an HSM busy or away, a KEK error) the card has changed all the same, so the
 * result is still a success, carrying `crlError` for the caller to say (CRL_NOT_RESIGNED).
 */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';
import {
  cardSigningKey,
  certificateObjectTag,
  encodeCertificateObject,
  Name,
  Pkcs10CertificateRequestGenerator,
  type CardSigningKey,
  type Pkcs10CertificateRequest,
} from '../../apdu/piv/certificates/index.js';
import { generateKeyPair, prepareSigner } from '../../apdu/piv/crypto/index.js';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import {
  ARCHIVED_SLOT,
  prepareArchive,
  publicKeySha256,
  recoveryCertificateFor,
  storeArchive,
} from '../archival/key-archive.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { issueCrlAfterCommit, type CrlError } from '../ca/crl.js';
import { externalRequestPem, issueWithCommand, type ExternalCa } from '../ca/external-ca.js';
import {
  certificateSha256,
  EnrollmentError,
  issueCertificate,
  type IssuedCertificate,
} from '../ca/issue-certificate.js';
import { openIssuingCa } from '../ca/issuing-ca.js';
import { STORED_TOUCH_POLICY } from '../cards/key-store.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { sealSecret, unsealSecret } from '../keys/sealing.js';
import {
  detachArchivedKeys,
  findCardKey,
  findUserById,
  getCard,
  lockCardForChange,
  putCardKey,
  putCardObject,
  recordIssuedCertificate,
  revokeCardCertificates,
  type FencedCard,
  type Storage,
} from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR } from './admin-common.js';
import { checkClaimValue, resolveTemplate, type ResolvedTemplate } from './certificate-template.js';
import { parseCardProfile } from './profile.js';

export interface EnrollOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  readonly cardId: string;
  /**
   * The user's claims (email, upn, name, ...) the templates name. `sub` is the user's subject
   * at the identity provider and `name` defaults to it.
   */
  readonly claims?: Readonly<Record<string, string>>;
  readonly actor?: string;
  readonly now?: Date;
  /**
   * Have the organisation's CA issue instead of the embedded one (server/ca/external-ca.ts).
   * Its certificates are neither registered nor revoked here: that is the external CA's job. The
   * embedded CA's certificates the new ones replace are still revoked (and a CRL signed).
   */
  readonly externalCa?: ExternalCa;
  /**
   * Renewal (server/admin/renew.ts): `same` certifies each slot's current key again instead of
   * generating a new one. Default `new`.
   */
  readonly keys?: 'new' | 'same';
  /** Only these slots of the profile (renewal, short-lived 9A: `[0x9a]`); all of them when absent. */
  readonly slots?: readonly number[];
  /**
   * Runs inside the transaction, after the card is taken and before the slots' keys and
   * certificates are replaced (renewal moves the old key management key to a retired slot here).
   * What it returns is added to the audit entry's details.
   */
  readonly beforeReplace?: (card: FencedCard) => Promise<Record<string, unknown> | undefined>;
  /**
   * Runs inside the transaction right after the card is taken, before anything is written: it
   * throws to abort with nothing written. Renewal checks here that nobody renewed the card while
   * its keys and certificates were being prepared (two sign-ins at once, renew.ts).
   */
  readonly precondition?: (card: FencedCard) => Promise<void>;
  /** The audit event (default `card.enrolled`). */
  readonly auditEvent?: string;
  /** Added to the audit entry's details (renewal at sign-in: what started it, in which session). */
  readonly auditDetails?: Readonly<Record<string, string>>;
  /** Validity in hours instead of the template's days (short-lived certificates). */
  readonly validityHours?: number;
  /**
   * The recovery certificate file (server setting `keyArchival.recoveryCertificate`): needed when
   * the profile has `archiveKeyManagementKey` and 9D is enrolled (server/archival/key-archive.ts).
   */
  readonly recoveryCertificate?: string | undefined;
}

export interface EnrolledSlot {
  readonly slot: number;
  readonly algorithm: KeyAlgorithm;
  /** Certificate serial number, lower-case hex. */
  readonly serial: string;
  readonly subject: string;
  readonly notAfter: string;
  /** DER. */
  readonly certificate: Uint8Array;
}

export interface EnrolledCard {
  readonly cardId: string;
  readonly cardSerial: number;
  readonly slots: readonly EnrolledSlot[];
  /** Serials of the certificates the new ones superseded (revoked). */
  readonly revoked: readonly string[];
  /** The CRL signed after the revocation, if any. */
  readonly crlNumber?: number;
  /** SHA-256 of the recovery certificate the new 9D key was archived for, when it was. */
  readonly keyArchivedFor?: string;
  /**
   * Set when the change committed but the CRL that follows a revocation could not be signed: the
   * enrollment stands (a retry would change the card again); `cardlink admin ca crl` signs it.
   */
  readonly crlError?: CrlError;
}

interface PreparedSlot {
  readonly slot: number;
  readonly algorithm: KeyAlgorithm;
  readonly pinPolicy: string;
  readonly publicKeySpki: Uint8Array;
  readonly pkcs8: Buffer;
  readonly issued: IssuedCertificate;
  /** card_keys.origin: `generated` for a new key, the old key's origin when it is kept. */
  readonly origin: string;
}

export async function enrollCard(options: EnrollOptions): Promise<EnrolledCard> {
  const { storage, kek, cardId } = options;
  const actor = options.actor ?? DEFAULT_ADMIN_ACTOR;
  const card = await getCard(storage, cardId);
  const profile = parseCardProfile(card.profile, 'stored');
  const user = await findUserById(storage, card.userId);
  const claims: Record<string, string> = { sub: user?.subject ?? '', name: user?.subject ?? '' };
  for (const [name, value] of Object.entries(options.claims ?? {}))
    claims[name] = checkClaimValue(name, value);
  const ca = options.externalCa ? undefined : await openIssuingCa(storage, kek);
  const issuer: SlotIssuer = ca
    ? (request) =>
        issueCertificate(ca, {
          request: request.request,
          template: request.template,
          claims,
          cardSerial: card.serial,
          slot: request.slot,
          ...(options.now ? { now: options.now } : {}),
        })
    : async (request) =>
        issueWithCommand(
          options.externalCa!,
          await externalRequestPem(request.key, request.template, claims, card.serial, request.slot),
          request.publicKeySpki,
          request.slot,
          options.now,
        );

  const slots = profile.slots.filter((s) => options.slots?.includes(s.slot) ?? true);
  if (slots.length === 0) throw new EnrollmentError('the card profile has none of the slots to enroll');
  // Before any key is made or certificate issued: archival required without a usable recovery
  // certificate refuses the enrollment with nothing written (an external CA issued nothing yet).
  const recovery = await recoveryCertificateFor(
    profile.archiveKeyManagementKey,
    slots.map((s) => s.slot),
    options.recoveryCertificate,
    options.now,
  );
  const prepared: PreparedSlot[] = [];
  const prepare = async (s: (typeof profile.slots)[number]) => {
    const template = resolveTemplate(s.slot, s.algorithm, s.template, profile.certificateValidityDays);
    return prepareSlot(
      s.slot,
      s.algorithm,
      s.pinPolicy,
      options.validityHours === undefined
        ? template
        : { ...template, validityDays: options.validityHours / 24 },
      card.serial,
      issuer,
      options.keys === 'same' ? await currentKey(options, card.tenantId, s.slot, s.algorithm) : undefined,
    );
  };
  try {
    if (ca) {
      const settled = await Promise.allSettled(slots.map(prepare));
      for (const r of settled) if (r.status === 'fulfilled') prepared.push(r.value); // zeroed below
      const failed = settled.find((r) => r.status === 'rejected');
      if (failed) throw failed.reason;
    } else {
      // One request at a time: an external CA command (openssl ca's index and serial files) need
      // not be safe to run concurrently.
      for (const s of slots) prepared.push(await prepare(s));
    }
    // Built outside the transaction (CPU work); stored inside it, with the key.
    const archives = recovery
      ? prepared
          .filter((p) => p.slot === ARCHIVED_SLOT)
          .map((p) =>
            prepareArchive(recovery, {
              slot: p.slot,
              pkcs8: p.pkcs8,
              publicKeySpki: p.publicKeySpki,
              certificate: p.issued.der,
            }),
          )
      : [];

    const revoked = await storage.transaction(async (tx) => {
      const fenced = await lockCardForChange(tx, cardId);
      if (options.precondition) await options.precondition(fenced);
      // The embedded CA's certificates these slots held are superseded whichever CA issues now
      // (a card moving to the external CA must not stay "due" in the embedded CA's register);
      // the external CA's own are not in the register: revoking them is that CA's job.
      const superseded = await revokeCardCertificates(
        tx,
        cardId,
        'superseded',
        prepared.map((p) => p.slot),
      );
      const extra = options.beforeReplace ? await options.beforeReplace(fenced) : undefined;
      for (const p of prepared) {
        const sealed = await sealSecret(
          kek,
          p.pkcs8,
          { tenantId: fenced.tenantId, cardId, slot: p.slot },
          fenced.version,
        );
        await putCardKey(fenced, {
          slot: p.slot,
          algorithm: p.algorithm,
          publicKeySpki: p.publicKeySpki,
          key: sealed,
          pinPolicy: p.pinPolicy,
          touchPolicy: STORED_TOUCH_POLICY,
          origin: p.origin,
        });
        await putCardObject(fenced, certificateObjectTag(p.slot)!, encodeCertificateObject(p.issued.der));
        // Archives of a key this one replaced (not retired: renewal moved those already) say so.
        if (p.slot === ARCHIVED_SLOT)
          await detachArchivedKeys(tx, cardId, p.slot, publicKeySha256(p.publicKeySpki));
        for (const archive of archives) if (archive.slot === p.slot) await storeArchive(tx, cardId, archive);
        if (ca)
          await recordIssuedCertificate(tx, {
            serial: p.issued.serial,
            caId: ca.record.id,
            cardId,
            slot: p.slot,
            subject: p.issued.subject,
            notAfter: p.issued.notAfter.toISOString(),
          });
      }
      await appendAudit(tx, {
        actor,
        eventType: options.auditEvent ?? AUDIT_EVENTS.cardEnrolled,
        cardId,
        details: {
          ...options.auditDetails,
          ...extra,
          keys: options.keys ?? 'new',
          caId: ca?.record.id ?? 'external',
          cardSerial: card.serial,
          slots: prepared.map((p) => ({
            slot: `0x${p.slot.toString(16)}`,
            algorithm: p.algorithm,
            serial: p.issued.serial,
            certificateSha256: certificateSha256(p.issued.der),
          })),
          superseded,
          ...(recovery ? { keyArchivedFor: recovery.sha256 } : {}),
        },
      });
      if (superseded.length > 0) {
        await appendAudit(tx, {
          actor,
          eventType: AUDIT_EVENTS.certificatesRevoked,
          cardId,
          details: { reason: 'superseded', serials: superseded },
        });
      }
      return superseded;
    });
    const crl = revoked.length > 0 ? await issueCrlAfterCommit({ storage, kek, ca, actor }) : undefined;
    return {
      cardId,
      cardSerial: card.serial,
      slots: prepared.map((p) => ({
        slot: p.slot,
        algorithm: p.algorithm,
        serial: p.issued.serial,
        subject: p.issued.subject,
        notAfter: p.issued.notAfter.toISOString(),
        certificate: p.issued.der,
      })),
      revoked,
      ...(crl?.crlNumber !== undefined ? { crlNumber: crl.crlNumber } : {}),
      ...(crl?.crlError ? { crlError: crl.crlError } : {}),
      ...(recovery ? { keyArchivedFor: recovery.sha256 } : {}),
    };
  } finally {
    for (const p of prepared) p.pkcs8.fill(0);
  }
}

/** What the CA side gets for one slot: the request (embedded CA) or the key to make one (external). */
interface SlotRequest {
  readonly slot: number;
  readonly template: ResolvedTemplate;
  readonly request: Pkcs10CertificateRequest;
  readonly key: CardSigningKey;
  readonly publicKeySpki: Uint8Array;
}

type SlotIssuer = (request: SlotRequest) => Promise<IssuedCertificate>;

/** The slot's current key (renewal with the same key), unsealed; zero `pkcs8` after use. */
async function currentKey(
  options: EnrollOptions,
  tenantId: string,
  slot: number,
  algorithm: KeyAlgorithm,
): Promise<{ pkcs8: Buffer; origin: string }> {
  const record = await findCardKey(options.storage, options.cardId, slot);
  const hex = slot.toString(16).toUpperCase();
  if (!record) throw new EnrollmentError('the slot holds no key to renew with', { slot: hex });
  if (record.algorithm !== algorithm)
    throw new EnrollmentError("the slot's key is not of the profile's algorithm", { slot: hex });
  const pkcs8 = await unsealSecret(options.kek, record.key, { tenantId, cardId: options.cardId, slot });
  return { pkcs8, origin: record.origin };
}

async function prepareSlot(
  slot: number,
  algorithm: KeyAlgorithm,
  pinPolicy: string,
  template: ResolvedTemplate,
  cardSerial: number,
  issue: SlotIssuer,
  existing?: { pkcs8: Buffer; origin: string },
): Promise<PreparedSlot> {
  let pkcs8: Buffer;
  let publicKeySpki: Uint8Array;
  let privateKey: KeyObject;
  if (existing) {
    pkcs8 = existing.pkcs8;
    privateKey = createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' });
    publicKeySpki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  } else {
    const pair = await generateKeyPair(algorithm);
    privateKey = pair.privateKey;
    publicKeySpki = pair.publicKeySpki;
    pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  }
  try {
    // The request is signed by the new key the way the card signs (key-store signer): proof of possession.
    const signer = prepareSigner(privateKey);
    const key = cardSigningKey(createPublicKey(privateKey), async (input) => signer.sign(input));
    const request = await Pkcs10CertificateRequestGenerator.create(
      {
        name: new Name([
          { CN: [{ utf8String: `card ${cardSerial} slot ${slot.toString(16).toUpperCase()}` }] },
        ]),
        keys: key.keys,
        signingAlgorithm: key.signingAlgorithm,
      },
      key.crypto,
    );
    const issued = await issue({ slot, template, request, key, publicKeySpki });
    return {
      slot,
      algorithm,
      pinPolicy,
      publicKeySpki,
      pkcs8,
      issued,
      origin: existing?.origin ?? 'generated',
    };
  } catch (error) {
    pkcs8.fill(0);
    throw error;
  }
}
