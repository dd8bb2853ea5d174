/**
 * Card profiles: what `cardlink admin create-card` puts on a new card. A profile is JSON:
 *
 *   {
 *     "name": "default",                       optional; a file's name without .json by default
 *     "label": "cardlink PIV card",            1..64 characters; prefixes the certificates' CN
 *     "slots": [                               at least one, each slot once
 *       { "slot": "9A", "algorithm": "RSA2048", "pinPolicy": "once", "certificate": true }
 *     ],                                       slot: 9A 9C 9D 9E 82..95 (hex); algorithm: RSA2048
 *                                              RSA3072 ECCP256 ECCP384; pinPolicy: never once
 *                                              always (default: the slot's usual one);
 *                                              certificate: self-signed certificate (default true)
 *     "pin": { "minLength": 6, "maxLength": 8, "retries": 3, "generatedLength": 8,
 *              "rejectTrivial": true, "history": 4,
 *              "firstPinBySignIn": false, "resetBySignIn": false },
 *                                              PIN policy (pin only; docs/personalization.md):
 *                                              rejectTrivial refuses 111111, 123456, 654321...;
 *                                              history 0..24: a new PIN differs from the last N;
 *                                              firstPinBySignIn: cards are made with no PIN, the
 *                                              user sets it after a fresh sign-in;
 *                                              resetBySignIn: a forgotten PIN may be replaced
 *                                              after a fresh sign-in (else PUK or admin)
 *     "puk": { "minLength": 8, "maxLength": 8, "retries": 3, "rejectTrivial": true },
 *                                              lengths 6..8 digits; retries 1..255;
 *                                              generatedLength defaults to maxLength;
 *                                              rejectTrivial (both, default false) as the PIN's,
 *                                              on create-card and CHANGE REFERENCE DATA
 *     "managementKey": { "algorithm": "AES192" },   3DES AES128 AES192 AES256
 *     "certificateValidityDays": 365           optional, 1..11000
 *     "cardSerials": { "first": 100000, "last": 199999 }
 *                                              optional: new cards take the lowest free serial
 *                                              above the highest in this range (per tenant, by
 *                                              giving each tenant's profile its own range)
 *     "renewal": { "key": "new", "windowDays": 30, "atSignIn": false }
 *                                              optional: renewal (renew.ts) makes new keys
 *                                              ("new", default) or certifies the same ones
 *                                              ("same"); `renew --due` renews certificates
 *                                              expiring within windowDays (1..365, default 30);
 *                                              atSignIn: the server also renews a card inside
 *                                              its window when a session opens it (default off)
 *     "selfServiceEnrollment": false           optional: the card's user may enroll it
 *                                              (`cardlink enroll`, the tray); off by default
 *     "shortLived9AHours": 8                   optional, 1..168: a new 9A key and certificate
 *                                              valid this many hours at each sign-in
 *     "archiveKeyManagementKey": false         optional: every 9D key the server makes or
 *                                              certifies is archived, encrypted to the server's
 *                                              recovery certificate (server/archival/); needs a
 *                                              9D slot; off by default
 *   }
 *
 * A slot may also carry a certificate `template` for the certificates an issuing CA gives it at
 * enrollment (`certificate-template.ts`, docs/personalization.md).
 *
 * Unknown members are refused (a typo must not silently fall back to a default). Every error is
 * a `ProfileError` (`ERR_CONFIG_INVALID`) whose context names the field, e.g. `slots[1].algorithm`.
 */
import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { KeyAlgorithm, ManagementKeyAlgorithm, PinPolicy } from '../../apdu/piv/index.js';
import {
  DEFAULT_CERTIFICATE_VALIDITY_DAYS,
  MAX_CERTIFICATE_VALIDITY_DAYS,
} from '../../apdu/piv/certificates/index.js';
import {
  isKeySlot,
  KEY_ALGORITHM_ID,
  KEY_REF,
  MANAGEMENT_ALGORITHM_ID,
  PIN_POLICIES,
  defaultPinPolicy,
  MAX_PIN_HISTORY,
  MAX_RETRY_LIMIT,
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
} from '../../apdu/piv/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import {
  parseCertificateTemplate,
  templateToJson,
  type CertificateTemplate,
} from './certificate-template.js';

