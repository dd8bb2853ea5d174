/**
 * Certificate templates of a card profile: what a CA-issued certificate of one slot says
 * (docs/personalization.md). In the profile, per slot:
 *
 *   "template": {
 *     "subject": [{ "CN": "{name}" }, { "O": "Example Corp" }],   RDNs in order; values may name claims
 *     "san": { "email": "{email}", "upn": "{upn}" },             subjectAltName; each optional
 *     "keyUsage": ["digitalSignature"],                         RFC 5280 bit names
 *     "extendedKeyUsage": ["clientAuth", "smartcardLogon"],      names or dotted OIDs
 *     "validityDays": 365
 *   }
 *
 * Every member is optional; a missing one takes the slot's default (apdu/piv/certificates/
 * slot-usage.ts: 9A clientAuth + smartcardLogon with email and UPN, 9C digitalSignature +
 * nonRepudiation, 9D keyEncipherment + emailProtection, 9E card authentication) and the profile's
 * `certificateValidityDays`. `{claim}` in a value is replaced by the user's claim of that name
 * (`sub`, `name`, `email`, `upn`, ... and `serial`, the card's serial); a subject value whose claim
 * is missing is an error, a SAN whose claim is missing is left out. The card serial is always
 * added to the subject as serialNumber (2.5.4.5).
 */
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import {
  defaultSlotUsage,
  EXTENDED_KEY_USAGE,
  KEY_USAGE_NAMES,
  MAX_CERTIFICATE_VALIDITY_DAYS,
  type KeyUsageName,
  type SanKind,
} from '../../apdu/piv/certificates/index.js';
import { CardlinkError } from '../../protocol/errors.js';

/** Subject attributes a template may set (short names the X.509 toolkit knows). */
export const SUBJECT_ATTRIBUTES = ['CN', 'O', 'OU', 'L', 'ST', 'C', 'DC', 'E'] as const;
export type SubjectAttribute = (typeof SUBJECT_ATTRIBUTES)[number];

/** Longest template value and longest claim value, in characters (RFC 5280 ub-name is 32768; kept small). */
export const MAX_TEMPLATE_VALUE_LENGTH = 256;

export interface CertificateTemplate {
  readonly subject?: readonly { readonly attribute: SubjectAttribute; readonly value: string }[];
  readonly san?: Readonly<Partial<Record<SanKind, string>>>;
  readonly keyUsage?: readonly KeyUsageName[];
  /** Dotted OIDs. */
  readonly extendedKeyUsage?: readonly string[];
  readonly validityDays?: number;
}

/** A template with the slot's defaults filled in. */
export interface ResolvedTemplate {
  readonly subject: readonly { readonly attribute: SubjectAttribute; readonly value: string }[];
  readonly san: Readonly<Partial<Record<SanKind, string>>>;
  readonly keyUsage: readonly KeyUsageName[];
  readonly extendedKeyUsage: readonly string[];
  readonly validityDays: number;
}

/** A template (or the claims it is filled with) is not usable; `context.field` names the culprit. */
export class TemplateError extends CardlinkError {
  constructor(field: string, message: string) {
    super('ERR_CONFIG_INVALID', `${field}: ${message}`, { field });
    this.name = 'TemplateError';
  }
}

const SAN_KINDS: readonly SanKind[] = ['email', 'upn'];
// eslint-disable-next-line no-control-regex
const CONTROL_CHARACTERS = /[\u0000-\u001f\u007f]/;

/** Checks a template from profile JSON. */
export function parseCertificateTemplate(value: unknown, field: string): CertificateTemplate {
  const t = objectAt(value, field);
  for (const name of Object.keys(t)) {
    if (!['subject', 'san', 'keyUsage', 'extendedKeyUsage', 'validityDays'].includes(name))
      throw new TemplateError(`${field}.${name}`, 'unknown member');
  }
  const out: {
    -readonly [K in keyof CertificateTemplate]: CertificateTemplate[K];
  } = {};
  if (t.subject !== undefined) {
    if (!Array.isArray(t.subject) || t.subject.length === 0)
      throw new TemplateError(
        `${field}.subject`,
        'must be a non-empty array of { "<attribute>": "<value>" }',
      );
    out.subject = t.subject.map((rdn: unknown, i: number) => {
      const f = `${field}.subject[${i}]`;
      const o = objectAt(rdn, f);
      const keys = Object.keys(o);
      if (keys.length !== 1 || !SUBJECT_ATTRIBUTES.includes(keys[0] as SubjectAttribute))
        throw new TemplateError(f, `must have one member, one of ${SUBJECT_ATTRIBUTES.join(', ')}`);
      return { attribute: keys[0] as SubjectAttribute, value: templateText(o[keys[0]!], f) };
    });
  }
  if (t.san !== undefined) {
    const san = objectAt(t.san, `${field}.san`);
    const parsed: Partial<Record<SanKind, string>> = {};
    for (const [kind, v] of Object.entries(san)) {
      if (!SAN_KINDS.includes(kind as SanKind))
        throw new TemplateError(`${field}.san.${kind}`, `unknown SAN; one of ${SAN_KINDS.join(', ')}`);
      parsed[kind as SanKind] = templateText(v, `${field}.san.${kind}`);
    }
    out.san = parsed;
  }
  if (t.keyUsage !== undefined) {
    out.keyUsage = nameList(t.keyUsage, `${field}.keyUsage`).map((name) => {
      if (!KEY_USAGE_NAMES.includes(name as KeyUsageName))
        throw new TemplateError(`${field}.keyUsage`, `unknown key usage ${JSON.stringify(name)}`);
      return name as KeyUsageName;
    });
  }
  if (t.extendedKeyUsage !== undefined) {
    out.extendedKeyUsage = nameList(t.extendedKeyUsage, `${field}.extendedKeyUsage`).map((name) =>
      ekuOid(name, `${field}.extendedKeyUsage`),
    );
  }
  if (t.validityDays !== undefined) {
    const v = t.validityDays;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_CERTIFICATE_VALIDITY_DAYS)
      throw new TemplateError(
        `${field}.validityDays`,
        `must be an integer from 1 to ${MAX_CERTIFICATE_VALIDITY_DAYS}`,
      );
    out.validityDays = v;
  }
  return Object.freeze(out);
}

