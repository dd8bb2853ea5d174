import type { KeyAlgorithm, KeyOrigin, ManagementKeyAlgorithm, PinPolicy } from './card-state.js';

/**
 * Numbers of the PIV card application, each next to the table it comes from.
 * SP 800-73-4 = NIST SP 800-73-4 "Interfaces for Personal Identity Verification" (Parts 1 and 2);
 * SP 800-78-5 = "Cryptographic Algorithms and Key Sizes for PIV"; "Yubico" = the YubiKey PIV
 * extensions (https://developers.yubico.com/PIV/Introduction/Yubico_extensions.html), which
 * yubico-piv-tool and ykman need.
 */

/** Full PIV AID, version 01 00 (SP 800-73-4 Part 1 section 2.2). */
export const PIV_AID = Uint8Array.of(0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00);
/** NIST RID, the first five bytes of the PIV AID (SP 800-73-4 Part 1 section 2.2). */
export const NIST_RID = PIV_AID.subarray(0, 5);
/** PIX of the PIV AID with its version: tag 4F of the SELECT answer (SP 800-73-4 Part 2 Table 3). */
export const PIV_PIX = PIV_AID.subarray(5);
/** Shortest AID prefix SELECT accepts: the RID (yubico-piv-tool sends it; ISO 7816-4 partial DF name). */
export const MIN_SELECT_AID_BYTES = 5;

/** Instruction bytes (SP 800-73-4 Part 2 Table 12 and the Yubico extensions). */
export const INS = {
  /** SP 800-73-4 Part 2 section 3.1.1 */
  SELECT: 0xa4,
  /** SP 800-73-4 Part 2 section 3.1.2 */
  GET_DATA: 0xcb,
  /** SP 800-73-4 Part 2 section 3.2.1 */
  VERIFY: 0x20,
  /** SP 800-73-4 Part 2 section 3.2.2 */
  CHANGE_REFERENCE_DATA: 0x24,
  /** SP 800-73-4 Part 2 section 3.2.3 */
  RESET_RETRY_COUNTER: 0x2c,
  /** SP 800-73-4 Part 2 section 3.2.4 */
  GENERAL_AUTHENTICATE: 0x87,
  /** SP 800-73-4 Part 2 section 3.3.2 */
  PUT_DATA: 0xdb,
  /** SP 800-73-4 Part 2 section 3.3.3 */
  GENERATE_ASYMMETRIC_KEY_PAIR: 0x47,
  /** ISO 7816-4 section 7.6.1 */
  GET_RESPONSE: 0xc0,
  /** Yubico: key, PIN and PUK metadata (firmware 5.3+). */
  YK_GET_METADATA: 0xf7,
  /** Yubico: 4-byte serial number (firmware 5+). */
  YK_GET_SERIAL: 0xf8,
  /** Yubico: attestation (not supported by cardlink). */
  YK_ATTEST: 0xf9,
  /** Yubico: set PIN/PUK retry limits (not supported by cardlink). */
  YK_SET_PIN_RETRIES: 0xfa,
  /** Yubico: reset the PIV application (not supported by cardlink). */
  YK_RESET: 0xfb,
  /** Yubico: firmware version, 3 bytes. */
  YK_GET_VERSION: 0xfd,
  /** Yubico: import an asymmetric private key. */
  YK_IMPORT_KEY: 0xfe,
  /** Yubico: set the management key. */
  YK_SET_MANAGEMENT_KEY: 0xff,
} as const;

/**
 * P1 of VERIFY (SP 800-73-4 Part 2 section 3.2.1): 00 verifies (or, without data, asks for the
 * status); FF with no data resets the reference's security status.
 */
export const VERIFY_P1 = { VERIFY: 0x00, RESET_STATUS: 0xff } as const;

/** Key references (SP 800-73-4 Part 1 Table 4b, SP 800-73-4 Part 2 Table 4). */
export const KEY_REF = {
  /** Global PIN: not implemented by cardlink. */
  GLOBAL_PIN: 0x00,
  PIN: 0x80,
  PUK: 0x81,
  /** PIV Authentication key. */
  PIV_AUTHENTICATION: 0x9a,
  /** Card Application Administration (management) key. */
  CARD_MANAGEMENT: 0x9b,
  /** Digital Signature key. */
  DIGITAL_SIGNATURE: 0x9c,
  /** Key Management key. */
  KEY_MANAGEMENT: 0x9d,
  /** Card Authentication key. */
  CARD_AUTHENTICATION: 0x9e,
  /** First and last Retired Key Management key (20 of them). */
  RETIRED_FIRST: 0x82,
  RETIRED_LAST: 0x95,
} as const;