/** Longest card label (it also prefixes certificate common names, RFC 5280 ub-common-name 64). */
export const MAX_CARD_LABEL_LENGTH = 64;
/** Largest profile file read, in bytes. */
export const MAX_PROFILE_FILE_BYTES = 64 * 1024;

export interface SlotProfile {
  /** PIV key reference, e.g. 0x9A. */
  readonly slot: number;
  readonly algorithm: KeyAlgorithm;
  readonly pinPolicy: PinPolicy;
  /** Whether a self-signed certificate goes into the slot's certificate object. */
  readonly certificate: boolean;
  /** What a CA-issued certificate of this slot says (defaults by slot when absent). */
  readonly template?: CertificateTemplate;
}

/** A range of card serials, inclusive. */
export interface SerialRange {
  readonly first: number;
  readonly last: number;
}

/** The PUK's policy beyond lengths and retries (server/cards/pin-rules.ts enforces it). */
export interface PukPolicyOptions {
  /** Refuse one repeated digit and runs up or down (apdu/piv/pin-policy.ts). Default false. */
  readonly rejectTrivial: boolean;
}

/** The PIN policy members beyond lengths and retries (server/cards/pin-rules.ts enforces them). */
export interface PinPolicyOptions extends PukPolicyOptions {
  /** A new PIN must differ from the last `history` PINs, 0..24 (MAX_PIN_HISTORY). Default 0. */
  readonly history: number;
  /** New cards get no PIN known to anyone; the user sets it after a fresh sign-in. Default false. */
  readonly firstPinBySignIn: boolean;
  /** A user who forgot the PIN may set a new one after a fresh sign-in. Default false. */
  readonly resetBySignIn: boolean;
}

export interface ReferencePolicy {
  /** Digits, 6..8 (SP 800-73-4 Part 2 section 2.4.3). */
  readonly minLength: number;
  readonly maxLength: number;
  /** Tries before the PIN/PUK blocks, 1..255. */
  readonly retries: number;
  /** Length of a generated value, between minLength and maxLength. */
  readonly generatedLength: number;
}

export interface CardProfile {
  readonly name: string;
  readonly label: string;
  readonly slots: readonly SlotProfile[];
  readonly pin: ReferencePolicy & PinPolicyOptions;
  readonly puk: ReferencePolicy & PukPolicyOptions;
  readonly managementKey: { readonly algorithm: ManagementKeyAlgorithm };
  readonly certificateValidityDays: number;
  /** Where new cards' serials come from; random below 2^31 when absent. */
  readonly cardSerials?: SerialRange;
  /**
   * The card's user may have it enrolled (ENROLL frame: `cardlink enroll`, the tray), with the
   * names from their access token. Off by default: only an administrator enrolls.
   */
  readonly selfServiceEnrollment: boolean;
  /**
   * Short-lived 9A: at each sign-in (OPEN_CARD) the server makes a new 9A key and has the CA
   * certify it for this many hours, so a lost device's card stops being trusted without a CRL.
   */
  readonly shortLived9AHours?: number;
  /** How renewal makes keys and when a card is due (renew.ts). */
  readonly renewal: RenewalPolicy;
  /**
   * Key archival (server/archival/key-archive.ts): every key management (9D) key made or
   * certified for the card is archived under the recovery certificate, in the same transaction;
   * without a usable recovery certificate the operation is refused (ERR_KEY_ARCHIVAL). Off by
   * default.
   */
  readonly archiveKeyManagementKey: boolean;
}

/** How a card's certificates are renewed (server/admin/renew.ts). */
export interface RenewalPolicy {
  /** `new`: new keys (the old key management key is retired); `same`: the current keys again. */
  readonly key: 'new' | 'same';
  /** `renew --due` renews a card whose first certificate expires within this many days. */
  readonly windowDays: number;
  /**
   * The card server renews a card inside its window when a session opens it (OPEN_CARD,
   * server/session/card-handling.ts), so a user who signs in daily needs no timer. Off by default:
   * it has the running server sign certificates with the CA key whenever a due card's user signs in.
   */
  readonly atSignIn: boolean;
}

/** Renewal window when the profile names none: a month before expiry. */
export const DEFAULT_RENEWAL_WINDOW_DAYS = 30;
/** Longest renewal window. */
export const MAX_RENEWAL_WINDOW_DAYS = 365;

/** The key management slot, the one whose keys `archiveKeyManagementKey` archives. */
const KEY_MANAGEMENT_SLOT = KEY_REF.KEY_MANAGEMENT;

