/**
 * `cardlink admin create-card`: a new card for a user, from a profile.
 *
 * Everything that takes time or calls the key provider happens first, in memory: PIN, PUK and
 * management key (generated when not supplied), key pairs, self-signed certificates (signed with
 * the fresh keys through the same prepared signers the card uses), PIN/PUK verifiers, sealing of
 * every secret. Then ONE transaction writes the tenant/user (if new), the card row, its sealed
 * keys, its data objects (CHUID with a fresh GUID, CCC, Discovery, Key History, certificates) and
 * the audit entry. A failure anywhere leaves no card behind, and the secrets are returned once,
 * to the caller, and never stored.
 */
import { createHash, randomBytes, randomInt } from 'node:crypto';
import type { CardIdentity, KeyAlgorithm, ManagementKeyAlgorithm, PinPolicy } from '../../apdu/piv/index.js';
import {
  certificateObjectTag,
  encodeCertificateObject,
  createSelfSignedCertificate,
  MAX_COMMON_NAME_LENGTH,
} from '../../apdu/piv/certificates/index.js';
import {
  isRetiredSlot,
  isTrivialPin,
  KEY_REF,
  keySlotTitle,
  retiredSlotNumber,
} from '../../apdu/piv/index.js';
import {
  generateKeyPair,
  MANAGEMENT_KEY_CIPHERS,
  validateManagementKey,
  prepareSigner,
} from '../../apdu/piv/crypto/index.js';
import { OBJECT_TAG, defaultObjects, encodeKeyHistory } from '../../apdu/piv/objects/index.js';
import {
  prepareArchive,
  recoveryCertificateFor,
  storeArchive,
  type PreparedArchive,
} from '../archival/key-archive.js';
import type { RecoveryCertificate } from '../archival/recovery-certificate.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { STORED_TOUCH_POLICY } from '../cards/key-store.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { createPinVerifier } from '../keys/pin-verifier.js';
import { sealSecret } from '../keys/sealing.js';
import {
  createCard as insertCard,
  createTenant,
  ensureUser,
  findTenant,
  highestSerialInRange,
  INITIAL_CARD_VERSION,
  isSerialTaken,
  MANAGEMENT_KEY_SLOT,
  newCardId,
  putCardKey,
  putCardObject,
  type FencedCard,
  type SealedRecord,
  type Storage,
  type Tx,
} from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR, type AdminUser } from './admin-common.js';
import {
  checkCardLabel,
  checkReferenceValue,
  parseCardProfile,
  profileToJson,
  ProfileError,
  type CardProfile,
  type ReferencePolicy,
  type SerialRange,
} from './profile.js';

/** Random serials tried before giving up (a collision among 2^31 values is already rare). */
export const SERIAL_ATTEMPTS = 8;
/** Serials are below 2^31, like real tokens (yubico-piv-tool prints them as a signed int). */
export const SERIAL_LIMIT = 0x80000000;

export interface CreateCardOptions {
  readonly storage: Storage;
  readonly kek: KekProvider;
  /** The card's owner as the identity provider names them, and their tenant (id; created if new). */
  readonly user: AdminUser;
  /** A checked profile, or its JSON (checked here). */
  readonly profile: CardProfile | unknown;
  /** Card label; default the profile's. */
  readonly label?: string;
  /** Digits, within the profile's PIN policy; generated when absent. */
  readonly pin?: string;
  /**
   * No PIN known to anyone (default: the profile's `pin.firstPinBySignIn`): the PIN starts
   * blocked, its verifier of a random value nobody sees, until the user sets it after a fresh
   * sign-in (server/cards/pin-by-sign-in.ts). Not with `pin`.
   */
  readonly noPin?: boolean;
  readonly puk?: string;
  /** Hex or bytes of the profile's management key algorithm; generated when absent. */
  readonly managementKey?: string | Uint8Array;
  /** 32-bit serial; random below 2^31 when absent. */
  readonly serial?: number;
  /** Audit actor; default `admin:cli`. */
  readonly actor?: string;
  /** Certificates' start of validity; default now. */
  readonly now?: Date;
  /**
   * The recovery certificate file (server setting `keyArchival.recoveryCertificate`): needed when
   * the profile has `archiveKeyManagementKey` (server/archival/key-archive.ts).
   */
  readonly recoveryCertificate?: string | undefined;
}

