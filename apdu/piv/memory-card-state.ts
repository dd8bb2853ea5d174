import {
  createHash,
  createHmac,
  createPrivateKey,
  randomBytes,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import type {
  CardIdentity,
  DataObjectStore,
  KeyAlgorithm,
  KeySlotStore,
  ManagementKeyAlgorithm,
  ManagementKeyStore,
  PinPolicy,
  PivCardState,
  ReferenceDataStore,
  ReferenceKind,
  RetryStatus,
  SlotKeyInfo,
  VerifyOutcome,
} from './card-state.js';
import { CardStateError } from './crypto/errors.js';
import { keyAlgorithmOf } from './crypto/key-algorithms.js';
import { generateKeyPair, spkiOf } from './crypto/key-generation.js';
import { decryptBlocks, encryptBlocks, validateManagementKey } from './crypto/management-key.js';
import { deriveSharedSecret, prepareSigner, type PreparedSigner } from './crypto/private-key-operations.js';

export { CardStateError, type CardStateErrorReason } from './crypto/errors.js';

/**
 * A PIV card's whole state in memory, for local cards and tests. Nothing persists; secrets are
 * held only as PIN/PUK verifiers (HMAC-SHA-256 under a random salt), node:crypto KeyObjects and the
 * management key bytes. No secret has a default: PIN, PUK and management key are mandatory.
 *
 * Every call runs to completion without awaiting anything in the middle, so concurrent calls never
 * interleave: each is all-or-nothing, and N concurrent wrong PINs consume exactly N tries.
 */

/** Shortest PIN/PUK, in bytes, without the 0xFF padding (SP 800-73-4 Part 2 section 2.4.3). */
export const REFERENCE_DATA_MIN_BYTES = 6;
/** Longest PIN/PUK, in bytes; also the padded length on the wire (SP 800-73-4 Part 2 section 2.4.3). */
export const REFERENCE_DATA_MAX_BYTES = 8;
/** The PIN pad byte (SP 800-73-4 Part 2 section 2.4.3); trailing pad bytes are not part of the value. */
export const REFERENCE_DATA_PAD_BYTE = 0xff;
/** Tries before the PIN or PUK blocks when the options give none (the YubiKey default too). */
export const DEFAULT_RETRY_LIMIT = 3;
/** Largest retry limit: the counter travels in one byte (Yubico SET PIN RETRIES, INS FA). */
export const MAX_RETRY_LIMIT = 255;
/** Largest data object value the memory store keeps (a sanity bound; the card may enforce less). */
export const MAX_DATA_OBJECT_BYTES = 16 * 1024;
/** Bytes of the random salt each PIN/PUK verifier is keyed with. */
const VERIFIER_SALT_BYTES = 32;

/** Key slots a PIV card holds keys in: 9A, 9C, 9D, 9E and the retired key management slots 82..95 (SP 800-73-4 Part 1 Table 4b). */
export const PIV_KEY_SLOTS: readonly number[] = Object.freeze([
  0x9a,
  0x9c,
  0x9d,
  0x9e,
  ...Array.from({ length: 0x95 - 0x82 + 1 }, (_, i) => 0x82 + i),
]);

const PIN_POLICIES: readonly PinPolicy[] = ['never', 'once', 'always'];

export interface MemoryCardStateOptions {
  /** 6..8 bytes, with or without trailing 0xFF padding. */
  readonly pin: Uint8Array;
  /** 6..8 bytes, with or without trailing 0xFF padding. */
  readonly puk: Uint8Array;
  /** Default DEFAULT_RETRY_LIMIT. */
  readonly pinRetries?: number;
  /** Default DEFAULT_RETRY_LIMIT. */
  readonly pukRetries?: number;
  readonly managementKey: { readonly algorithm: ManagementKeyAlgorithm; readonly key: Uint8Array };
  /** 32-bit serial; random when absent. */
  readonly serial?: number;
  /** 16-byte GUID; random when absent. */
  readonly guid?: Uint8Array;
}

interface Reference {
  remaining: number;
  readonly limit: number;
  salt: Buffer;
  digest: Buffer;
}

interface SlotEntry {
  readonly info: SlotKeyInfo;
  readonly privateKey: KeyObject;
  readonly signer: PreparedSigner;
}

interface Internals {
  readonly identity: CardIdentity;
  readonly references: Record<ReferenceKind, Reference>;
  readonly slots: Map<number, SlotEntry>;
  management: { algorithm: ManagementKeyAlgorithm; key: Buffer };
  readonly objects: Map<number, Uint8Array>;
}

const registry = new WeakMap<PivCardState, Internals>();

/** Creates a card state held in memory. Throws CardStateError on a malformed secret or option. */
export function createMemoryCardState(options: MemoryCardStateOptions): PivCardState {
  if (!options || !options.managementKey) {
    throw new CardStateError('KEY_INVALID', 'a management key is required');
  }
  const pin = newReference(options.pin, retryLimit(options.pinRetries, 'pinRetries'));
  const puk = newReference(options.puk, retryLimit(options.pukRetries, 'pukRetries'));
  validateManagementKey(options.managementKey.algorithm, options.managementKey.key);
  const internals: Internals = {
    identity: Object.freeze({ serial: serialOf(options.serial), guid: guidOf(options.guid) }),
    references: { pin, puk },
    slots: new Map(),
    management: { algorithm: options.managementKey.algorithm, key: Buffer.from(options.managementKey.key) },
    objects: new Map(),
  };
  const state: PivCardState = Object.freeze({
    identity: internals.identity,
    references: referenceStore(internals),
    keys: keyStore(internals),
    managementKey: managementKeyStore(internals),
    objects: objectStore(internals),
  });
  registry.set(state, internals);
  return state;
}

/**
 * A hex SHA-256 over all persistent state of a memory card state: identity, retry counters and
 * limits, PIN/PUK verifiers, each slot's algorithm, policies and SPKI, the management key algorithm
 * and a hash of the key, and every data object. Equal before and after a command proves the
 * command changed nothing. Throws for a state not made by createMemoryCardState.
 */
export function memoryStateFingerprint(state: PivCardState): string {
  const s = registry.get(state);
  if (!s) throw new CardStateError('INPUT_RANGE', 'not a memory card state');
  const h = createHash('sha256');
  const field = (label: string, value: Uint8Array | string | number): void => {
    const bytes = typeof value === 'string' || typeof value === 'number' ? Buffer.from(String(value)) : value;
    const len = Buffer.alloc(4);
    len.writeUInt32BE(bytes.length);
    h.update(label).update(len).update(bytes);
  };
  field('serial', s.identity.serial);
  field('guid', s.identity.guid);
  for (const kind of ['pin', 'puk'] as const) {
    const r = s.references[kind];
    field(`${kind}.remaining`, r.remaining);
    field(`${kind}.limit`, r.limit);
    field(`${kind}.salt`, r.salt);
    field(`${kind}.digest`, r.digest);
  }
  for (const slot of [...s.slots.keys()].sort((a, b) => a - b)) {
    const { info } = s.slots.get(slot)!;
    field('slot', slot);
    field('slot.algorithm', info.algorithm);
    field('slot.pinPolicy', info.pinPolicy);
    field('slot.origin', info.origin);
    field('slot.spki', info.publicKeySpki);
  }
  field('mgmt.algorithm', s.management.algorithm);
  field('mgmt.keyHash', createHash('sha256').update(s.management.key).digest());
  for (const tag of [...s.objects.keys()].sort((a, b) => a - b)) {
    field('object', tag);
    field('object.value', s.objects.get(tag)!);
  }
  return h.digest('hex');
}

// --- PIN and PUK -------------------------------------------------------------------------------

function referenceStore(s: Internals): ReferenceDataStore {
  return {
    async status(kind) {
      const r = referenceOf(s, kind);
      return { remaining: r.remaining, limit: r.limit } satisfies RetryStatus;
    },
    async verify(kind, candidate) {
      return consumeAndCompare(referenceOf(s, kind), candidate);
    },
    async change(kind, current, next) {
      const r = referenceOf(s, kind);
      const canonicalNext = canonicalReferenceData(next); // refused before any try is consumed
      const outcome = consumeAndCompare(r, current);
      if (outcome.ok) setVerifier(r, canonicalNext);
      return outcome;
    },
    async unblockPin(puk, newPin) {
      const canonicalPin = canonicalReferenceData(newPin);
      const outcome = consumeAndCompare(s.references.puk, puk);
      if (outcome.ok) {
        setVerifier(s.references.pin, canonicalPin);
        s.references.pin.remaining = s.references.pin.limit;
      }
      return outcome;
    },
  };
}

function referenceOf(s: Internals, kind: ReferenceKind): Reference {
  if (kind !== 'pin' && kind !== 'puk') {
    throw new CardStateError('INPUT_RANGE', 'unknown reference kind', { kind: String(kind) });
  }
  return s.references[kind];
}

/** The try is consumed before the comparison and given back on success; blocked compares nothing. */
function consumeAndCompare(r: Reference, candidate: Uint8Array): VerifyOutcome {
  if (!(candidate instanceof Uint8Array) || candidate.length > REFERENCE_DATA_MAX_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK candidate longer than 8 bytes', {
      length: candidate instanceof Uint8Array ? candidate.length : -1,
    });
  }
  if (r.remaining <= 0) return { ok: false, remaining: 0 };
  r.remaining -= 1;
  const digest = verifierDigest(r.salt, stripPadding(candidate));
  if (timingSafeEqual(digest, r.digest)) {
    r.remaining = r.limit;
    return { ok: true };
  }
  return { ok: false, remaining: r.remaining };
}

