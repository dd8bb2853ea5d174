import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  constants,
  createECDH,
  createHash,
  createPublicKey,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
  verify,
  type KeyObject,
} from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { p256 } from '@noble/curves/nist.js';
import {
  deriveSharedSecret,
  ecdsaInputToCurveSize,
  ecdsaSignDigest,
  MAX_ECDSA_INPUT_BYTES,
  prepareSigner,
} from '../../../../apdu/piv/crypto/private-key-operations.js';
import { ecdsaBackend, loadNativeEcdsa } from '../../../../apdu/piv/crypto/native-ecdsa.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';

const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;
const sha = (alg: string, data: Uint8Array) => new Uint8Array(createHash(alg).update(data).digest());

function modulusOf(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: 'jwk' }).n!, 'base64url');
}

describe('RSA raw private operation', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', {
    modulusLength: 2048,
    publicExponent: 65537,
  });
  const signer = prepareSigner(privateKey);
  const n = modulusOf(privateKey);

  it('is the inverse of the raw public operation', () => {
    for (let i = 0; i < 5; i++) {
      const m = randomBytes(256);
      m[0] = m[0]! & 0x7f; // below the modulus (whose top bit is set)
      const s = signer.sign(m);
      assert.equal(s.length, 256);
      const back = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, s);
      assert.deepEqual(new Uint8Array(back), new Uint8Array(m));
    }
  });

  it('keeps the leading zeros of a short result (output is always modulus-sized)', () => {
    const m = new Uint8Array(256);
    m[255] = 1; // 1^d = 1
    const s = signer.sign(m);
    assert.equal(s.length, 256);
    assert.deepEqual(s, m);
  });

  it('produces PKCS#1 v1.5 signatures node verifies when the host pads', () => {
    const message = Buffer.from('hello card');
    const digestInfo = Buffer.concat([
      Buffer.from('3031300d060960864801650304020105000420', 'hex'),
      createHash('sha256').update(message).digest(),
    ]);
    const em = Buffer.concat([
      Buffer.from([0, 1]),
      Buffer.alloc(256 - 3 - digestInfo.length, 0xff),
      Buffer.from([0]),
      digestInfo,
    ]);
    assert.ok(verify('sha256', message, publicKey, signer.sign(em)));
  });

  it('refuses input of another length, or not below the modulus', () => {
    assert.throws(() => signer.sign(new Uint8Array(255)), reason('INPUT_LENGTH'));
    assert.throws(() => signer.sign(new Uint8Array(257)), reason('INPUT_LENGTH'));
    assert.throws(() => signer.sign(new Uint8Array(n)), reason('INPUT_RANGE'));
    assert.throws(() => signer.sign(new Uint8Array(256).fill(0xff)), reason('INPUT_RANGE'));
    const justBelow = new Uint8Array(n);
    justBelow[255] = justBelow[255]! - 1;
    assert.equal(signer.sign(justBelow).length, 256);
  });

  it('refuses a public key and ECDH', () => {
    assert.throws(() => prepareSigner(publicKey), reason('KEY_TYPE_MISMATCH'));
    assert.throws(() => deriveSharedSecret(privateKey, new Uint8Array(65)), reason('KEY_TYPE_MISMATCH'));
  });
});

