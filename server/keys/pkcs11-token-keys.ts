/**
 * TokenKeyStore on the PKCS#11 provider's token (pkcs11-provider.ts lends its logged-in session
 * pool, so a signature holds one session for its C_SignInit + C_Sign pair, like a KEK unwrap).
 *
 * Key pairs are found by CKA_CLASS + CKA_LABEL + CKA_ID; the private key's handle is cached per
 * process and looked up again once when the token no longer knows it (another process's session
 * state, a token re-inserted).
 */
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import { CURVES, isEcAlgorithm, RSA_MODULUS_BITS, RSA_PUBLIC_EXPONENT } from '../../apdu/piv/crypto/index.js';
import { KeyProviderError } from './kek-provider.js';
import { TOKEN_KEY_ID_BYTES, type TokenKeyPair, type TokenKeyRef, type TokenKeyStore } from './token-keys.js';

type Handle = Buffer;

/** Runs `fn` with a session of the provider's pool to itself. */
export type WithSession = <T>(fn: (session: Handle) => Promise<T>, operation?: string) => Promise<T>;

/** DER OBJECT IDENTIFIERs of the curves, the CKA_EC_PARAMS value (PKCS#11 v2.40 section 2.3.3). */
const EC_PARAMS: Readonly<Record<'ECCP256' | 'ECCP384', Buffer>> = {
  // 1.2.840.10045.3.1.7 (RFC 5480 section 2.1.1.1)
  ECCP256: Buffer.from('06082a8648ce3d030107', 'hex'),
  // 1.3.132.0.34 (RFC 5480 section 2.1.1.1)
  ECCP384: Buffer.from('06052b81040022', 'hex'),
};

/** Largest signature any supported key gives: an RSA-3072 one. */
const MAX_SIGNATURE_BYTES = RSA_MODULUS_BITS.RSA3072 / 8;

/** The pkcs11js error code of a handle the token no longer knows. */
const STALE_HANDLE_CODES = new Set([pkcs11js.CKR_OBJECT_HANDLE_INVALID, pkcs11js.CKR_KEY_HANDLE_INVALID]);

export class Pkcs11TokenKeys implements TokenKeyStore {
  private readonly handles = new Map<string, Handle>();

  constructor(
    private readonly lib: pkcs11js.PKCS11,
    private readonly withSession: WithSession,
    /** The provider's label prefix: `<prefix>-<name>` labels the pair. */
    private readonly labelPrefix: string,
  ) {}

