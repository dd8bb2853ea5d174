/**
 * The secrets of a local card: given by the user, or generated and shown once.
 * cardlink ships no default PIN, PUK or management key.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { CardlinkError } from '../../protocol/errors.js';
import type { ManagementKeyAlgorithm } from '../../apdu/piv/index.js';
import {
  MANAGEMENT_KEY_BYTES,
  REFERENCE_DATA_MAX_BYTES,
  REFERENCE_DATA_MIN_BYTES,
  REFERENCE_DATA_PAD_BYTE,
} from '../../apdu/piv/index.js';

export interface LocalCardSecrets {
  pin: Uint8Array;
  puk: Uint8Array;
  managementKey: { algorithm: ManagementKeyAlgorithm; key: Uint8Array };
  /** Which of the three were generated here (and so must be shown to the user once). */
  generated: { pin: boolean; puk: boolean; managementKey: boolean };
}

/** The algorithm a management key of each length gets when none is named (24 bytes: AES-192, as current YubiKeys). */
const DEFAULT_ALGORITHM_BY_LENGTH: Record<number, ManagementKeyAlgorithm> = {
  16: 'AES128',
  24: 'AES192',
  32: 'AES256',
};

function referenceData(option: string, value: string): Uint8Array {
  const bytes = new TextEncoder().encode(value);
  if (bytes.length < REFERENCE_DATA_MIN_BYTES || bytes.length > REFERENCE_DATA_MAX_BYTES) {
    throw new CardlinkError(
      'ERR_CONFIG_INVALID',
      `--${option} must be 6 to 8 characters (got ${bytes.length})`,
      {
        option,
      },
    );
  }
  if (bytes.includes(REFERENCE_DATA_PAD_BYTE))
    throw new CardlinkError('ERR_CONFIG_INVALID', `--${option} must not contain byte FF`, { option });
  return bytes;
}

function randomDigits(n: number): string {
  let s = '';
  for (let i = 0; i < n; i++) s += String(randomInt(10));
  return s;
}

export function resolveLocalCardSecrets(args: {
  pin?: string | undefined;
  puk?: string | undefined;
  mgmtKey?: string | undefined;
  mgmtKeyAlgorithm?: ManagementKeyAlgorithm | undefined;
}): LocalCardSecrets {
  const pin = args.pin ?? randomDigits(8);
  const puk = args.puk ?? randomDigits(8);
  let key: Uint8Array;
  let algorithm: ManagementKeyAlgorithm;
  if (args.mgmtKey === undefined) {
    algorithm = args.mgmtKeyAlgorithm ?? 'AES192';
    key = randomBytes(MANAGEMENT_KEY_BYTES[algorithm]);
  } else {
    if (!/^([0-9a-fA-F]{2})+$/.test(args.mgmtKey)) {
      throw new CardlinkError('ERR_CONFIG_INVALID', '--mgmt-key must be hexadecimal', { option: 'mgmt-key' });
    }
    key = Uint8Array.from(Buffer.from(args.mgmtKey, 'hex'));
    const fallback = DEFAULT_ALGORITHM_BY_LENGTH[key.length];
    algorithm = args.mgmtKeyAlgorithm ?? fallback ?? 'AES192';
    if (key.length !== MANAGEMENT_KEY_BYTES[algorithm]) {
      throw new CardlinkError(
        'ERR_CONFIG_INVALID',
        `--mgmt-key must be ${MANAGEMENT_KEY_BYTES[algorithm]} bytes for ${algorithm} (got ${key.length})`,
        { option: 'mgmt-key' },
      );
    }
  }
  return {
    pin: referenceData('pin', pin),
    puk: referenceData('puk', puk),
    managementKey: { algorithm, key },
    generated: {
      pin: args.pin === undefined,
      puk: args.puk === undefined,
      managementKey: args.mgmtKey === undefined,
    },
  };
}
