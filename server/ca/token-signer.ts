/**
 * The issuing CA's signer when its key is inside the PKCS#11 token (`ca init --key-in-hsm`): the
 * X.509 toolkit builds the to-be-signed bytes and hashes them through the same key-store provider
 * a card slot uses (apdu/piv/certificates/card-key-crypto.ts); the private-key operation is one
 * C_Sign in the token (server/keys/token-keys.ts). That provider hands a key store what a PIV card
 * signs; this module turns it into what PKCS#11 signs and back:
 * - RSA: the provider gives the whole EMSA-PKCS1-v1_5 block; the token pads itself
 *   (CKM_RSA_PKCS, which every HSM offers, unlike raw RSA), so it gets the DigestInfo inside.
 * - EC: the token returns r || s (PKCS#11 v2.40 section 2.3.1); the provider wants the DER
 *   ECDSA-Sig-Value (RFC 5480 section 2.2.3).
 */
import type { KeyObject, webcrypto } from 'node:crypto';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import {
  AsnEcSignatureFormatter,
  cardSigningKey,
  type CardSigningKey,
} from '../../apdu/piv/certificates/index.js';
import { CURVES, isEcAlgorithm, keyAlgorithmOf } from '../../apdu/piv/crypto/index.js';
import { KeyProviderError } from '../keys/kek-provider.js';
import type { TokenKeyRef, TokenKeyStore } from '../keys/token-keys.js';

/** Fewest FF bytes of padding in an EMSA-PKCS1-v1_5 block (RFC 8017 section 9.2 step 5: PS >= 8). */
const MIN_PADDING_BYTES = 8;

/** A signer for the toolkit over the token's private key `ref`, whose public key is `publicKey`. */
export function tokenSigningKey(keys: TokenKeyStore, ref: TokenKeyRef, publicKey: KeyObject): CardSigningKey {
  const algorithm = keyAlgorithmOf(publicKey);
  return cardSigningKey(publicKey, async (input) => {
    // A copy, not the Buffer: the toolkit's provider takes `.slice().buffer`, which on a Buffer is
    // its whole backing store (pkcs11js answers with a view into the larger output buffer).
    if (!isEcAlgorithm(algorithm))
      return Uint8Array.from(await keys.sign(ref, algorithm, digestInfoOf(input)));
    return ecdsaDer(algorithm, await keys.sign(ref, algorithm, input));
  });
}

/** The DigestInfo of an EMSA-PKCS1-v1_5 block `00 01 FF..FF 00 || DigestInfo` (RFC 8017 section 9.2). */
export function digestInfoOf(block: Uint8Array): Uint8Array {
  let i = 2;
  while (i < block.length && block[i] === 0xff) i++;
  if (block[0] !== 0x00 || block[1] !== 0x01 || i - 2 < MIN_PADDING_BYTES || block[i] !== 0x00)
    throw new KeyProviderError('not an EMSA-PKCS1-v1_5 block');
  return block.subarray(i + 1);
}

/** r || s from the token as a DER ECDSA-Sig-Value, through the X.509 toolkit's own formatter. */
function ecdsaDer(algorithm: 'ECCP256' | 'ECCP384', raw: Uint8Array): Uint8Array {
  const curve = CURVES[algorithm];
  const der =
    raw.length === 2 * curve.bytes
      ? new AsnEcSignatureFormatter().toAsnSignature(
          { name: 'ECDSA', namedCurve: curve.jwkCurve } as webcrypto.EcKeyAlgorithm,
          raw,
        )
      : null;
  if (!der)
    throw new KeyProviderError('the PKCS#11 token returned no ECDSA signature for this curve', {
      algorithm: algorithm satisfies KeyAlgorithm,
      bytes: raw.length,
    });
  return new Uint8Array(der);
}
