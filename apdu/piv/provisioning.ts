import type { KeyAlgorithm, PinPolicy, PivCardState, SlotKeyInfo } from './card-state.js';
import { createSelfSignedCertificate, MAX_COMMON_NAME_LENGTH } from './certificates/self-signed.js';
import { certificateObjectTag, encodeCertificateObject } from './certificates/piv-certificate-object.js';
import { KEY_REF, keySlotTitle } from './constants.js';
import { CardStateError } from './crypto/errors.js';
import { defaultPinPolicy } from './key-policy.js';

/**
 * Puts a fresh key and a self-signed certificate into each of the four standard PIV slots, as an
 * administrator sets up a new card. Signing for the certificates goes straight to the key store
 * (`state.keys.sign`), not through the card's PIN-gated commands: this is an admin action on the
 * store, not something a card holder triggers.
 */

interface StandardSlot {
  readonly slot: number;
  /** Shown in the certificate's common name. */
  readonly label: string;
  readonly algorithm: KeyAlgorithm;
  /** The slot's usual PIN policy (`defaultPinPolicy`). */
  readonly pinPolicy: PinPolicy;
}

/** The standard slots with their default algorithm, their title and their usual PIN policy. */
export const STANDARD_SLOTS: readonly StandardSlot[] = Object.freeze([
  standardSlot(KEY_REF.PIV_AUTHENTICATION, 'RSA2048'),
  standardSlot(KEY_REF.DIGITAL_SIGNATURE, 'ECCP256'),
  standardSlot(KEY_REF.KEY_MANAGEMENT, 'RSA2048'),
  standardSlot(KEY_REF.CARD_AUTHENTICATION, 'ECCP256'),
]);

function standardSlot(slot: number, algorithm: KeyAlgorithm): StandardSlot {
  return Object.freeze({ slot, label: keySlotTitle(slot), algorithm, pinPolicy: defaultPinPolicy(slot) });
}

/** Common name prefix when the options give none. */
export const DEFAULT_SUBJECT = 'cardlink';

export interface ProvisionOptions {
  /** Algorithm per slot (0x9A, 0x9C, 0x9D, 0x9E); the others keep their default. */
  readonly algorithms?: Partial<Record<number, KeyAlgorithm>>;
  /** Common name prefix; each certificate's CN is `<subject> <slot label>`. */
  readonly subject?: string;
  /** Certificate validity in days (see createSelfSignedCertificate). */
  readonly validityDays?: number;
}

export interface ProvisionedSlot {
  readonly slot: number;
  readonly info: SlotKeyInfo;
  /** Tag of the data object that now holds the certificate. */
  readonly objectTag: number;
  readonly certificate: Uint8Array;
}

/**
 * Generates keys in 9A, 9C, 9D and 9E (replacing what is there), makes a self-signed certificate
 * for each and stores it in the slot's certificate object (`70 cert 71 01 00 FE 00`). Not atomic
 * across slots: if a step fails, slots done before keep their new key (and certificate).
 */
export async function provisionStandardKeys(
  state: PivCardState,
  options: ProvisionOptions = {},
): Promise<ProvisionedSlot[]> {
  const subject = options.subject ?? DEFAULT_SUBJECT;
  for (const slot of Object.keys(options.algorithms ?? {}).map(Number)) {
    if (!STANDARD_SLOTS.some((s) => s.slot === slot)) {
      throw new CardStateError('SLOT_INVALID', 'provisioning covers 9A, 9C, 9D and 9E only', { slot });
    }
  }
  const plan = STANDARD_SLOTS.map((s) => ({
    ...s,
    algorithm: options.algorithms?.[s.slot] ?? s.algorithm,
    commonName: `${subject} ${s.label}`,
  }));
  const longest = Math.max(...plan.map((p) => p.commonName.length));
  if (subject.length === 0 || longest > MAX_COMMON_NAME_LENGTH) {
    throw new CardStateError('INPUT_LENGTH', 'subject too long for a common name', {
      length: subject.length,
    });
  }

  return Promise.all(
    plan.map(async (p): Promise<ProvisionedSlot> => {
      const info = await state.keys.generate(p.slot, p.algorithm, p.pinPolicy);
      const certificate = await createSelfSignedCertificate({
        slot: p.slot,
        publicKeySpki: info.publicKeySpki,
        commonName: p.commonName,
        sign: (input) => state.keys.sign(p.slot, input),
        ...(options.validityDays !== undefined ? { validityDays: options.validityDays } : {}),
      });
      const objectTag = certificateObjectTag(p.slot)!;
      await state.objects.put(objectTag, encodeCertificateObject(certificate));
      return { slot: p.slot, info, objectTag, certificate };
    }),
  );
}
