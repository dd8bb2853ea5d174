/**
 * Sealing a card's secrets (slot private keys as PKCS#8, the management key) for the database.
 *
 * Envelope encryption: each secret gets a fresh 256-bit data key; the secret is encrypted with
 * AES-256-GCM under it, and the data key is wrapped by the provider's current KEK. Both layers
 * authenticate the same binding (tenant, card, slot, key version) as AAD, so a sealed blob or a
 * wrapped key copied to another card, slot or tenant, or paired with another version of the key
 * in the same slot, fails to open instead of yielding a key in the wrong place.
 *
 * Rotating the KEK only rewraps data keys (`rewrapSealed`): the sealed secret itself is never
 * decrypted for it.
 *
 * Blob format (`sealed`): format byte 1 || 12-byte IV || ciphertext || 16-byte tag.
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { SealedRecord } from '../storage/cards.js';
import {
  GCM_IV_BYTES,
  GCM_TAG_BYTES,
  KEY_BYTES,
  SealedKeyInvalidError,
  type KekProvider,
} from './kek-provider.js';

/** Where a sealed secret belongs. */
export interface KeyLocation {
  readonly tenantId: string;
  readonly cardId: string;
  /** PIV key reference: 0x9A..0x9E, 0x82..0x95 for private keys, 0x9B for the management key. */
  readonly slot: number;
}

/** First byte of every sealed blob. */
export const SEALED_FORMAT = 1;

const SEAL_DOMAIN = Buffer.from('cardlink/seal/v1\0', 'latin1');
const DATA_KEY_DOMAIN = Buffer.from('cardlink/data-key/v1\0', 'latin1');

/** The canonical bytes of a binding: length-prefixed ids, 32-bit slot, 64-bit key version. */
export function bindingBytes(location: KeyLocation, keyVersion: number): Buffer {
  if (!Number.isSafeInteger(keyVersion) || keyVersion < 0)
    throw new RangeError('key version must be a safe integer');
  const tenant = Buffer.from(location.tenantId, 'utf8');
  const card = Buffer.from(location.cardId, 'utf8');
  const out = Buffer.alloc(4 + tenant.length + 4 + card.length + 4 + 8);
  let o = out.writeUInt32BE(tenant.length, 0);
  o += tenant.copy(out, o);
  o = out.writeUInt32BE(card.length, o);
  o += card.copy(out, o);
  o = out.writeUInt32BE(location.slot, o);
  out.writeBigUInt64BE(BigInt(keyVersion), o);
  return out;
}

/** Seals `secret` for `location` under key version `keyVersion` (the fenced card's version). */
export async function sealSecret(
  provider: KekProvider,
  secret: Uint8Array,
  location: KeyLocation,
  keyVersion: number,
): Promise<SealedRecord> {
  const binding = bindingBytes(location, keyVersion);
  const dataKey = randomBytes(KEY_BYTES);
  try {
    const iv = randomBytes(GCM_IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', dataKey, iv, { authTagLength: GCM_TAG_BYTES });
    cipher.setAAD(Buffer.concat([SEAL_DOMAIN, binding]));
    const sealed = Buffer.concat([
      Buffer.of(SEALED_FORMAT),
      iv,
      cipher.update(secret),
      cipher.final(),
      cipher.getAuthTag(),
    ]);
    const wrapped = await provider.wrap(dataKey, Buffer.concat([DATA_KEY_DOMAIN, binding]));
    return { sealed, wrappedDataKey: wrapped.wrapped, kekVersion: wrapped.kekVersion, keyVersion };
  } finally {
    dataKey.fill(0);
  }
}

/**
 * Opens a sealed secret read from `location`. Throws `SealedKeyInvalidError` when the blob, its
 * wrapped key or the binding does not match (moved, altered), `KeyProviderError` when its KEK
 * version is retired. Zero the result when done with it.
 */
export async function unsealSecret(
  provider: KekProvider,
  record: SealedRecord,
  location: KeyLocation,
): Promise<Buffer> {
  const binding = bindingBytes(location, record.keyVersion);
  const s = record.sealed;
  if (s.length < 1 + GCM_IV_BYTES + GCM_TAG_BYTES || s[0] !== SEALED_FORMAT) {
    throw new SealedKeyInvalidError('sealed blob has an unknown format', { slot: location.slot });
  }
  const dataKey = await provider.unwrap(
    { kekVersion: record.kekVersion, wrapped: record.wrappedDataKey },
    Buffer.concat([DATA_KEY_DOMAIN, binding]),
  );
  try {
    const decipher = createDecipheriv('aes-256-gcm', dataKey, s.subarray(1, 1 + GCM_IV_BYTES), {
      authTagLength: GCM_TAG_BYTES,
    });
    decipher.setAAD(Buffer.concat([SEAL_DOMAIN, binding]));
    decipher.setAuthTag(s.subarray(s.length - GCM_TAG_BYTES));
    try {
      return Buffer.concat([
        decipher.update(s.subarray(1 + GCM_IV_BYTES, s.length - GCM_TAG_BYTES)),
        decipher.final(),
      ]);
    } catch {
      throw new SealedKeyInvalidError('sealed blob does not authenticate', { slot: location.slot });
    }
  } finally {
    dataKey.fill(0);
  }
}

/**
 * Rewraps the record's data key under the provider's current KEK. The sealed secret is kept
 * byte for byte; only the data key passes through this process's memory.
 */
export async function rewrapSealed(
  provider: KekProvider,
  record: SealedRecord,
  location: KeyLocation,
): Promise<SealedRecord> {
  const aad = Buffer.concat([DATA_KEY_DOMAIN, bindingBytes(location, record.keyVersion)]);
  const dataKey = await provider.unwrap(
    { kekVersion: record.kekVersion, wrapped: record.wrappedDataKey },
    aad,
  );
  try {
    const wrapped = await provider.wrap(dataKey, aad);
    return { ...record, wrappedDataKey: wrapped.wrapped, kekVersion: wrapped.kekVersion };
  } finally {
    dataKey.fill(0);
  }
}
