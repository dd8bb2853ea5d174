import { INS } from '../constants.js';
import type { CommandHandler } from '../command-context.js';

/**
 * The instructions the card implements, by INS byte, each with the module of its handler. Anything
 * else is `6D00`, including the Yubico instructions cardlink leaves out on purpose: FB RESET (there
 * are no default secrets to reset to; the card server owns the card's life cycle), FA SET PIN
 * RETRIES, F9 ATTEST (no attestation key) and F6 MOVE KEY.
 *
 * A handler's module is imported when the instruction first runs (commandHandler), not with the
 * card: GENERAL AUTHENTICATE and IMPORT KEY bring the private-key code (@noble/curves), and a card
 * that only ever answers public commands (the daemon's front card) needs none of it.
 */
const HANDLER_MODULES = new Map<number, () => Promise<CommandHandler>>([
  [INS.SELECT, async () => (await import('./select.js')).select],
  [INS.GET_DATA, async () => (await import('./get-data.js')).getData],
  [INS.PUT_DATA, async () => (await import('./put-data.js')).putData],
  [INS.VERIFY, async () => (await import('./verify.js')).verify],
  [INS.CHANGE_REFERENCE_DATA, async () => (await import('./change-reference-data.js')).changeReferenceData],
  [INS.RESET_RETRY_COUNTER, async () => (await import('./reset-retry-counter.js')).resetRetryCounter],
  [INS.GENERAL_AUTHENTICATE, async () => (await import('./general-authenticate.js')).generalAuthenticate],
  [INS.GENERATE_ASYMMETRIC_KEY_PAIR, async () => (await import('./generate-key-pair.js')).generateKeyPair],
  [INS.YK_GET_METADATA, async () => (await import('./get-metadata.js')).getMetadata],
  [INS.YK_GET_SERIAL, async () => (await import('./get-serial.js')).getSerial],
  [INS.YK_GET_VERSION, async () => (await import('./get-version.js')).getVersion],
  [INS.YK_IMPORT_KEY, async () => (await import('./import-key.js')).importKey],
  [INS.YK_SET_MANAGEMENT_KEY, async () => (await import('./set-management-key.js')).setManagementKey],
]);

/** The INS bytes the card implements (the keys of HANDLER_MODULES). */
export const IMPLEMENTED_INSTRUCTIONS: ReadonlySet<number> = new Set(HANDLER_MODULES.keys());

/** Each instruction's handler once asked for: one import per process, then a settled promise. */
const loaded = new Map<number, Promise<CommandHandler>>();

/** The handler of `ins`, loaded on first use; undefined when the card does not implement it. */
export function commandHandler(ins: number): Promise<CommandHandler> | undefined {
  let handler = loaded.get(ins);
  if (!handler) {
    const load = HANDLER_MODULES.get(ins);
    if (!load) return undefined;
    handler = load();
    // A failed import is not kept: the next command tries again.
    handler.catch(() => loaded.delete(ins));
    loaded.set(ins, handler);
  }
  return handler;
}

/** Instructions whose command data may arrive in a command chain (CLA 10): the ones with long bodies. */
export const CHAINABLE_INSTRUCTIONS: ReadonlySet<number> = new Set([
  INS.PUT_DATA,
  INS.GENERAL_AUTHENTICATE,
  INS.YK_IMPORT_KEY,
]);
