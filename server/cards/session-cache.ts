import type { KeyObject } from 'node:crypto';
import type { KeyAlgorithm, ManagementKeyAlgorithm, SlotKeyInfo } from '../../apdu/piv/index.js';
import type { PreparedSigner } from '../../apdu/piv/crypto/index.js';

/**
 * What one session keeps in memory about its card: private keys unsealed on first use (parsed
 * once into prepared signers: parsing a PKCS#8 key costs ~350 µs, a sign with a prepared
 * RSA-2048 key ~250 µs), the unsealed management key, and slot metadata.
 *
 * Coherent because only the session holding the card's epoch writes its keys: its own writes
 * invalidate the entry they change, and anyone else's write (a claim, an administrator's change,
 * a deletion) bumps the epoch, so the session's next fenced write fails and the session disposes
 * of this cache. Every private-key operation is fenced (its audit entry is a fenced write), so a
 * cached key is never used for a card the session lost. KEK rotation does not touch it: only
 * the wrapped data keys change, not the keys.
 *
 * `generation` guards against a slow read re-populating an entry that a write invalidated
 * meanwhile: an entry is only stored if no invalidation happened since its read began.
 */

export interface CachedPrivateKey {
  readonly algorithm: KeyAlgorithm;
  readonly privateKey: KeyObject;
  readonly signer: PreparedSigner;
}

export interface CachedManagementKey {
  readonly algorithm: ManagementKeyAlgorithm;
  /** Absent until the first cipher operation unseals it. */
  readonly key?: Buffer;
}

export class SessionCache {
  private gen = 0;
  private readonly infos = new Map<number, SlotKeyInfo | null>();
  private readonly keys = new Map<number, CachedPrivateKey>();
  private management: CachedManagementKey | undefined;

  get generation(): number {
    return this.gen;
  }

  /** Slot metadata: a value, `null` for a known empty slot, undefined when not cached. */
  info(slot: number): SlotKeyInfo | null | undefined {
    return this.infos.get(slot);
  }

  putInfo(slot: number, info: SlotKeyInfo | null, generation: number): void {
    if (generation === this.gen) this.infos.set(slot, info);
  }

  privateKey(slot: number): CachedPrivateKey | undefined {
    return this.keys.get(slot);
  }

  putPrivateKey(slot: number, key: CachedPrivateKey, generation: number): void {
    if (generation === this.gen) this.keys.set(slot, key);
  }

  managementKey(): CachedManagementKey | undefined {
    return this.management;
  }

  /**
   * Caches the management key and returns the entry to use. A key already cached in this
   * generation wins (the new copy is zeroed): an entry handed out is never zeroed under its user
   * except by an invalidation.
   */
  putManagementKey(value: CachedManagementKey, generation: number): CachedManagementKey {
    if (generation !== this.gen) return value;
    if (this.management?.key) {
      if (value.key && value.key !== this.management.key) value.key.fill(0);
      return this.management;
    }
    this.management = value;
    return value;
  }

  /** Forgets the slot's key and metadata (before writing the slot). */
  invalidateSlot(slot: number): void {
    this.gen++;
    this.infos.delete(slot);
    this.keys.delete(slot);
  }

  /** Forgets the management key (before replacing it). */
  invalidateManagementKey(): void {
    this.gen++;
    this.management?.key?.fill(0);
    this.management = undefined;
  }

  /** Forgets everything; the management key bytes are zeroed (KeyObjects cannot be). */
  clear(): void {
    this.gen++;
    this.infos.clear();
    this.keys.clear();
    this.management?.key?.fill(0);
    this.management = undefined;
  }
}
