/**
 * ECDSA over a digest with OpenSSL, through the small addon in `native/` (built by `npm run build`).
 * node:crypto only signs messages it hashes itself, and a PIV card signs the host's digest; the
 * addon calls OpenSSL's EVP_PKEY_sign on the digest (constant-time arithmetic, hedged nonce), about
 * 50 times faster than the pure-JavaScript fallback.
 *
 * Where the addon is not built (a platform without a C compiler), `loadNativeEcdsa()` returns
 * undefined and callers fall back to @noble/curves; `ecdsaBackend()` says which one runs so the
 * server can report it.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** A parsed EC private key inside OpenSSL; JavaScript holds only this handle. */
export type NativeEcKey = { readonly __nativeEcKey: unique symbol };

export interface NativeEcdsa {
  /** Parses a PKCS#8 DER EC private key once (the caller wipes its copy of the DER afterwards). */
  loadKey(pkcs8Der: Buffer): NativeEcKey;
  /** ECDSA over `digest` (1..64 bytes, taken as the hash value), DER ECDSA-Sig-Value. */
  signDigest(key: NativeEcKey, digest: Buffer): Buffer;
}

/** Where the addon is built, relative to the repository root. */
const ADDON_PATH = path.join('apdu', 'piv', 'crypto', 'native', 'build', 'cardlink-ecdsa.node');

let loaded: { readonly addon: NativeEcdsa | undefined } | undefined;

/** The addon, or undefined when it is not built here. Loaded once. */
export function loadNativeEcdsa(): NativeEcdsa | undefined {
  loaded ??= { addon: tryLoad() };
  return loaded.addon;
}

/** Which implementation signs EC digests in this process. */
export function ecdsaBackend(): 'openssl' | 'noble' {
  return loadNativeEcdsa() ? 'openssl' : 'noble';
}

function tryLoad(): NativeEcdsa | undefined {
  const file = findAddon(path.dirname(fileURLToPath(import.meta.url)));
  if (file === undefined) return undefined;
  const addon = createRequire(import.meta.url)(file) as NativeEcdsa;
  return typeof addon.loadKey === 'function' && typeof addon.signDigest === 'function' ? addon : undefined;
}

/** Walks up from this module (in the sources or in dist/) to the directory holding the addon. */
function findAddon(from: string): string | undefined {
  for (let dir = from, i = 0; i < 6; i++, dir = path.dirname(dir)) {
    const candidate = path.join(dir, ADDON_PATH);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}
