/**
 * Where an issuing CA's sealed key is bound (the AAD of its seal, server/keys/sealing.ts): no
 * tenant, the pseudo card id `ca:<id>` (card ids are UUIDs, so it names no card) and key
 * reference 0 (no PIV slot). A CA key copied into a card's row, or a card key into the CA's row,
 * therefore fails to open.
 */
export const CA_KEY_SLOT = 0;
const CA_PREFIX = 'ca:';

export function caKeyLocation(caId: string): { tenantId: string; cardId: string; slot: number } {
  return { tenantId: '', cardId: `${CA_PREFIX}${caId}`, slot: CA_KEY_SLOT };
}

/** The CA id of a location made by caKeyLocation. */
export function caIdOfKeyLocation(cardId: string): string {
  return cardId.startsWith(CA_PREFIX) ? cardId.slice(CA_PREFIX.length) : cardId;
}