  async generate(name: string, algorithm: KeyAlgorithm): Promise<TokenKeyPair> {
    const label = `${this.labelPrefix}-${name}`;
    const id = randomBytes(TOKEN_KEY_ID_BYTES);
    const common = [
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_LABEL, value: label },
      { type: pkcs11js.CKA_ID, value: id },
    ];
    const ec = isEcAlgorithm(algorithm);
    const publicTemplate: pkcs11js.Template = [
      ...common,
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PUBLIC_KEY },
      { type: pkcs11js.CKA_PRIVATE, value: false },
      { type: pkcs11js.CKA_VERIFY, value: true },
      { type: pkcs11js.CKA_ENCRYPT, value: false },
      { type: pkcs11js.CKA_WRAP, value: false },
      ...(ec
        ? [{ type: pkcs11js.CKA_EC_PARAMS, value: EC_PARAMS[algorithm] }]
        : [
            { type: pkcs11js.CKA_MODULUS_BITS, value: RSA_MODULUS_BITS[algorithm] },
            { type: pkcs11js.CKA_PUBLIC_EXPONENT, value: exponentBytes() },
          ]),
    ];
    const privateTemplate: pkcs11js.Template = [
      ...common,
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      // The point of the exercise: the token refuses to reveal or export the private key.
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_SIGN, value: true },
      { type: pkcs11js.CKA_DECRYPT, value: false },
      { type: pkcs11js.CKA_UNWRAP, value: false },
      { type: pkcs11js.CKA_DERIVE, value: false },
    ];
    const mechanism = { mechanism: ec ? pkcs11js.CKM_EC_KEY_PAIR_GEN : pkcs11js.CKM_RSA_PKCS_KEY_PAIR_GEN };
    return this.withSession(async (s) => {
      const pair = await this.lib.C_GenerateKeyPairAsync(s, mechanism, publicTemplate, privateTemplate);
      const ref = { label, id };
      this.handles.set(keyOf(ref), pair.privateKey);
      return { ref, publicKey: this.readPublicKey(s, pair.publicKey, algorithm) };
    }, 'key pair generation');
  }

  async sign(ref: TokenKeyRef, algorithm: KeyAlgorithm, input: Uint8Array): Promise<Buffer> {
    const mechanism = { mechanism: isEcAlgorithm(algorithm) ? pkcs11js.CKM_ECDSA : pkcs11js.CKM_RSA_PKCS };
    return this.withSession(async (s) => {
      const signOnce = async (key: Handle) => {
        this.lib.C_SignInit(s, mechanism, key);
        return this.lib.C_SignAsync(s, Buffer.from(input), Buffer.alloc(MAX_SIGNATURE_BYTES));
      };
      try {
        return await signOnce(this.privateKey(s, ref));
      } catch (error) {
        if (!STALE_HANDLE_CODES.has((error as { code?: number }).code ?? -1)) throw error;
        this.handles.delete(keyOf(ref));
        return signOnce(this.privateKey(s, ref));
      }
    }, 'sign');
  }

  async destroy(ref: TokenKeyRef): Promise<void> {
    await this.withSession((s) => {
      for (const cls of [pkcs11js.CKO_PRIVATE_KEY, pkcs11js.CKO_PUBLIC_KEY])
        for (const handle of this.find(s, ref, cls)) this.lib.C_DestroyObject(s, handle);
      this.handles.delete(keyOf(ref));
      return Promise.resolve();
    }, 'key pair removal');
  }

  private privateKey(session: Handle, ref: TokenKeyRef): Handle {
    const cached = this.handles.get(keyOf(ref));
    if (cached) return cached;
    const found = this.find(session, ref, pkcs11js.CKO_PRIVATE_KEY);
    if (found.length !== 1)
      throw new KeyProviderError(
        found.length === 0 ? 'the PKCS#11 token holds no such private key' : 'several private keys match',
        { label: ref.label },
      );
    this.handles.set(keyOf(ref), found[0]!);
    return found[0]!;
  }

  private find(session: Handle, ref: TokenKeyRef, cls: number): Handle[] {
    this.lib.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: cls },
      { type: pkcs11js.CKA_LABEL, value: ref.label },
      { type: pkcs11js.CKA_ID, value: ref.id },
    ]);
    try {
      // Two are enough to tell "exactly one" from "several".
      return this.lib.C_FindObjects(session, 2);
    } finally {
      this.lib.C_FindObjectsFinal(session);
    }
  }

  /** The public key object's value as a node:crypto key (through JWK: no ASN.1 to build). */
  private readPublicKey(session: Handle, handle: Handle, algorithm: KeyAlgorithm): KeyObject {
    if (isEcAlgorithm(algorithm)) {
      const [attr] = this.lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_EC_POINT }]);
      const point = ecPoint(attr?.value as Buffer, CURVES[algorithm].bytes);
      const n = CURVES[algorithm].bytes;
      return createPublicKey({
        key: {
          kty: 'EC',
          crv: CURVES[algorithm].jwkCurve,
          x: point.subarray(1, 1 + n).toString('base64url'),
          y: point.subarray(1 + n).toString('base64url'),
        },
        format: 'jwk',
      });
    }
    const [modulus, exponent] = this.lib.C_GetAttributeValue(session, handle, [
      { type: pkcs11js.CKA_MODULUS },
      { type: pkcs11js.CKA_PUBLIC_EXPONENT },
    ]);
    return createPublicKey({
      key: {
        kty: 'RSA',
        n: (modulus?.value as Buffer).toString('base64url'),
        e: (exponent?.value as Buffer).toString('base64url'),
      },
      format: 'jwk',
    });
  }
}

/**
 * The uncompressed point (04 || x || y) of CKA_EC_POINT. PKCS#11 v2.40 section 2.3.3 wants it
 * DER-wrapped in an OCTET STRING (SoftHSM2 does so); some tokens give it bare: accept both.
 */
function ecPoint(value: Buffer | undefined, coordinateBytes: number): Buffer {
  const size = 1 + 2 * coordinateBytes;
  if (value?.length === size + 2 && value[0] === 0x04 && value[1] === size) return value.subarray(2);
  if (value?.length === size && value[0] === 0x04) return value;
  throw new KeyProviderError('the PKCS#11 token returned no uncompressed EC point', {
    bytes: value?.length ?? 0,
  });
}

function exponentBytes(): Buffer {
  const hex = RSA_PUBLIC_EXPONENT.toString(16);
  return Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex');
}

function keyOf(ref: TokenKeyRef): string {
  return `${ref.label}\0${ref.id.toString('hex')}`;
}