export interface CreatedSlot {
  readonly slot: number;
  readonly algorithm: KeyAlgorithm;
  readonly pinPolicy: PinPolicy;
  /** SubjectPublicKeyInfo, DER. */
  readonly publicKeySpki: Uint8Array;
  /** The self-signed certificate (DER), when the profile asks for one. */
  readonly certificate?: Uint8Array;
}

export interface CreatedCard {
  readonly cardId: string;
  readonly tenantId: string;
  readonly userId: string;
  readonly label: string;
  readonly serial: number;
  /** The CHUID GUID, hex. */
  readonly guid: string;
  /** The card's secrets, shown to the administrator once; the server keeps only verifiers and seals. */
  /** Empty when `pinUnset`. */
  readonly pin: string;
  /** Made with no PIN known to anyone (the PIN is blocked until the user sets it). */
  readonly pinUnset: boolean;
  readonly puk: string;
  readonly managementKey: { readonly algorithm: ManagementKeyAlgorithm; readonly key: string };
  /** Which secrets were generated here (rather than supplied). */
  readonly generated: { readonly pin: boolean; readonly puk: boolean; readonly managementKey: boolean };
  readonly slots: readonly CreatedSlot[];
  /** SHA-256 of the recovery certificate the 9D key was archived for, when it was. */
  readonly keyArchivedFor?: string;
}

interface PreparedSlot extends CreatedSlot {
  readonly sealed: SealedRecord;
  readonly archive?: PreparedArchive;
}

