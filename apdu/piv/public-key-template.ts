import { createPublicKey } from 'node:crypto';
import { concatBytes, encodeTlv } from '../codec/index.js';
import type { KeyAlgorithm } from './card-state.js';
import { GENERATE_TAG, KEY_SIZE_BYTES } from './constants.js';

/**
 * The public key as GENERATE ASYMMETRIC KEY PAIR returns it inside `7F49` (SP 800-73-4 Part 2
 * Table 11): RSA `81` modulus `82` public exponent; EC `86` uncompressed point `04 || X || Y`.
 * Yubico metadata (tag 04) carries the same TLVs.
 */
export function publicKeyTemplateContent(algorithm: KeyAlgorithm, spki: Uint8Array): Uint8Array {
  // Parsing the SPKI (createPublicKey + JWK export) cost about 0.25 ms of a GET METADATA, whose
  // key rarely changes: the encoding is kept per algorithm and SPKI, a copy handed out each time.
  const key = `${algorithm}:${Buffer.from(spki.buffer, spki.byteOffset, spki.byteLength).toString('base64')}`;
  let content = TEMPLATE_CACHE.get(key);
  if (content === undefined) {
    content = encodeContent(algorithm, spki);
    if (TEMPLATE_CACHE.size >= TEMPLATE_CACHE_ENTRIES) {
      TEMPLATE_CACHE.delete(TEMPLATE_CACHE.keys().next().value!);
    }
    TEMPLATE_CACHE.set(key, content);
  }
  return content.slice();
}

/** Bounds the cache (oldest entry out first): a server holds many cards' keys. */
const TEMPLATE_CACHE_ENTRIES = 1024;
const TEMPLATE_CACHE = new Map<string, Uint8Array>();

function encodeContent(algorithm: KeyAlgorithm, spki: Uint8Array): Uint8Array {
  const jwk = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }).export({
    format: 'jwk',
  });
  if (algorithm === 'RSA2048' || algorithm === 'RSA3072') {
    if (jwk.kty !== 'RSA' || !jwk.n || !jwk.e) throw new Error('SPKI is not an RSA key');
    return concatBytes([
      encodeTlv(GENERATE_TAG.RSA_MODULUS, fromB64u(jwk.n)),
      encodeTlv(GENERATE_TAG.RSA_EXPONENT, fromB64u(jwk.e)),
    ]);
  }
  if (jwk.kty !== 'EC' || !jwk.x || !jwk.y) throw new Error('SPKI is not an EC key');
  const size = KEY_SIZE_BYTES[algorithm];
  return encodeTlv(
    GENERATE_TAG.EC_POINT,
    concatBytes([Uint8Array.of(0x04), leftPad(fromB64u(jwk.x), size), leftPad(fromB64u(jwk.y), size)]),
  );
}

/** `7F49 len content`. */
export function publicKeyTemplate(algorithm: KeyAlgorithm, spki: Uint8Array): Uint8Array {
  return encodeTlv(GENERATE_TAG.PUBLIC_KEY_TEMPLATE, publicKeyTemplateContent(algorithm, spki));
}

function fromB64u(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64url'));
}

function leftPad(bytes: Uint8Array, length: number): Uint8Array {
  if (bytes.length >= length) return bytes;
  const out = new Uint8Array(length);
  out.set(bytes, length - bytes.length);
  return out;
}
