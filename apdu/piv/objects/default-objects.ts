import type { CardIdentity, PivCardState } from '../card-state.js';
import { OBJECT_TAG } from './catalogue.js';
import { encodeCcc } from './ccc.js';
import { encodeChuid } from './chuid.js';
import { encodeDiscovery } from './discovery.js';
import type { FascN } from './fasc-n.js';
import { encodeKeyHistory } from './key-history.js';

/**
 * The data objects a new cardlink card starts with: CHUID (GUID + FASC-N with agency code 9999),
 * CCC, Discovery Object and an empty Key History. Certificates come with the keys (see
 * `provisioning.ts`); the PIN-protected biometric and printed-information containers stay empty.
 */

/** CHUID expiration when none is given: 10 years after `now`. */
export const DEFAULT_CHUID_VALIDITY_YEARS = 10;

export interface DefaultObjectOptions {
  /** Default: now. */
  readonly now?: Date;
  /** CHUID expiration; default now + DEFAULT_CHUID_VALIDITY_YEARS. */
  readonly expires?: Date;
  readonly fascn?: FascN;
}

/** [tag, value] pairs of the default objects (values are what the DataObjectStore keeps). */
export function defaultObjects(
  identity: CardIdentity,
  options: DefaultObjectOptions = {},
): [number, Uint8Array][] {
  const now = options.now ?? new Date();
  const expires = options.expires ?? addYears(now, DEFAULT_CHUID_VALIDITY_YEARS);
  return [
    [OBJECT_TAG.CARD_CAPABILITY_CONTAINER, encodeCcc(identity.guid)],
    [
      OBJECT_TAG.CHUID,
      encodeChuid({ guid: identity.guid, expires, ...(options.fascn ? { fascn: options.fascn } : {}) }),
    ],
    [OBJECT_TAG.DISCOVERY, encodeDiscovery()],
    [OBJECT_TAG.KEY_HISTORY, encodeKeyHistory(0, 0)],
  ];
}

/**
 * Writes each default object the card does not have yet (an existing CHUID is never replaced:
 * middleware caches keyed on its GUID must stay valid). Returns the tags written.
 */
export async function installDefaultObjects(
  state: Pick<PivCardState, 'identity' | 'objects'>,
  options: DefaultObjectOptions = {},
): Promise<number[]> {
  const written: number[] = [];
  for (const [tag, value] of defaultObjects(state.identity, options)) {
    const current = await state.objects.get(tag);
    if (current !== undefined && current.length > 0) continue;
    await state.objects.put(tag, value);
    written.push(tag);
  }
  return written;
}

function addYears(date: Date, years: number): Date {
  const d = new Date(date.getTime());
  d.setUTCFullYear(d.getUTCFullYear() + years);
  return d;
}