export async function createCard(options: CreateCardOptions): Promise<CreatedCard> {
  const { storage, kek } = options;
  const profile = parseCardProfile(options.profile); // also re-checks an already parsed profile
  const user = checkUser(options.user);
  const label = options.label === undefined ? profile.label : checkCardLabel(options.label);
  const actor = options.actor ?? DEFAULT_ADMIN_ACTOR;
  const now = options.now ?? new Date();
  if (
    options.serial !== undefined &&
    (!Number.isInteger(options.serial) || options.serial < 0 || options.serial > 0xffffffff)
  ) {
    throw new ProfileError('serial', 'must be a 32-bit unsigned integer');
  }

  const noPin = options.noPin ?? profile.pin.firstPinBySignIn;
  if (noPin && options.pin !== undefined)
    throw new ProfileError('pin', 'a card made with no PIN takes no PIN (drop the PIN or the no-PIN option)');
  const pin = options.pin ?? randomDigits(profile.pin);
  const puk = options.puk ?? randomDigits(profile.puk);
  const pinBytes = checkReferenceValue(pin, profile.pin, 'pin');
  const pukBytes = checkReferenceValue(puk, profile.puk, 'puk');
  // The PUK policy (apdu/piv/pin-policy.ts) on the administrator's PUK too: the PUK is the one
  // value that reopens a blocked card, so a guessable one undoes the PIN's retry limit.
  if (profile.puk.rejectTrivial && isTrivialPin(pukBytes))
    throw new ProfileError(
      'puk',
      "is trivial (one repeated digit or a run), which the profile's PUK policy refuses",
    );
  const mgmtAlgorithm = profile.managementKey.algorithm;
  const mgmtKey =
    options.managementKey === undefined
      ? randomManagementKey(mgmtAlgorithm)
      : managementKeyBytes(options.managementKey, mgmtAlgorithm);

  const cardId = newCardId();
  const tenantId = user.tenant;
  const guid = new Uint8Array(randomBytes(16));
  try {
    // Before any key exists: archival required without a usable recovery certificate refuses here.
    const recovery = await recoveryCertificateFor(
      profile.archiveKeyManagementKey,
      profile.slots.map((s) => s.slot),
      options.recoveryCertificate,
      now,
    );
    const slots = await Promise.all(
      profile.slots.map((s) => prepareSlot(kek, { tenantId, cardId }, s, label, profile, now, recovery)),
    );
    const pinVerifier = await createPinVerifier(kek, { cardId, kind: 'pin' }, pinBytes);
    const pukVerifier = await createPinVerifier(kek, { cardId, kind: 'puk' }, pukBytes);
    const sealedMgmt = await sealSecret(
      kek,
      mgmtKey,
      { tenantId, cardId, slot: MANAGEMENT_KEY_SLOT },
      INITIAL_CARD_VERSION,
    );

    const written = await storage.transaction(async (tx) => {
      if (!(await findTenant(tx, tenantId))) await createTenant(tx, tenantId, tenantId);
      const owner = await ensureUser(tx, tenantId, user.issuer, user.subject);
      const serial =
        options.serial !== undefined
          ? await checkSerialFree(tx, options.serial)
          : profile.cardSerials
            ? await nextSerialInRange(tx, profile.cardSerials)
            : await freeSerial(tx);
      await insertCard(tx, {
        id: cardId,
        tenantId,
        userId: owner.id,
        label,
        profile: profileToJson(profile),
        serial,
        guid,
        pinVerifier,
        pinRetriesLimit: profile.pin.retries,
        pinUnset: noPin,
        pukVerifier,
        pukRetriesLimit: profile.puk.retries,
        managementKeyAlgorithm: mgmtAlgorithm,
        managementKey: sealedMgmt,
      });
      // The row was inserted by this transaction (and is locked by it until commit): no session
      // can hold the card yet, so its initial version is the fence.
      const card: FencedCard = { cardId, tenantId, version: INITIAL_CARD_VERSION, tx };
      for (const s of slots) {
        await putCardKey(card, {
          slot: s.slot,
          algorithm: s.algorithm,
          publicKeySpki: s.publicKeySpki,
          key: s.sealed,
          pinPolicy: s.pinPolicy,
          touchPolicy: STORED_TOUCH_POLICY,
          origin: 'generated',
        });
        if (s.archive) await storeArchive(tx, cardId, s.archive);
      }
      for (const [tag, value] of cardObjects({ serial, guid }, slots, now)) {
        await putCardObject(card, tag, value);
      }
      await appendAudit(tx, {
        actor,
        eventType: AUDIT_EVENTS.cardCreated,
        cardId,
        details: {
          label,
          serial,
          profile: profile.name,
          userId: owner.id,
          tenantId,
          slots: slots.map((s) => ({
            slot: `0x${s.slot.toString(16)}`,
            algorithm: s.algorithm,
            pinPolicy: s.pinPolicy,
            publicKeySha256: createHash('sha256').update(s.publicKeySpki).digest('hex'),
          })),
          managementKeyAlgorithm: mgmtAlgorithm,
          ...(noPin ? { pinUnset: true } : {}),
          ...(recovery ? { keyArchivedFor: recovery.sha256 } : {}),
        },
      });
      return { userId: owner.id, serial };
    });

    return {
      cardId,
      tenantId,
      userId: written.userId,
      label,
      serial: written.serial,
      guid: Buffer.from(guid).toString('hex'),
      pin: noPin ? '' : pin,
      pinUnset: noPin,
      puk,
      managementKey: { algorithm: mgmtAlgorithm, key: Buffer.from(mgmtKey).toString('hex') },
      generated: {
        pin: options.pin === undefined && !noPin,
        puk: options.puk === undefined,
        managementKey: options.managementKey === undefined,
      },
      slots: slots.map(({ sealed: _sealed, archive: _archive, ...slot }) => slot),
      ...(recovery ? { keyArchivedFor: recovery.sha256 } : {}),
    };
  } finally {
    mgmtKey.fill(0);
    pinBytes.fill(0);
    pukBytes.fill(0);
  }
}

/** Key pair, certificate and sealed private key of one profile slot (no database access). */
async function prepareSlot(
  kek: KekProvider,
  card: { tenantId: string; cardId: string },
  s: CardProfile['slots'][number],
  label: string,
  profile: CardProfile,
  now: Date,
  recovery: RecoveryCertificate | undefined,
): Promise<PreparedSlot> {
  const { privateKey, publicKeySpki } = await generateKeyPair(s.algorithm);
  let certificate: Uint8Array | undefined;
  if (s.certificate) {
    const signer = prepareSigner(privateKey);
    certificate = await createSelfSignedCertificate({
      slot: s.slot,
      publicKeySpki,
      commonName: commonName(label, s.slot),
      sign: async (input) => signer.sign(input),
      notBefore: now,
      validityDays: profile.certificateValidityDays,
    });
  }
  const pkcs8 = privateKey.export({ type: 'pkcs8', format: 'der' });
  try {
    const sealed = await sealSecret(kek, pkcs8, { ...card, slot: s.slot }, INITIAL_CARD_VERSION);
    const archive =
      recovery && s.slot === KEY_REF.KEY_MANAGEMENT
        ? prepareArchive(recovery, { slot: s.slot, pkcs8, publicKeySpki, certificate })
        : undefined;
    return {
      slot: s.slot,
      algorithm: s.algorithm,
      pinPolicy: s.pinPolicy,
      publicKeySpki,
      sealed,
      ...(certificate ? { certificate } : {}),
      ...(archive ? { archive } : {}),
    };
  } finally {
    pkcs8.fill(0);
  }
}

