import { createHash, createHmac, randomBytes, timingSafeEqual, type KeyObject } from 'node:crypto';
import type {
  CardIdentity,
  DataObjectStore,
  KeySlotStore,
  ManagementKeyAlgorithm,
  ManagementKeyStore,
  PivCardState,
  ReferenceDataStore,
  ReferenceKind,
  RetryStatus,
  SlotKeyInfo,
  VerifyOutcome,
} from './card-state.js';
import {
  checkDataObjectTag,
  checkDataObjectValue,
  checkKeyAlgorithm,
  checkKeySlot,
  checkPinPolicy,
  copySlotKeyInfo,
  importedPrivateKey,
  slotKeyInfo,
} from './card-state-rules.js';
import { CardStateError } from './crypto/errors.js';
import { generateKeyPair, spkiOf } from './crypto/key-generation.js';
import { decryptBlocks, encryptBlocks, validateManagementKey } from './crypto/management-key.js';
import { deriveSharedSecret, prepareSigner, type PreparedSigner } from './crypto/private-key-operations.js';
import { GUID_BYTES } from './objects/chuid.js';
import {
  canonicalReferenceValue,
  checkReferenceKind,
  DEFAULT_RETRY_LIMIT,
  MAX_RETRY_LIMIT,
  referenceCandidate,
} from './reference-data.js';

/**
 * A PIV card's whole state in memory, for local cards and tests. Nothing persists; secrets are
 * held only as PIN/PUK verifiers (HMAC-SHA-256 under a random salt), node:crypto KeyObjects and the
 * management key bytes. No secret has a default: PIN, PUK and management key are mandatory.
 *
 * It defines no PIV rule of its own: slots, algorithms, PIN policies, the PKCS#8 import check and
 * data object limits come from `card-state-rules.ts`, PIN/PUK lengths, padding and retry limits
 * from `reference-data.ts`, exactly as the server's persistent stores take them. It exports no
 * constant (a test keeps it so).
 *
 * Every call runs to completion without awaiting anything in the middle, so concurrent calls never
 * interleave: each is all-or-nothing, and N concurrent wrong PINs consume exactly N tries.
 */

/** Bytes of the random salt each PIN/PUK verifier is keyed with. */
const VERIFIER_SALT_BYTES = 32;

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
      const canonicalNext = canonicalReferenceValue(next); // refused before any try is consumed
      const outcome = consumeAndCompare(r, current);
      if (outcome.ok) setVerifier(r, canonicalNext);
      return outcome;
    },
    async unblockPin(puk, newPin) {
      const canonicalPin = canonicalReferenceValue(newPin);
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
  checkReferenceKind(kind);
  return s.references[kind];
}

/** The try is consumed before the comparison and given back on success; blocked compares nothing. */
function consumeAndCompare(r: Reference, candidate: Uint8Array): VerifyOutcome {
  const value = referenceCandidate(candidate);
  if (r.remaining <= 0) return { ok: false, remaining: 0 };
  r.remaining -= 1;
  const digest = verifierDigest(r.salt, value);
  if (timingSafeEqual(digest, r.digest)) {
    r.remaining = r.limit;
    return { ok: true };
  }
  return { ok: false, remaining: r.remaining };
}

function newReference(value: Uint8Array, limit: number): Reference {
  const r: Reference = { remaining: limit, limit, salt: Buffer.alloc(0), digest: Buffer.alloc(0) };
  setVerifier(r, canonicalReferenceValue(value));
  return r;
}

function setVerifier(r: Reference, canonical: Uint8Array): void {
  r.salt = randomBytes(VERIFIER_SALT_BYTES);
  r.digest = verifierDigest(r.salt, canonical);
}

function verifierDigest(salt: Buffer, value: Uint8Array): Buffer {
  return createHmac('sha256', salt).update(value).digest();
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
    checkKeySlot(slot);
    const entry = s.slots.get(slot);
    if (!entry) throw new CardStateError('SLOT_EMPTY', 'no key in slot', { slot });
    return entry;
  };
  const install = (slot: number, privateKey: KeyObject, info: SlotKeyInfo): SlotKeyInfo => {
    const signer = prepareSigner(privateKey);
    s.slots.set(slot, { info, privateKey, signer });
    return copySlotKeyInfo(info);
  };
  return {
    async info(slot) {
      checkKeySlot(slot);
      const entry = s.slots.get(slot);
      return entry ? copySlotKeyInfo(entry.info) : undefined;
    },
    async generate(slot, algorithm, pinPolicy) {
      checkKeySlot(slot);
      checkKeyAlgorithm(algorithm);
      checkPinPolicy(pinPolicy);
      const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
      return install(slot, privateKey, slotKeyInfo(algorithm, publicKeySpki, pinPolicy, 'generated'));
    },
    async importKey(slot, algorithm, pkcs8, pinPolicy) {
      checkKeySlot(slot);
      checkKeyAlgorithm(algorithm);
      checkPinPolicy(pinPolicy);
      const privateKey = importedPrivateKey(slot, algorithm, pkcs8);
      return install(slot, privateKey, slotKeyInfo(algorithm, spkiOf(privateKey), pinPolicy, 'imported'));
    },
    async sign(slot, input) {
      return new Uint8Array(entryOf(slot).signer.sign(input));
    },
    async deriveSharedSecret(slot, peerPoint) {
      return new Uint8Array(deriveSharedSecret(entryOf(slot).privateKey, peerPoint));
    },
  };
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
      checkDataObjectTag(tag);
      return copyOf(s.objects.get(tag));
    },
    async put(tag, value) {
      checkDataObjectTag(tag);
      checkDataObjectValue(tag, value);
      if (value.length === 0) s.objects.delete(tag);
      else s.objects.set(tag, new Uint8Array(value));
    },
  };
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
  if (guid === undefined) return new Uint8Array(randomBytes(GUID_BYTES));
  if (!(guid instanceof Uint8Array) || guid.length !== GUID_BYTES) {
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