/** Number of retired key management slots, 82..95 (SP 800-73-4 Part 1 Table 4b). */
export const RETIRED_SLOT_COUNT = KEY_REF.RETIRED_LAST - KEY_REF.RETIRED_FIRST + 1;

/**
 * Private-key slots: 9A, 9C, 9D, 9E and the retired key management keys 82..95 (SP 800-73-4 Part 1
 * Table 4b). The one list every key store, the card and the admin tools check a slot against.
 */
export const KEY_SLOTS: readonly number[] = Object.freeze([
  KEY_REF.PIV_AUTHENTICATION,
  KEY_REF.DIGITAL_SIGNATURE,
  KEY_REF.KEY_MANAGEMENT,
  KEY_REF.CARD_AUTHENTICATION,
  ...Array.from({ length: RETIRED_SLOT_COUNT }, (_, i) => KEY_REF.RETIRED_FIRST + i),
]);

export function isKeySlot(reference: number): boolean {
  return KEY_SLOTS.includes(reference);
}

export function isRetiredSlot(reference: number): boolean {
  return reference >= KEY_REF.RETIRED_FIRST && reference <= KEY_REF.RETIRED_LAST;
}

/** Position of a retired slot: 1 for 82 ("Retired Key Management Key 1") .. 20 for 95. */
export function retiredSlotNumber(reference: number): number {
  if (!isRetiredSlot(reference)) throw new RangeError('not a retired key management slot');
  return reference - KEY_REF.RETIRED_FIRST + 1;
}

/**
 * Human name of a key slot (SP 800-73-4 Part 1 Table 4b, without the trailing "Key"), as
 * certificate common names carry it: "PIV Authentication", "Retired Key 3", ...
 */
export function keySlotTitle(reference: number): string {
  switch (reference) {
    case KEY_REF.PIV_AUTHENTICATION:
      return 'PIV Authentication';
    case KEY_REF.DIGITAL_SIGNATURE:
      return 'Digital Signature';
    case KEY_REF.KEY_MANAGEMENT:
      return 'Key Management';
    case KEY_REF.CARD_AUTHENTICATION:
      return 'Card Authentication';
    default:
      return isRetiredSlot(reference)
        ? `Retired Key ${retiredSlotNumber(reference)}`
        : `Key ${reference.toString(16)}`;
  }
}

/** Private-key algorithms cardlink implements (SP 800-78-5 Table 6-2; ids in KEY_ALGORITHM_ID). */
export const KEY_ALGORITHMS: readonly KeyAlgorithm[] = Object.freeze([
  'RSA2048',
  'RSA3072',
  'ECCP256',
  'ECCP384',
]);

/**
 * When a slot's private key needs the PIN. SP 800-73-4 fixes it per slot (Part 1 Table 4b access
 * rules); the Yubico extensions make it a per-key choice, and cardlink implements these three.
 */
export const PIN_POLICIES: readonly PinPolicy[] = Object.freeze(['never', 'once', 'always']);

/** How a slot's key came to be (Yubico GET METADATA tag 03). */
export const KEY_ORIGINS: readonly KeyOrigin[] = Object.freeze(['generated', 'imported']);

/** Asymmetric algorithm identifiers (SP 800-78-5 Table 6-2). */
export const KEY_ALGORITHM_ID: Readonly<Record<KeyAlgorithm, number>> = {
  RSA3072: 0x05,
  RSA2048: 0x07,
  ECCP256: 0x11,
  ECCP384: 0x14,
};

/** Symmetric (management key) algorithm identifiers (SP 800-78-5 Table 6-1). */
export const MANAGEMENT_ALGORITHM_ID: Readonly<Record<ManagementKeyAlgorithm, number>> = {
  '3DES': 0x03,
  AES128: 0x08,
  AES192: 0x0a,
  AES256: 0x0c,
};

/** Key length in bytes of each management key algorithm (SP 800-78-5 Table 6-1). */
export const MANAGEMENT_KEY_BYTES: Readonly<Record<ManagementKeyAlgorithm, number>> = {
  '3DES': 24,
  AES128: 16,
  AES192: 24,
  AES256: 32,
};

/** Cipher block length: the size of the witness and the challenge (SP 800-73-4 Part 2 Appendix A). */
export const MANAGEMENT_BLOCK_BYTES: Readonly<Record<ManagementKeyAlgorithm, number>> = {
  '3DES': 8,
  AES128: 16,
  AES192: 16,
  AES256: 16,
};