/** Default objects, certificate objects and a Key History that counts retired slots with certificates. */
function cardObjects(
  identity: CardIdentity,
  slots: readonly PreparedSlot[],
  now: Date,
): [number, Uint8Array][] {
  const objects = new Map<number, Uint8Array>(defaultObjects(identity, { now }));
  let retiredWithCertificates = 0;
  for (const s of slots) {
    if (!s.certificate) continue;
    objects.set(certificateObjectTag(s.slot)!, encodeCertificateObject(s.certificate));
    // Key History rule of key-history.ts: the position of the highest retired slot with key and certificate.
    if (isRetiredSlot(s.slot))
      retiredWithCertificates = Math.max(retiredWithCertificates, retiredSlotNumber(s.slot));
  }
  objects.set(OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(retiredWithCertificates));
  return [...objects];
}

/** `<label> <slot title>`, the label shortened to fit RFC 5280's 64 characters. */
function commonName(label: string, slot: number): string {
  const title = keySlotTitle(slot);
  const room = MAX_COMMON_NAME_LENGTH - title.length - 1;
  return `${label.slice(0, room).trimEnd()} ${title}`;
}

async function checkSerialFree(tx: Tx, serial: number): Promise<number> {
  if (await isSerialTaken(tx, serial))
    throw new ProfileError('serial', 'already used by another card', { serial });
  return serial;
}

/** The serial after the highest one in the profile's range (the range's first when none is used). */
async function nextSerialInRange(tx: Tx, range: SerialRange): Promise<number> {
  const highest = await highestSerialInRange(tx, range.first, range.last);
  const next = highest === undefined ? range.first : highest + 1;
  if (next > range.last)
    throw new ProfileError('cardSerials', 'every serial of the range is used', { ...range });
  return next;
}

async function freeSerial(tx: Tx): Promise<number> {
  for (let i = 0; i < SERIAL_ATTEMPTS; i++) {
    const serial = randomInt(1, SERIAL_LIMIT);
    if (!(await isSerialTaken(tx, serial))) return serial;
  }
  throw new ProfileError('serial', 'no free serial found; try again');
}

/**
 * Uniformly random digits of the policy's generated length; drawn again while trivial when the
 * policy has `rejectTrivial` (20 of 10^8 eight-digit values are: a card must not be handed out
 * with a value its own policy would refuse).
 */
export function randomDigits(policy: ReferencePolicy & { readonly rejectTrivial?: boolean }): string {
  for (;;) {
    let out = '';
    for (let i = 0; i < policy.generatedLength; i++) out += String(randomInt(10));
    if (!policy.rejectTrivial || !isTrivialPin(Buffer.from(out, 'latin1'))) return out;
  }
}

function randomManagementKey(algorithm: ManagementKeyAlgorithm): Buffer {
  for (;;) {
    const key = randomBytes(MANAGEMENT_KEY_CIPHERS[algorithm].keyBytes);
    try {
      validateManagementKey(algorithm, key); // a weak 3DES key is astronomically unlikely, but checked
      return key;
    } catch {
      key.fill(0);
    }
  }
}

function managementKeyBytes(value: string | Uint8Array, algorithm: ManagementKeyAlgorithm): Buffer {
  let key: Buffer;
  if (typeof value === 'string') {
    if (!/^([0-9a-f]{2})+$/i.test(value)) throw new ProfileError('managementKey', 'must be hex');
    key = Buffer.from(value, 'hex');
  } else {
    key = Buffer.from(value);
  }
  try {
    validateManagementKey(algorithm, key);
  } catch {
    key.fill(0);
    throw new ProfileError('managementKey', `not a valid ${algorithm} key (wrong length or weak)`, {
      algorithm,
    });
  }
  return key;
}

function checkUser(user: AdminUser): AdminUser {
  for (const field of ['issuer', 'subject', 'tenant'] as const) {
    const v = user?.[field];
    if (typeof v !== 'string' || v.length === 0 || v.length > 1024) {
      throw new ProfileError(`user.${field}`, 'must be a non-empty string');
    }
  }
  return user;
}