describe('ECDSA over a digest', () => {
  const p256Key = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const p384Key = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
  const s256 = prepareSigner(p256Key.privateKey);
  const s384 = prepareSigner(p384Key.privateKey);
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cardlink-ecdsa-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('signs SHA-256 / SHA-384 digests that node verifies over the message', () => {
    const m = randomBytes(100);
    assert.ok(verify('sha256', m, p256Key.publicKey, s256.sign(sha('sha256', m))));
    assert.ok(verify('sha384', m, p384Key.publicKey, s384.sign(sha('sha384', m))));
  });

  it('pads short digests and truncates long ones as OpenSSL does', () => {
    const m = randomBytes(50);
    // P-256 with SHA-1 (20 bytes, left-padded) and SHA-512 (64 bytes, leftmost 32 kept)
    assert.ok(verify('sha1', m, p256Key.publicKey, s256.sign(sha('sha1', m))));
    assert.ok(verify('sha512', m, p256Key.publicKey, s256.sign(sha('sha512', m))));
    // P-384 with SHA-256 (short)
    assert.ok(verify('sha256', m, p384Key.publicKey, s384.sign(sha('sha256', m))));
  });

  it('short and long raw digests verify with openssl pkeyutl', () => {
    const pem = p256Key.publicKey.export({ type: 'spki', format: 'pem' });
    writeFileSync(join(dir, 'pub.pem'), pem);
    for (const digest of [randomBytes(20), randomBytes(64), randomBytes(32)]) {
      writeFileSync(join(dir, 'digest.bin'), digest);
      writeFileSync(join(dir, 'sig.der'), s256.sign(digest));
      const out = execFileSync(
        'openssl',
        [
          'pkeyutl',
          '-verify',
          '-pubin',
          '-inkey',
          join(dir, 'pub.pem'),
          '-in',
          join(dir, 'digest.bin'),
          '-sigfile',
          join(dir, 'sig.der'),
        ],
        { encoding: 'utf8' },
      );
      assert.match(out, /Signature Verified Successfully/, `digest of ${digest.length} bytes`);
    }
  });

  it('signs with OpenSSL through the addon on this platform, a fresh nonce each time, DER encoded', () => {
    // The addon is built by `npm run build` on Linux; losing it would silently cost 50x in speed.
    assert.equal(ecdsaBackend(), 'openssl');
    const d = randomBytes(32);
    const a = s256.sign(d);
    assert.notDeepEqual(s256.sign(d), a, 'OpenSSL draws a new (hedged) nonce per signature');
    assert.equal(a[0], 0x30);
    assert.equal(a[1], a.length - 2);
  });

  it('falls back to a deterministic (RFC 6979) signature where the addon is missing', () => {
    const jwk = p256Key.privateKey.export({ format: 'jwk' });
    const scalar = new Uint8Array(Buffer.from(jwk.d!, 'base64url'));
    const d = randomBytes(32);
    const a = ecdsaSignDigest('ECCP256', scalar, d);
    assert.deepEqual(ecdsaSignDigest('ECCP256', scalar, d), a);
    const pub = Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x!, 'base64url'),
      Buffer.from(jwk.y!, 'base64url'),
    ]);
    assert.ok(p256.verify(a, d, new Uint8Array(pub), { prehash: false, lowS: false, format: 'der' }));
  });

  it('refuses a key the addon cannot parse with a typed error', () => {
    const native = loadNativeEcdsa()!;
    assert.throws(() => native.signDigest({} as never, Buffer.alloc(32)), { code: 'ERR_NATIVE_ARGUMENT' });
    assert.throws(() => native.loadKey(Buffer.from([0x30, 0x03, 0x02, 0x01, 0x00])), {
      code: 'ERR_NATIVE_KEY',
    });
    assert.throws(
      () =>
        native.signDigest(
          native.loadKey(p256Key.privateKey.export({ format: 'der', type: 'pkcs8' })),
          Buffer.alloc(65),
        ),
      { code: 'ERR_NATIVE_ARGUMENT' },
    );
  });

  it('any 1..64-byte input gives a signature valid over its SEC 1 conversion', () => {
    const jwk = p256Key.publicKey.export({ format: 'jwk' });
    const pub = new Uint8Array(
      Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]),
    );
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 1, maxLength: MAX_ECDSA_INPUT_BYTES }), (input) => {
        const sig = s256.sign(input);
        const z = ecdsaInputToCurveSize(input, 32);
        return p256.verify(sig, z, pub, { prehash: false, lowS: false, format: 'der' });
      }),
      { numRuns: 40 },
    );
  });

  it('converts input per SEC 1', () => {
    assert.deepEqual(ecdsaInputToCurveSize(Uint8Array.of(1, 2), 4), Uint8Array.of(0, 0, 1, 2));
    assert.deepEqual(ecdsaInputToCurveSize(Uint8Array.of(1, 2, 3, 4, 5), 4), Uint8Array.of(1, 2, 3, 4));
    assert.throws(() => s256.sign(new Uint8Array(0)), reason('INPUT_LENGTH'));
    assert.throws(() => s256.sign(new Uint8Array(MAX_ECDSA_INPUT_BYTES + 1)), reason('INPUT_LENGTH'));
  });
});

describe('ECDH', () => {
  for (const [curve, size] of [
    ['prime256v1', 32],
    ['secp384r1', 48],
  ] as const) {
    it(`matches node's ECDH on ${curve}`, () => {
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const peer = createECDH(curve);
      const peerPoint = new Uint8Array(peer.generateKeys());
      const ours = deriveSharedSecret(privateKey, peerPoint);
      const jwk = createPublicKey(privateKey).export({ format: 'jwk' });
      const ourPoint = Buffer.concat([
        Buffer.from([4]),
        Buffer.from(jwk.x!, 'base64url'),
        Buffer.from(jwk.y!, 'base64url'),
      ]);
      assert.equal(ours.length, size);
      assert.deepEqual(ours, new Uint8Array(peer.computeSecret(ourPoint)));
    });
  }

  it('refuses points of the wrong length, compressed or off the curve', () => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const peer = createECDH('prime256v1');
    const good = new Uint8Array(peer.generateKeys());
    assert.throws(() => deriveSharedSecret(privateKey, good.subarray(0, 64)), reason('INPUT_LENGTH'));
    assert.throws(() => deriveSharedSecret(privateKey, new Uint8Array(97)), reason('INPUT_LENGTH'));
    assert.throws(
      () => deriveSharedSecret(privateKey, new Uint8Array(peer.getPublicKey(null, 'compressed'))),
      reason('INPUT_LENGTH'),
    );
    const notUncompressed = good.slice();
    notUncompressed[0] = 0x06;
    assert.throws(() => deriveSharedSecret(privateKey, notUncompressed), reason('EC_POINT_INVALID'));
    const offCurve = good.slice();
    offCurve[64] = offCurve[64]! ^ 1;
    assert.throws(() => deriveSharedSecret(privateKey, offCurve), reason('EC_POINT_INVALID'));
    const zeros = new Uint8Array(65);
    zeros[0] = 4;
    assert.throws(() => deriveSharedSecret(privateKey, zeros), reason('EC_POINT_INVALID'));
    // a P-384 point for a P-256 key
    const p384 = createECDH('secp384r1');
    assert.throws(
      () => deriveSharedSecret(privateKey, new Uint8Array(p384.generateKeys())),
      reason('INPUT_LENGTH'),
    );
  });
});
