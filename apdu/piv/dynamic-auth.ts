import { ApduError, SW } from '../codec/index.js';
import { parseDataTlvs, uniqueTlvs } from './command-context.js';
import { DYN_AUTH } from './constants.js';

/**
 * The dynamic authentication template of GENERAL AUTHENTICATE (SP 800-73-4 Part 2 Table 7):
 * `7C len { 80 witness | 81 challenge | 82 response | 85 exponentiation }`, each at most once;
 * an item of length 0 asks the card to produce it. Anything else is `6A80`.
 */
export type DynamicAuthItems = ReadonlyMap<number, Uint8Array>;

export function parseDynamicAuthTemplate(data: Uint8Array): DynamicAuthItems {
  const outer = parseDataTlvs(data);
  if (outer.length !== 1 || outer[0]!.tag !== DYN_AUTH.TEMPLATE) {
    throw new ApduError(
      SW.INCORRECT_DATA,
      'GENERAL AUTHENTICATE takes one dynamic authentication template (7C)',
    );
  }
  return uniqueTlvs(parseDataTlvs(outer[0]!.value), [
    DYN_AUTH.WITNESS,
    DYN_AUTH.CHALLENGE,
    DYN_AUTH.RESPONSE,
    DYN_AUTH.EXPONENTIATION,
  ]);
}
