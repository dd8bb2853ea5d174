/**
 * Verification of the device proof (docs/protocol.md, "Device proof"; transcript in
 * protocol/wire/device-proof.ts): the device's ECDSA P-256 signature over
 * nonce || SHA-256(token) || server URL || protocol version, which shows that the connection holds
 * the private key of a device, bound to this connection, this token and this server.
 *
 * Pure: no registry, no storage. Whether the key belongs to an approved device of the user is the
 * session layer's question (DeviceRegistry in types.ts).
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { CardlinkError } from '../../protocol/errors.js';
import {
  DEVICE_PROOF_SIGNATURE_BYTES,
  deviceProofTranscript,
  type DeviceProofInput,
} from '../../protocol/wire/device-proof.js';
import { MAX_DEVICE_KEY_BYTES } from '../../protocol/wire/limits.js';
import { DeviceProofError } from './errors.js';

/**
 * DER of a P-256 SubjectPublicKeyInfo up to the point (RFC 5480 section 2: id-ecPublicKey,
 * secp256r1, a BIT STRING of 66 bytes) and the point's 0x04 "uncompressed" marker (SEC 1 section 2.3.3).
 */
const P256_SPKI_PREFIX = Buffer.from('3059301306072a8648ce3d020106082a8648ce3d03010703420004', 'hex');
/** Bytes of that SubjectPublicKeyInfo: the prefix and the two 32-byte coordinates. */
const P256_SPKI_BYTES = P256_SPKI_PREFIX.length + 64;

export interface DeviceProofCheck extends DeviceProofInput {
  /** The device key from AUTH (or the session's key for RESUME): DER SubjectPublicKeyInfo. */
  publicKeySpki: Uint8Array;
  /** The signature from AUTH or RESUME: r || s, 64 bytes. */
  signature: Uint8Array;
}

export interface VerifiedDevice {
  /** Base64url SHA-256 of the SPKI: how the registry finds the device. */
  thumbprint: string;
  publicKey: KeyObject;
}

/** Base64url SHA-256 of a DER SubjectPublicKeyInfo (the same thumbprint server/storage keeps). */
export function deviceKeyThumbprint(publicKeySpki: Uint8Array): string {
  return createHash('sha256').update(publicKeySpki).digest('base64url');
}

/**
 * The device key in `spki`, which must be an ECDSA P-256 key in canonical DER (uncompressed point),
 * so that one key has exactly one thumbprint.
 */
export function parseDeviceKey(spki: Uint8Array): KeyObject {
  if (!(spki instanceof Uint8Array) || spki.length === 0 || spki.length > MAX_DEVICE_KEY_BYTES) {
    throw new DeviceProofError('bad_key', 'the device key is not a SubjectPublicKeyInfo');
  }
  let key: KeyObject;
  try {
    key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  } catch (e) {
    throw new DeviceProofError('bad_key', 'the device key is not a SubjectPublicKeyInfo', { cause: e });
  }
  if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new DeviceProofError('bad_key', 'the device key must be ECDSA P-256');
  }
  // A P-256 key has exactly one accepted encoding: the fixed header and an uncompressed point.
  if (
    spki.length !== P256_SPKI_BYTES ||
    !Buffer.from(spki.subarray(0, P256_SPKI_PREFIX.length)).equals(P256_SPKI_PREFIX)
  ) {
    throw new DeviceProofError(
      'bad_key',
      'the device key must be in canonical DER with an uncompressed point',
    );
  }
  return key;
}

/** Verifies the proof; throws DeviceProofError (`ERR_DEVICE_PROOF_INVALID`) with a reason otherwise. */
export function verifyDeviceProof(check: DeviceProofCheck): VerifiedDevice {
  const publicKey = parseDeviceKey(check.publicKeySpki);
  let transcript: Uint8Array;
  try {
    transcript = deviceProofTranscript(check);
  } catch (e) {
    if (e instanceof CardlinkError) throw new DeviceProofError('bad_input', e.message, { cause: e });
    throw e;
  }
  if (!(check.signature instanceof Uint8Array) || check.signature.length !== DEVICE_PROOF_SIGNATURE_BYTES) {
    throw new DeviceProofError(
      'bad_signature',
      `the device signature must be ${DEVICE_PROOF_SIGNATURE_BYTES} bytes (r || s)`,
    );
  }
  const ok = verify('sha256', transcript, { key: publicKey, dsaEncoding: 'ieee-p1363' }, check.signature);
  if (!ok) throw new DeviceProofError('bad_signature', 'the device signature does not verify');
  return { thumbprint: deviceKeyThumbprint(check.publicKeySpki), publicKey };
}