/** Longest validity of a short-lived 9A certificate, in hours (a week). */
export const MAX_SHORT_LIVED_HOURS = 168;

/** A profile (or a value checked against one) is not valid; `context.field` names the culprit. */
export class ProfileError extends CardlinkError {
  constructor(field: string, message: string, context: Record<string, string | number | boolean> = {}) {
    super('ERR_CONFIG_INVALID', `${field}: ${message}`, { ...context, field });
    this.name = 'ProfileError';
  }
}

/** Checks and normalises a parsed JSON profile. `fallbackName` names it when it has no `name`. */
export function parseCardProfile(value: unknown, fallbackName = 'custom'): CardProfile {
  const root = objectAt(value, 'profile');
  onlyMembers(root, 'profile', [
    'name',
    'label',
    'slots',
    'pin',
    'puk',
    'managementKey',
    'certificateValidityDays',
    'cardSerials',
    'renewal',
    'selfServiceEnrollment',
    'shortLived9AHours',
    'archiveKeyManagementKey',
  ]);
  const name = root.name === undefined ? fallbackName : text(root.name, 'name', 64);
  const label = text(root.label, 'label', MAX_CARD_LABEL_LENGTH);

  if (!Array.isArray(root.slots) || root.slots.length === 0) {
    throw new ProfileError('slots', 'must be a non-empty array');
  }
  const seen = new Set<number>();
  const slots = root.slots.map((entry: unknown, i: number): SlotProfile => {
    const field = `slots[${i}]`;
    const s = objectAt(entry, field);
    onlyMembers(s, field, ['slot', 'algorithm', 'pinPolicy', 'certificate', 'template']);
    const slot = slotNumber(s.slot, `${field}.slot`);
    if (seen.has(slot)) throw new ProfileError(`${field}.slot`, 'slot listed twice');
    seen.add(slot);
    const algorithm = oneOf(s.algorithm, `${field}.algorithm`, Object.keys(KEY_ALGORITHM_ID)) as KeyAlgorithm;
    const pinPolicy =
      s.pinPolicy === undefined
        ? defaultPinPolicy(slot)
        : (oneOf(s.pinPolicy, `${field}.pinPolicy`, PIN_POLICIES) as PinPolicy);
    const certificate = s.certificate === undefined ? true : bool(s.certificate, `${field}.certificate`);
    const template =
      s.template === undefined ? undefined : parseCertificateTemplate(s.template, `${field}.template`);
    return Object.freeze({ slot, algorithm, pinPolicy, certificate, ...(template ? { template } : {}) });
  });

  const managementKey = objectAt(root.managementKey, 'managementKey');
  onlyMembers(managementKey, 'managementKey', ['algorithm']);
  const mgmtAlgorithm = oneOf(
    managementKey.algorithm,
    'managementKey.algorithm',
    Object.keys(MANAGEMENT_ALGORITHM_ID),
  ) as ManagementKeyAlgorithm;

  const certificateValidityDays =
    root.certificateValidityDays === undefined
      ? DEFAULT_CERTIFICATE_VALIDITY_DAYS
      : integer(root.certificateValidityDays, 'certificateValidityDays', 1, MAX_CERTIFICATE_VALIDITY_DAYS);

  let cardSerials: SerialRange | undefined;
  if (root.cardSerials !== undefined) {
    const r = objectAt(root.cardSerials, 'cardSerials');
    onlyMembers(r, 'cardSerials', ['first', 'last']);
    const first = integer(r.first, 'cardSerials.first', 1, 0xffffffff);
    const last = integer(r.last, 'cardSerials.last', first, 0xffffffff);
    cardSerials = Object.freeze({ first, last });
  }

  let renewal: RenewalPolicy = { key: 'new', windowDays: DEFAULT_RENEWAL_WINDOW_DAYS, atSignIn: false };
  if (root.renewal !== undefined) {
    const r = objectAt(root.renewal, 'renewal');
    onlyMembers(r, 'renewal', ['key', 'windowDays', 'atSignIn']);
    renewal = {
      key: r.key === undefined ? 'new' : (oneOf(r.key, 'renewal.key', ['new', 'same']) as 'new' | 'same'),
      windowDays:
        r.windowDays === undefined
          ? DEFAULT_RENEWAL_WINDOW_DAYS
          : integer(r.windowDays, 'renewal.windowDays', 1, MAX_RENEWAL_WINDOW_DAYS),
      atSignIn: r.atSignIn === undefined ? false : bool(r.atSignIn, 'renewal.atSignIn'),
    };
  }

  const archiveKeyManagementKey =
    root.archiveKeyManagementKey === undefined
      ? false
      : bool(root.archiveKeyManagementKey, 'archiveKeyManagementKey');
  if (archiveKeyManagementKey && !seen.has(KEY_MANAGEMENT_SLOT))
    throw new ProfileError(
      'archiveKeyManagementKey',
      'the profile has no key management slot (9D) to archive',
    );

  return Object.freeze({
    name,
    label,
    slots: Object.freeze(slots),
    pin: Object.freeze({ ...referencePolicy(root.pin, 'pin'), ...pinPolicyOptions(root.pin) }),
    puk: Object.freeze({ ...referencePolicy(root.puk, 'puk'), ...pukPolicyOptions(root.puk) }),
    managementKey: Object.freeze({ algorithm: mgmtAlgorithm }),
    certificateValidityDays,
    ...(cardSerials ? { cardSerials } : {}),
    renewal: Object.freeze(renewal),
    selfServiceEnrollment:
      root.selfServiceEnrollment === undefined
        ? false
        : bool(root.selfServiceEnrollment, 'selfServiceEnrollment'),
    ...(root.shortLived9AHours === undefined
      ? {}
      : {
          shortLived9AHours: integer(root.shortLived9AHours, 'shortLived9AHours', 1, MAX_SHORT_LIVED_HOURS),
        }),
    archiveKeyManagementKey,
  });
}

