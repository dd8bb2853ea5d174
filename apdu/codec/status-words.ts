/**
 * ISO/IEC 7816-4 status words (section 5.6, tables 5 and 6) used by cardlink, with names.
 * A status word is the 16-bit value SW1 << 8 | SW2.
 */
export const SW = {
  OK: 0x9000,
  /** `61xx`: xx more bytes available with GET RESPONSE (xx = 00 means 256 or more). */
  BYTES_REMAINING_00: 0x6100,
  /** `63Cx`: verification failed, x tries left (ISO 7816-4 table 6). */
  VERIFY_FAILED_00: 0x63c0,
  MEMORY_FAILURE: 0x6581,
  WRONG_LENGTH: 0x6700,
  LOGICAL_CHANNEL_NOT_SUPPORTED: 0x6881,
  SECURE_MESSAGING_NOT_SUPPORTED: 0x6882,
  LAST_COMMAND_OF_CHAIN_EXPECTED: 0x6883,
  COMMAND_CHAINING_NOT_SUPPORTED: 0x6884,
  COMMAND_NOT_ALLOWED: 0x6900,
  SECURITY_STATUS_NOT_SATISFIED: 0x6982,
  AUTH_METHOD_BLOCKED: 0x6983,
  REFERENCE_DATA_NOT_USABLE: 0x6984,
  CONDITIONS_NOT_SATISFIED: 0x6985,
  COMMAND_NOT_ALLOWED_NO_EF: 0x6986,
  INCORRECT_DATA: 0x6a80,
  FUNCTION_NOT_SUPPORTED: 0x6a81,
  FILE_NOT_FOUND: 0x6a82,
  NOT_ENOUGH_MEMORY: 0x6a84,
  INCORRECT_P1P2: 0x6a86,
  REFERENCE_NOT_FOUND: 0x6a88,
  WRONG_P1P2: 0x6b00,
  /** `6Cxx`: wrong Le, xx is the exact length. */
  WRONG_LE_00: 0x6c00,
  INS_NOT_SUPPORTED: 0x6d00,
  CLA_NOT_SUPPORTED: 0x6e00,
  NO_PRECISE_DIAGNOSIS: 0x6f00,
} as const;

export type StatusWord = number;

const NAMES = new Map<number, string>(Object.entries(SW).map(([name, sw]) => [sw, name]));

/** `63Cx` with x = tries left (clamped to 0..15). */
export function swVerifyFailed(triesLeft: number): StatusWord {
  return SW.VERIFY_FAILED_00 | Math.max(0, Math.min(15, triesLeft));
}

/** x of a `63Cx` (verification failed, x tries left); undefined for any other status word. */
export function verifyTriesLeft(sw: StatusWord): number | undefined {
  return (sw & 0xfff0) === SW.VERIFY_FAILED_00 ? sw & 0x0f : undefined;
}

/** `61xx` for `remaining` bytes still to fetch; 256 or more is reported as `6100`. */
export function swBytesRemaining(remaining: number): StatusWord {
  return SW.BYTES_REMAINING_00 | (remaining >= 256 ? 0 : remaining);
}

/** A readable name for logs and errors, e.g. `6982 SECURITY_STATUS_NOT_SATISFIED`. */
export function describeStatusWord(sw: StatusWord): string {
  const hex = sw.toString(16).padStart(4, '0').toUpperCase();
  const name =
    NAMES.get(sw) ??
    ((sw & 0xff00) === 0x6100
      ? 'BYTES_REMAINING'
      : verifyTriesLeft(sw) !== undefined
        ? `VERIFY_FAILED (${verifyTriesLeft(sw)} tries left)`
        : (sw & 0xff00) === 0x6c00
          ? 'WRONG_LE'
          : 'UNKNOWN');
  return `${hex} ${name}`;
}

/** True for the status words ISO 7816-4 counts as success (`9000`, `61xx`). */
export function isSuccess(sw: StatusWord): boolean {
  return sw === SW.OK || (sw & 0xff00) === 0x6100;
}