function newReference(value: Uint8Array, limit: number): Reference {
  const r: Reference = { remaining: limit, limit, salt: Buffer.alloc(0), digest: Buffer.alloc(0) };
  setVerifier(r, canonicalReferenceData(value));
  return r;
}

function setVerifier(r: Reference, canonical: Uint8Array): void {
  r.salt = randomBytes(VERIFIER_SALT_BYTES);
  r.digest = verifierDigest(r.salt, canonical);
}

function verifierDigest(salt: Buffer, value: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(value).digest();
}

/** The value without its 0xFF padding, checked to be 6..8 bytes. */
function canonicalReferenceData(value: Uint8Array): Uint8Array {
  if (!(value instanceof Uint8Array) || value.length > REFERENCE_DATA_MAX_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK must be 6 to 8 bytes', {
      length: value instanceof Uint8Array ? value.length : -1,
    });
  }
  const canonical = stripPadding(value);
  if (canonical.length < REFERENCE_DATA_MIN_BYTES) {
    throw new CardStateError('REFERENCE_DATA_LENGTH', 'PIN/PUK must be 6 to 8 bytes', {
      length: canonical.length,
    });
  }
  return canonical;
}

function stripPadding(value: Uint8Array): Uint8Array {
  let end = value.length;
  while (end > 0 && value[end - 1] === REFERENCE_DATA_PAD_BYTE) end--;
  return value.subarray(0, end);
}