/** Modulus / field size in bytes: the RSA block or EC coordinate length. */
export const KEY_SIZE_BYTES: Readonly<Record<KeyAlgorithm, number>> = {
  RSA2048: 256,
  RSA3072: 384,
  ECCP256: 32,
  ECCP384: 48,
};

export function keyAlgorithmFromId(id: number): KeyAlgorithm | undefined {
  return (Object.keys(KEY_ALGORITHM_ID) as KeyAlgorithm[]).find((a) => KEY_ALGORITHM_ID[a] === id);
}

export function managementAlgorithmFromId(id: number): ManagementKeyAlgorithm | undefined {
  return (Object.keys(MANAGEMENT_ALGORITHM_ID) as ManagementKeyAlgorithm[]).find(
    (a) => MANAGEMENT_ALGORITHM_ID[a] === id,
  );
}

/**
 * Algorithms advertised in the SELECT answer (tag AC, SP 800-73-4 Part 2 Table 3): every key
 * algorithm cardlink implements. The secure messaging cipher suites 27/2E are never advertised:
 * cardlink does not implement SM.
 */
export const ADVERTISED_ALGORITHMS: readonly KeyAlgorithm[] = KEY_ALGORITHMS;

/** Tags of the dynamic authentication template (SP 800-73-4 Part 2 Table 7). */
export const DYN_AUTH = {
  TEMPLATE: 0x7c,
  WITNESS: 0x80,
  CHALLENGE: 0x81,
  RESPONSE: 0x82,
  EXPONENTIATION: 0x85,
} as const;

/** Tags of GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 Part 2 Tables 10 and 11) and the Yubico policies. */
export const GENERATE_TAG = {
  /** Control reference template. */
  CONTROL_TEMPLATE: 0xac,
  ALGORITHM: 0x80,
  /** Public key template in the answer. */
  PUBLIC_KEY_TEMPLATE: 0x7f49,
  RSA_MODULUS: 0x81,
  RSA_EXPONENT: 0x82,
  EC_POINT: 0x86,
  /** Yubico PIN policy. */
  YK_PIN_POLICY: 0xaa,
  /** Yubico touch policy. */
  YK_TOUCH_POLICY: 0xab,
} as const;

/** Yubico PIN policy bytes (tags AA, metadata 02). */
export const YK_PIN_POLICY: Readonly<Record<'default' | PinPolicy | 'matchOnce' | 'matchAlways', number>> = {
  default: 0x00,
  never: 0x01,
  once: 0x02,
  always: 0x03,
  matchOnce: 0x04,
  matchAlways: 0x05,
};

/** Yubico touch policy bytes (tag AB, metadata 02). cardlink has no touch sensor: only default/never. */
export const YK_TOUCH_POLICY = { default: 0x00, never: 0x01, always: 0x02, cached: 0x03 } as const;

/** Yubico IMPORT KEY component tags. */
export const IMPORT_TAG = {
  RSA_P: 0x01,
  RSA_Q: 0x02,
  RSA_DP: 0x03,
  RSA_DQ: 0x04,
  RSA_QINV: 0x05,
  EC_PRIVATE: 0x06,
} as const;

/** Yubico GET METADATA answer tags. */
export const METADATA_TAG = {
  ALGORITHM: 0x01,
  POLICY: 0x02,
  ORIGIN: 0x03,
  PUBLIC_KEY: 0x04,
  IS_DEFAULT: 0x05,
  RETRIES: 0x06,
} as const;

/** Yubico metadata "algorithm" value for the PIN and PUK. */
export const YK_METADATA_PIN_ALGORITHM = 0xff;
/** Yubico metadata origin values. */
export const YK_ORIGIN = { generated: 0x01, imported: 0x02 } as const;

/** GET DATA / PUT DATA tags (SP 800-73-4 Part 2 sections 3.1.2 and 3.3.2). */
export const DATA_TAG = {
  TAG_LIST: 0x5c,
  DATA: 0x53,
} as const;

/** P1 P2 of GET DATA and PUT DATA (SP 800-73-4 Part 2 sections 3.1.2 and 3.3.2). */
export const DATA_P1P2 = 0x3fff;

/**
 * The firmware version GET VERSION reports. yubico-piv-tool gates features on it: metadata (F7)
 * from 5.3, AES management keys from 5.4, RSA-3072 from 5.7. 5.7.0 enables exactly what cardlink
 * implements; the 5.7-only instructions cardlink lacks (move/delete key) answer 6D00.
 */
export const REPORTED_VERSION = Uint8Array.of(5, 7, 0);
