/**
 * A card's public snapshot: what anyone may read from the card without a PIN (the containers
 * with read access "always": CHUID, CCC, Discovery, certificates, Key History, ...) and its serial.
 * The card server builds it from the card's state; the daemon answers SELECT, GET DATA of those
 * containers, GET VERSION and GET SERIAL from it locally (front-card.ts), so enumerating a card
 * costs no network round trip. It holds nothing secret.
 *
 * Encoding (BER-TLV, strict):
 *   80 01 <format = 1>
 *   81 04 <serial, big-endian>
 *   84 02 <PIN tries left> <PIN try limit>                 optional; what an empty VERIFY reveals
 *   A0 L { 82 03 <container tag> 83 L <container value> }   one per container present
 */
import { concatBytes, encodeTlv, parseTlvList, TlvError } from '../codec/ber-tlv.js';
import { CardlinkError } from '../../protocol/errors.js';
import type { PivCardState, RetryStatus } from './card-state.js';
import { DATA_OBJECTS, dataObjectSpec } from './objects/catalogue.js';

export const SNAPSHOT_FORMAT = 1;

const TAG = {
  FORMAT: 0x80,
  SERIAL: 0x81,
  PIN_RETRIES: 0x84,
  OBJECT: 0xa0,
  OBJECT_TAG: 0x82,
  OBJECT_VALUE: 0x83,
} as const;

export interface CardSnapshot {
  readonly serial: number;
  /** The PIN's retry counter: public on any card (an empty VERIFY answers it). */
  readonly pinRetries?: RetryStatus | undefined;
  /** Public containers present on the card, by tag. */
  readonly objects: ReadonlyMap<number, Uint8Array>;
}

export class SnapshotError extends CardlinkError {
  constructor(message: string) {
    super('ERR_CARD_STATE', `card snapshot: ${message}`, { reason: 'snapshot' });
    this.name = 'SnapshotError';
  }
}

/** True for a container the snapshot may carry (readable without the PIN). */
export function isPublicObject(tag: number): boolean {
  return dataObjectSpec(tag)?.read === 'always';
}

/** Reads the public containers of `state`. */
export async function buildSnapshot(state: PivCardState): Promise<CardSnapshot> {
  const objects = new Map<number, Uint8Array>();
  for (const spec of DATA_OBJECTS) {
    if (spec.read !== 'always') continue;
    const value = await state.objects.get(spec.tag);
    if (value !== undefined && value.length > 0) objects.set(spec.tag, Uint8Array.from(value));
  }
  const pin = await state.references.status('pin');
  return {
    serial: state.identity.serial >>> 0,
    pinRetries: { remaining: pin.remaining, limit: pin.limit },
    objects,
  };
}

export function encodeSnapshot(snapshot: CardSnapshot): Uint8Array {
  const serial = snapshot.serial >>> 0;
  const parts = [
    encodeTlv(TAG.FORMAT, Uint8Array.of(SNAPSHOT_FORMAT)),
    encodeTlv(
      TAG.SERIAL,
      Uint8Array.of(serial >>> 24, (serial >>> 16) & 0xff, (serial >>> 8) & 0xff, serial & 0xff),
    ),
  ];
  if (snapshot.pinRetries) {
    const { remaining, limit } = snapshot.pinRetries;
    parts.push(encodeTlv(TAG.PIN_RETRIES, Uint8Array.of(remaining & 0xff, limit & 0xff)));
  }
  for (const [tag, value] of [...snapshot.objects].sort(([a], [b]) => a - b)) {
    if (!isPublicObject(tag)) throw new SnapshotError(`container ${tag.toString(16)} is not public`);
    parts.push(
      encodeTlv(TAG.OBJECT, [
        encodeTlv(TAG.OBJECT_TAG, Uint8Array.of(tag >>> 16, (tag >>> 8) & 0xff, tag & 0xff)),
        encodeTlv(TAG.OBJECT_VALUE, value),
      ]),
    );
  }
  return concatBytes(parts);
}

/** The snapshot in `bytes`; SnapshotError for anything but exactly one well-formed snapshot. */
export function decodeSnapshot(bytes: Uint8Array): CardSnapshot {
  let list;
  try {
    list = parseTlvList(bytes);
  } catch (error) {
    if (error instanceof TlvError) throw new SnapshotError(error.message);
    throw error;
  }
  const [format, serial, ...others] = list;
  let rest = others;
  let pinRetries: RetryStatus | undefined;
  if (rest[0]?.tag === TAG.PIN_RETRIES) {
    const v = rest[0].value;
    if (v.length !== 2 || v[0]! > v[1]!) throw new SnapshotError('malformed PIN retry counter');
    pinRetries = { remaining: v[0]!, limit: v[1]! };
    rest = rest.slice(1);
  }
  if (format?.tag !== TAG.FORMAT || format.value.length !== 1 || format.value[0] !== SNAPSHOT_FORMAT) {
    throw new SnapshotError('unknown format');
  }
  if (serial?.tag !== TAG.SERIAL || serial.value.length !== 4) throw new SnapshotError('serial missing');
  const objects = new Map<number, Uint8Array>();
  for (const entry of rest) {
    if (entry.tag !== TAG.OBJECT) throw new SnapshotError(`unexpected tag ${entry.tag.toString(16)}`);
    let inner;
    try {
      inner = parseTlvList(entry.value);
    } catch (error) {
      if (error instanceof TlvError) throw new SnapshotError(error.message);
      throw error;
    }
    const [tagTlv, valueTlv, extra] = inner;
    if (
      tagTlv?.tag !== TAG.OBJECT_TAG ||
      tagTlv.value.length !== 3 ||
      valueTlv?.tag !== TAG.OBJECT_VALUE ||
      extra
    ) {
      throw new SnapshotError('malformed container entry');
    }
    const tag = (tagTlv.value[0]! << 16) | (tagTlv.value[1]! << 8) | tagTlv.value[2]!;
    if (!isPublicObject(tag)) throw new SnapshotError(`container ${tag.toString(16)} is not public`);
    if (objects.has(tag)) throw new SnapshotError(`container ${tag.toString(16)} twice`);
    objects.set(tag, Uint8Array.from(valueTlv.value));
  }
  const s = serial.value;
  return { serial: ((s[0]! << 24) | (s[1]! << 16) | (s[2]! << 8) | s[3]!) >>> 0, pinRetries, objects };
}

/**
 * Whether two snapshots show the same card contents: the serial and every public container, byte
 * for byte. The PIN's retry counter is left out: it is the PIN's state, not contents, and moves
 * with every wrong PIN. A few kilobytes compared once per OPEN_CARD: cheaper than a digest.
 */
export function sameSnapshotContents(a: CardSnapshot, b: CardSnapshot): boolean {
  if (a.serial !== b.serial || a.objects.size !== b.objects.size) return false;
  for (const [tag, value] of a.objects) {
    const other = b.objects.get(tag);
    if (other === undefined || other.length !== value.length) return false;
    for (let i = 0; i < value.length; i++) if (value[i] !== other[i]) return false;
  }
  return true;
}