function retryLimit(value: number | undefined, option: string): number {
  const limit = value ?? DEFAULT_RETRY_LIMIT;
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_RETRY_LIMIT) {
    throw new CardStateError('INPUT_RANGE', 'retry limit must be 1..255', { option });
  }
  return limit;
}

// --- Keys --------------------------------------------------------------------------------------

function keyStore(s: Internals): KeySlotStore {
  const entryOf = (slot: number): SlotEntry => {
    checkSlot(slot);
    const entry = s.slots.get(slot);
    if (!entry) throw new CardStateError('SLOT_EMPTY', 'no key in slot', { slot });
    return entry;
  };
  const install = (slot: number, privateKey: KeyObject, info: SlotKeyInfo): SlotKeyInfo => {
    const signer = prepareSigner(privateKey);
    s.slots.set(slot, { info, privateKey, signer });
    return copyInfo(info);
  };
  return {
    async info(slot) {
      checkSlot(slot);
      const entry = s.slots.get(slot);
      return entry ? copyInfo(entry.info) : undefined;
    },
    async generate(slot, algorithm, pinPolicy) {
      checkSlot(slot);
      checkPinPolicy(pinPolicy);
      const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
      return install(slot, privateKey, freezeInfo(algorithm, publicKeySpki, pinPolicy, 'generated'));
    },
    async importKey(slot, algorithm, pkcs8, pinPolicy) {
      checkSlot(slot);
      checkPinPolicy(pinPolicy);
      let privateKey: KeyObject;
      try {
        privateKey = createPrivateKey({ key: Buffer.from(pkcs8), format: 'der', type: 'pkcs8' });
      } catch {
        throw new CardStateError('KEY_INVALID', 'not a PKCS#8 private key', { slot });
      }
      const actual = keyAlgorithmOf(privateKey);
      if (actual !== algorithm) {
        throw new CardStateError('KEY_TYPE_MISMATCH', 'imported key is of another algorithm', {
          slot,
          algorithm,
          actual,
        });
      }
      return install(slot, privateKey, freezeInfo(algorithm, spkiOf(privateKey), pinPolicy, 'imported'));
    },
    async sign(slot, input) {
      return new Uint8Array(entryOf(slot).signer.sign(input));
    },
    async deriveSharedSecret(slot, peerPoint) {
      return new Uint8Array(deriveSharedSecret(entryOf(slot).privateKey, peerPoint));
    },
  };
}