/** The profile as JSON again (slots as hex strings), as stored with the card. */
export function profileToJson(profile: CardProfile): Record<string, unknown> {
  return {
    name: profile.name,
    label: profile.label,
    slots: profile.slots.map((s) => ({
      slot: s.slot.toString(16).toUpperCase(),
      algorithm: s.algorithm,
      pinPolicy: s.pinPolicy,
      certificate: s.certificate,
      ...(s.template ? { template: templateToJson(s.template) } : {}),
    })),
    pin: { ...profile.pin },
    puk: { ...profile.puk },
    managementKey: { ...profile.managementKey },
    certificateValidityDays: profile.certificateValidityDays,
    ...(profile.cardSerials ? { cardSerials: { ...profile.cardSerials } } : {}),
    renewal: { ...profile.renewal },
    ...(profile.selfServiceEnrollment ? { selfServiceEnrollment: true } : {}),
    ...(profile.shortLived9AHours !== undefined ? { shortLived9AHours: profile.shortLived9AHours } : {}),
    ...(profile.archiveKeyManagementKey ? { archiveKeyManagementKey: true } : {}),
  };
}

/** Reads and checks a profile file; its name defaults to the file name without `.json`. */
export async function loadCardProfile(path: string): Promise<CardProfile> {
  let text: string;
  try {
    const info = await stat(path);
    if (!info.isFile() || info.size > MAX_PROFILE_FILE_BYTES) {
      throw new ProfileError('profile', 'not a regular file of at most 64 KiB', { file: path });
    }
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (error instanceof ProfileError) throw error;
    throw new ProfileError('profile', 'cannot read the profile file', {
      file: path,
      errno: (error as NodeJS.ErrnoException).code ?? 'unknown',
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ProfileError('profile', 'the profile file is not valid JSON', { file: path });
  }
  return parseCardProfile(json, basename(path).replace(/\.json$/i, ''));
}

/**
 * The shipped default profile file (`server/admin/profiles/default.json`): next to this module
 * when installed with it, else in the source tree beside `dist/`.
 */
export function defaultProfilePath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [
    join(here, 'profiles', 'default.json'),
    join(here, '..', '..', '..', 'server', 'admin', 'profiles', 'default.json'),
  ];
  return candidates.find((p) => existsSync(p)) ?? candidates[0]!;
}

export function loadDefaultProfile(): Promise<CardProfile> {
  return loadCardProfile(defaultProfilePath());
}

/** Checks a card label given instead of the profile's. */
export function checkCardLabel(label: string): string {
  return text(label, 'label', MAX_CARD_LABEL_LENGTH);
}

/** Checks a PIN/PUK an administrator supplied against the policy: digits, policy length. */
export function checkReferenceValue(
  value: string,
  policy: ReferencePolicy,
  field: 'pin' | 'puk',
): Uint8Array {
  if (typeof value !== 'string' || !/^[0-9]+$/.test(value)) {
    throw new ProfileError(field, 'must be digits only');
  }
  if (value.length < policy.minLength || value.length > policy.maxLength) {
    throw new ProfileError(field, `must be ${policy.minLength} to ${policy.maxLength} digits`, {
      length: value.length,
    });
  }
  return new Uint8Array(Buffer.from(value, 'latin1'));
}

const PIN_ONLY_MEMBERS = ['rejectTrivial', 'history', 'firstPinBySignIn', 'resetBySignIn'];
const PUK_ONLY_MEMBERS = ['rejectTrivial'];

function pukPolicyOptions(value: unknown): PukPolicyOptions {
  const p = value as Record<string, unknown>; // checked to be an object by referencePolicy
  return {
    rejectTrivial: p.rejectTrivial === undefined ? false : bool(p.rejectTrivial, 'puk.rejectTrivial'),
  };
}

function pinPolicyOptions(value: unknown): PinPolicyOptions {
  const p = value as Record<string, unknown>; // checked to be an object by referencePolicy
  const flag = (name: string) => (p[name] === undefined ? false : bool(p[name], `pin.${name}`));
  return {
    rejectTrivial: flag('rejectTrivial'),
    history: p.history === undefined ? 0 : integer(p.history, 'pin.history', 0, MAX_PIN_HISTORY),
    firstPinBySignIn: flag('firstPinBySignIn'),
    resetBySignIn: flag('resetBySignIn'),
  };
}

function referencePolicy(value: unknown, field: 'pin' | 'puk'): ReferencePolicy {
  const p = objectAt(value, field);
  onlyMembers(p, field, [
    'minLength',
    'maxLength',
    'retries',
    'generatedLength',
    ...(field === 'pin' ? PIN_ONLY_MEMBERS : PUK_ONLY_MEMBERS),
  ]);
  const minLength = integer(
    p.minLength,
    `${field}.minLength`,
    REFERENCE_DATA_MIN_BYTES,
    REFERENCE_DATA_MAX_BYTES,
  );
  const maxLength = integer(p.maxLength, `${field}.maxLength`, minLength, REFERENCE_DATA_MAX_BYTES);
  const retries = integer(p.retries, `${field}.retries`, 1, MAX_RETRY_LIMIT);
  const generatedLength =
    p.generatedLength === undefined
      ? maxLength
      : integer(p.generatedLength, `${field}.generatedLength`, minLength, maxLength);
  return Object.freeze({ minLength, maxLength, retries, generatedLength });
}

function objectAt(value: unknown, field: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ProfileError(field, 'must be an object');
  }
  return value as Record<string, unknown>;
}

