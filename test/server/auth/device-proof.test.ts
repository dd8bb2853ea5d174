import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ECDH, createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import {
  createTokenValidator,
  DeviceProofError,
  deviceKeyThumbprint,
  parseDeviceKey,
  verifyDeviceProof,
  type DeviceProofRejectReason,
} from '../../../server/auth/index.js';
import {
  deviceProofTranscript,
  PROTOCOL_VERSION,
  secretHash,
  signDeviceProof,
  type DeviceProofInput,
} from '../../../protocol/wire/index.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';

const SERVER_URL = 'wss://cards.example.test/v1/session';

function refused(reason: DeviceProofRejectReason) {
  return (e: unknown) => {
    assert.ok(e instanceof DeviceProofError, `expected DeviceProofError(${reason}), got ${String(e)}`);
    assert.equal(e.code, 'ERR_DEVICE_PROOF_INVALID');
    assert.equal(e.reason, reason);
    return true;
  };
}

function newDevice(): { privateKey: KeyObject; spki: Uint8Array } {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { privateKey, spki: new Uint8Array(publicKey.export({ type: 'spki', format: 'der' })) };
}

describe('device proof', () => {
  let idp: TestIdp;
  before(async () => {
    idp = await startTestIdp();
  });
  after(async () => {
    await idp.close();
  });

  const device = newDevice();
  const nonce = new Uint8Array(randomBytes(32));
  const token = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2ln';
  const input = (over: Partial<DeviceProofInput> = {}): DeviceProofInput => ({
    purpose: 'auth',
    nonce,
    secretHash: secretHash(token),
    serverUrl: SERVER_URL,
    protocolVersion: PROTOCOL_VERSION,
    ...over,
  });

  it('accepts a proof over the validated token of a real login and names the key by its thumbprint', async () => {
    const { accessToken } = await idp.login();
    const validated = await createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: 't' }],
      audience: idp.resource,
    }).validate(accessToken);
    // The daemon signs over SHA-256 of the token it sends; the server uses the validator's hash.
    const signature = signDeviceProof(device.privateKey, input({ secretHash: secretHash(accessToken) }));
    const verified = verifyDeviceProof({
      ...input({ secretHash: validated.tokenHash }),
      publicKeySpki: device.spki,
      signature,
    });
    assert.equal(verified.thumbprint, createHash('sha256').update(device.spki).digest('base64url'));
    assert.equal(verified.thumbprint, deviceKeyThumbprint(device.spki));
  });

  it('refuses a proof by another key, over another nonce, another token, URL, version or purpose', () => {
    const signature = signDeviceProof(device.privateKey, input());
    verifyDeviceProof({ ...input(), publicKeySpki: device.spki, signature });
    const other = newDevice();
    const cases: [string, Parameters<typeof verifyDeviceProof>[0]][] = [
      ['wrong key', { ...input(), publicKeySpki: other.spki, signature }],
      [
        'wrong nonce',
        { ...input({ nonce: new Uint8Array(randomBytes(32)) }), publicKeySpki: device.spki, signature },
      ],
      [
        'different token',
        { ...input({ secretHash: secretHash(`${token}x`) }), publicKeySpki: device.spki, signature },
      ],
      [
        'relayed to another server',
        { ...input({ serverUrl: 'wss://other.example/v1/session' }), publicKeySpki: device.spki, signature },
      ],
      ['other version', { ...input({ protocolVersion: 2 }), publicKeySpki: device.spki, signature }],
      ['resume instead of auth', { ...input({ purpose: 'resume' }), publicKeySpki: device.spki, signature }],
    ];
    for (const [name, check] of cases)
      assert.throws(() => verifyDeviceProof(check), refused('bad_signature'), name);
  });

  it('refuses a DER-encoded signature and a flipped bit', () => {
    const der = sign('sha256', deviceProofTranscript(input()), device.privateKey);
    assert.throws(
      () => verifyDeviceProof({ ...input(), publicKeySpki: device.spki, signature: new Uint8Array(der) }),
      refused('bad_signature'),
    );
    const flipped = signDeviceProof(device.privateKey, input());
    flipped[10]! ^= 1;
    assert.throws(
      () => verifyDeviceProof({ ...input(), publicKeySpki: device.spki, signature: flipped }),
      refused('bad_signature'),
    );
  });

  it('accepts only canonical P-256 SubjectPublicKeyInfo', () => {
    assert.equal(parseDeviceKey(device.spki).asymmetricKeyDetails?.namedCurve, 'prime256v1');
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).publicKey.export({
      type: 'spki',
      format: 'der',
    });
    const ed = generateKeyPairSync('ed25519').publicKey.export({ type: 'spki', format: 'der' });
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({
      type: 'spki',
      format: 'der',
    });
    // The same P-256 key with a compressed point: another encoding, so another thumbprint; refused.
    const point = Buffer.from(device.spki.subarray(device.spki.length - 65));
    const compressed = ECDH.convertKey(point, 'prime256v1', undefined, undefined, 'compressed') as Buffer;
    const compressedSpki = Buffer.concat([
      Buffer.from('3039301306072a8648ce3d020106082a8648ce3d030107032200', 'hex'),
      compressed,
    ]);
    for (const [name, spki] of [
      ['P-384', p384],
      ['Ed25519', ed],
      ['RSA', rsa],
      ['compressed point', compressedSpki],
      ['garbage', Buffer.from('not a key')],
      ['empty', Buffer.alloc(0)],
      ['trailing byte', Buffer.concat([device.spki, Buffer.from([0])])],
    ] as const) {
      assert.throws(() => parseDeviceKey(new Uint8Array(spki)), refused('bad_key'), name);
    }
  });

  it("refuses unusable inputs as the caller's mistake", () => {
    const signature = signDeviceProof(device.privateKey, input());
    assert.throws(
      () =>
        verifyDeviceProof({ ...input({ nonce: new Uint8Array(16) }), publicKeySpki: device.spki, signature }),
      refused('bad_input'),
    );
    assert.throws(
      () =>
        verifyDeviceProof({ ...input({ serverUrl: 'https://x/' }), publicKeySpki: device.spki, signature }),
      refused('bad_input'),
    );
  });
});
