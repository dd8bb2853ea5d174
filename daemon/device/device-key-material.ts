/** The device key as the daemon uses it, whichever store keeps it, and the checks on its bytes. */
import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto';

/** Where a device key is kept. */
export type DeviceKeyStoreKind = 'file' | 'keyring';

export interface DeviceKey {
  readonly privateKey: KeyObject;
  /** DER SubjectPublicKeyInfo, as sent in AUTH. */
  readonly spki: Uint8Array;
  readonly store: DeviceKeyStoreKind;
  /** The file, or the keyring entry ("keyring: <service> / <account>"); never the key. */
  readonly location: string;
}

/**
 * The device key in `bytes` (PKCS#8, PEM or DER), or why they are not one: the daemon's device
 * key is always ECDSA P-256.
 */
export function deviceKeyOf(
  bytes: Buffer,
  format: 'pem' | 'der',
  where: { store: DeviceKeyStoreKind; location: string },
): DeviceKey | string {
  let privateKey: KeyObject;
  try {
    privateKey =
      format === 'pem'
        ? createPrivateKey(bytes)
        : createPrivateKey({ key: bytes, format: 'der', type: 'pkcs8' });
  } catch {
    return 'does not hold a private key';
  }
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1')
    return 'is not a P-256 key';
  const spki = new Uint8Array(createPublicKey(privateKey).export({ type: 'spki', format: 'der' }));
  return { privateKey, spki, ...where };
}