function onlyMembers(value: Record<string, unknown>, field: string, allowed: readonly string[]): void {
  for (const name of Object.keys(value)) {
    if (!allowed.includes(name)) throw new ProfileError(`${field}.${name}`, 'unknown member');
  }
}

function text(value: unknown, field: string, maxLength: number): string {
  if (typeof value !== 'string' || value.trim().length === 0 || value.length > maxLength) {
    throw new ProfileError(field, `must be a non-empty string of at most ${maxLength} characters`);
  }
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(value))
    throw new ProfileError(field, 'must not contain control characters');
  return value;
}

function integer(value: unknown, field: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ProfileError(field, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

function bool(value: unknown, field: string): boolean {
  if (typeof value !== 'boolean') throw new ProfileError(field, 'must be true or false');
  return value;
}

function oneOf(value: unknown, field: string, allowed: readonly string[]): string {
  if (typeof value !== 'string' || !allowed.includes(value)) {
    throw new ProfileError(field, `must be one of ${allowed.join(', ')}`);
  }
  return value;
}

function slotNumber(value: unknown, field: string): number {
  let slot: number | undefined;
  if (typeof value === 'string' && /^(0x)?[0-9a-f]{2}$/i.test(value))
    slot = parseInt(value.replace(/^0x/i, ''), 16);
  else if (typeof value === 'number' && Number.isInteger(value)) slot = value;
  if (slot === undefined || !isKeySlot(slot)) {
    throw new ProfileError(field, 'must be a PIV key slot: 9A, 9C, 9D, 9E or 82..95 (hex)');
  }
  return slot;
}
