import { INS } from '../constants.js';
import type { CommandHandler } from '../command-context.js';
import { changeReferenceData } from './change-reference-data.js';
import { generalAuthenticate } from './general-authenticate.js';
import { generateKeyPair } from './generate-key-pair.js';
import { getData } from './get-data.js';
import { getMetadata } from './get-metadata.js';
import { getSerial } from './get-serial.js';
import { getVersion } from './get-version.js';
import { importKey } from './import-key.js';
import { putData } from './put-data.js';
import { resetRetryCounter } from './reset-retry-counter.js';
import { select } from './select.js';
import { setManagementKey } from './set-management-key.js';
import { verify } from './verify.js';

/**
 * The instructions the card implements, by INS byte. Anything else is `6D00`, including the
 * Yubico instructions cardlink leaves out on purpose: FB RESET (there are no default secrets to
 * reset to; the card server owns the card's life cycle), FA SET PIN RETRIES, F9 ATTEST (no
 * attestation key) and F6 MOVE KEY.
 */
export const COMMAND_HANDLERS: ReadonlyMap<number, CommandHandler> = new Map<number, CommandHandler>([
  [INS.SELECT, select],
  [INS.GET_DATA, getData],
  [INS.PUT_DATA, putData],
  [INS.VERIFY, verify],
  [INS.CHANGE_REFERENCE_DATA, changeReferenceData],
  [INS.RESET_RETRY_COUNTER, resetRetryCounter],
  [INS.GENERAL_AUTHENTICATE, generalAuthenticate],
  [INS.GENERATE_ASYMMETRIC_KEY_PAIR, generateKeyPair],
  [INS.YK_GET_METADATA, getMetadata],
  [INS.YK_GET_SERIAL, getSerial],
  [INS.YK_GET_VERSION, getVersion],
  [INS.YK_IMPORT_KEY, importKey],
  [INS.YK_SET_MANAGEMENT_KEY, setManagementKey],
]);

/** Instructions whose command data may arrive in a command chain (CLA 10): the ones with long bodies. */
export const CHAINABLE_INSTRUCTIONS: ReadonlySet<number> = new Set([
  INS.PUT_DATA,
  INS.GENERAL_AUTHENTICATE,
  INS.YK_IMPORT_KEY,
]);