function checkSlot(slot: number): void {
  if (!PIV_KEY_SLOTS.includes(slot)) {
    throw new CardStateError('SLOT_INVALID', 'not a PIV key slot', {
      slot: Number.isInteger(slot) ? slot : -1,
    });
  }
}

function checkPinPolicy(policy: PinPolicy): void {
  if (!PIN_POLICIES.includes(policy)) {
    throw new CardStateError('INPUT_RANGE', 'unknown PIN policy', { policy: String(policy) });
  }
}

function freezeInfo(
  algorithm: KeyAlgorithm,
  publicKeySpki: Uint8Array,
  pinPolicy: PinPolicy,
  origin: SlotKeyInfo['origin'],
): SlotKeyInfo {
  return Object.freeze({ algorithm, publicKeySpki: new Uint8Array(publicKeySpki), pinPolicy, origin });
}

function copyInfo(info: SlotKeyInfo): SlotKeyInfo {
  return { ...info, publicKeySpki: new Uint8Array(info.publicKeySpki) };
}

// --- Management key ----------------------------------------------------------------------------

function managementKeyStore(s: Internals): ManagementKeyStore {
  return {
    async algorithm() {
      return s.management.algorithm;
    },
    async encryptBlock(block) {
      return encryptBlocks(s.management.algorithm, s.management.key, block);
    },
    async decryptBlock(block) {
      return decryptBlocks(s.management.algorithm, s.management.key, block);
    },
    async replace(algorithm, key) {
      validateManagementKey(algorithm, key);
      const old = s.management.key;
      s.management = { algorithm, key: Buffer.from(key) };
      old.fill(0);
    },
  };
}

// --- Data objects ------------------------------------------------------------------------------

function objectStore(s: Internals): DataObjectStore {
  return {
    async get(tag) {
      checkTag(tag);
      return copyOf(s.objects.get(tag));
    },
    async put(tag, value) {
      checkTag(tag);
      if (!(value instanceof Uint8Array) || value.length > MAX_DATA_OBJECT_BYTES) {
        throw new CardStateError('OBJECT_INVALID', 'data object too large', {
          tag,
          length: value instanceof Uint8Array ? value.length : -1,
          limit: MAX_DATA_OBJECT_BYTES,
        });
      }
      if (value.length === 0) s.objects.delete(tag);
      else s.objects.set(tag, new Uint8Array(value));
    },
  };
}

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag <= 0 || tag > 0xffffff) {
    throw new CardStateError('OBJECT_INVALID', 'data object tag must be 1 to 3 bytes', {
      tag: Number.isFinite(tag) ? tag : -1,
    });
  }
}

// --- Identity ----------------------------------------------------------------------------------

function serialOf(serial: number | undefined): number {
  // Below 2^31, like real tokens: yubico-piv-tool prints the serial as a signed int.
  if (serial === undefined) return randomBytes(4).readUInt32BE(0) & 0x7fffffff;
  if (!Number.isInteger(serial) || serial < 0 || serial > 0xffffffff) {
    throw new CardStateError('INPUT_RANGE', 'serial must be a 32-bit unsigned integer');
  }
  return serial;
}

function guidOf(guid: Uint8Array | undefined): Uint8Array {
  if (guid === undefined) return new Uint8Array(randomBytes(16));
  if (!(guid instanceof Uint8Array) || guid.length !== 16) {
    throw new CardStateError('INPUT_LENGTH', 'GUID must be 16 bytes');
  }
  return new Uint8Array(guid);
}

/**
 * A copy as a plain Uint8Array. `new Uint8Array(x)` always copies; `x.slice()` would not when `x`
 * is a Buffer (Buffer#slice returns a view), and callers do pass Buffers.
 */
function copyOf(bytes: Uint8Array | undefined): Uint8Array | undefined {
  return bytes === undefined ? undefined : new Uint8Array(bytes);
}