/** The template as profile JSON again. */
export function templateToJson(template: CertificateTemplate): Record<string, unknown> {
  return {
    ...(template.subject ? { subject: template.subject.map((r) => ({ [r.attribute]: r.value })) } : {}),
    ...(template.san ? { san: { ...template.san } } : {}),
    ...(template.keyUsage ? { keyUsage: [...template.keyUsage] } : {}),
    ...(template.extendedKeyUsage ? { extendedKeyUsage: [...template.extendedKeyUsage] } : {}),
    ...(template.validityDays !== undefined ? { validityDays: template.validityDays } : {}),
  };
}

/** The slot's template with its defaults filled in. */
export function resolveTemplate(
  slot: number,
  algorithm: KeyAlgorithm,
  template: CertificateTemplate | undefined,
  defaultValidityDays: number,
): ResolvedTemplate {
  const usage = defaultSlotUsage(slot, algorithm);
  const defaultSan: Partial<Record<SanKind, string>> = {};
  for (const kind of usage.san) defaultSan[kind] = `{${kind}}`;
  const cardAuth = usage.extendedKeyUsage.includes('pivCardAuth');
  return {
    // Card authentication names the card, not the person (it is used without a PIN).
    subject: template?.subject ?? [{ attribute: 'CN', value: cardAuth ? 'card {serial}' : '{name}' }],
    san: template?.san ?? defaultSan,
    keyUsage: template?.keyUsage ?? usage.keyUsage,
    extendedKeyUsage: template?.extendedKeyUsage ?? usage.extendedKeyUsage.map((n) => EXTENDED_KEY_USAGE[n]),
    validityDays: template?.validityDays ?? defaultValidityDays,
  };
}

/** Claims a template is filled with: strings by name. */
export type Claims = Readonly<Record<string, string>>;

/**
 * Replaces `{claim}` in `value`. Returns undefined when a named claim is missing (the caller
 * decides whether that is an error).
 */
export function fillTemplate(value: string, claims: Claims): string | undefined {
  let missing = false;
  const filled = value.replace(/\{([A-Za-z0-9_.-]{1,64})\}/g, (_m, name: string) => {
    const claim = Object.prototype.hasOwnProperty.call(claims, name) ? claims[name] : undefined;
    if (claim === undefined || claim === '') {
      missing = true;
      return '';
    }
    return claim;
  });
  return missing ? undefined : filled;
}

/** Checks a claim value given by an administrator or an identity provider. */
export function checkClaimValue(name: string, value: string): string {
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(name))
    throw new TemplateError('claims', `bad claim name ${JSON.stringify(name)}`);
  if (typeof value !== 'string' || value.length > MAX_TEMPLATE_VALUE_LENGTH || CONTROL_CHARACTERS.test(value))
    throw new TemplateError(
      `claims.${name}`,
      `must be at most ${MAX_TEMPLATE_VALUE_LENGTH} characters, no control characters`,
    );
  return value;
}

function ekuOid(name: string, field: string): string {
  if (name in EXTENDED_KEY_USAGE) return EXTENDED_KEY_USAGE[name as keyof typeof EXTENDED_KEY_USAGE];
  if (/^[0-2](\.(0|[1-9][0-9]{0,9})){1,20}$/.test(name)) return name;
  throw new TemplateError(
    field,
    `${JSON.stringify(name)} is neither a dotted OID nor one of ${Object.keys(EXTENDED_KEY_USAGE).join(', ')}`,
  );
}

function nameList(value: unknown, field: string): string[] {
  if (!Array.isArray(value) || value.length === 0 || value.some((v) => typeof v !== 'string'))
    throw new TemplateError(field, 'must be a non-empty array of strings');
  if (new Set(value).size !== value.length) throw new TemplateError(field, 'lists a value twice');
  return value as string[];
}

function templateText(value: unknown, field: string): string {
  if (
    typeof value !== 'string' ||
    value.length === 0 ||
    value.length > MAX_TEMPLATE_VALUE_LENGTH ||
    CONTROL_CHARACTERS.test(value)
  )
    throw new TemplateError(
      field,
      `must be a string of 1 to ${MAX_TEMPLATE_VALUE_LENGTH} characters without control characters`,
    );
  return value;
}

function objectAt(value: unknown, field: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value))
    throw new TemplateError(field, 'must be an object');
  return value as Record<string, unknown>;
}
