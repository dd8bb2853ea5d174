import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';
import { ecPkcs8FromScalar, rsaPkcs8FromComponents } from '../../../../apdu/piv/crypto/pkcs8.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';

const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;
const b = (s: string | undefined) => new Uint8Array(Buffer.from(s!, 'base64url'));
const parse = (der: Uint8Array) => createPrivateKey({ key: Buffer.from(der), format: 'der', type: 'pkcs8' });

describe('PKCS#8 from RSA components', () => {
  for (const bits of [2048, 3072]) {
    it(`rebuilds an RSA-${bits} key from p and q`, () => {
      const { privateKey, publicKey } = generateKeyPairSync('rsa', {
        modulusLength: bits,
        publicExponent: 65537,
      });
      const jwk = privateKey.export({ format: 'jwk' });
      const rebuilt = parse(rsaPkcs8FromComponents({ p: b(jwk.p), q: b(jwk.q), e: b(jwk.e) }));
      const r = rebuilt.export({ format: 'jwk' });
      for (const k of ['n', 'e', 'p', 'q', 'dp', 'dq', 'qi'] as const) assert.equal(r[k], jwk[k], k);
      assert.ok(createPublicKey(rebuilt).equals(publicKey));
      const sig = sign('sha256', Buffer.from('m'), rebuilt);
      assert.ok(verify('sha256', Buffer.from('m'), publicKey, sig));
    });
  }

  it('accepts matching CRT values and the default exponent, refuses mismatching ones', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const j = privateKey.export({ format: 'jwk' });
    const full = { p: b(j.p), q: b(j.q), dP: b(j.dp), dQ: b(j.dq), qInv: b(j.qi) };
    parse(rsaPkcs8FromComponents(full));
    const bad = full.dQ.slice();
    bad[bad.length - 1] = bad[bad.length - 1]! ^ 1;
    assert.throws(() => rsaPkcs8FromComponents({ ...full, dQ: bad }), reason('KEY_INVALID'));
  });

  it('refuses non-primes, equal primes, other sizes and exponents', () => {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const j = privateKey.export({ format: 'jwk' });
    const p = b(j.p);
    const q = b(j.q);
    const notPrime = p.slice();
    notPrime[notPrime.length - 1] = notPrime[notPrime.length - 1]! ^ 2; // stays odd, now composite (w.h.p.)
    assert.throws(() => rsaPkcs8FromComponents({ p: notPrime, q }), reason('KEY_INVALID'));
    assert.throws(() => rsaPkcs8FromComponents({ p, q: p }), reason('KEY_INVALID'));
    assert.throws(
      () => rsaPkcs8FromComponents({ p, q, e: Uint8Array.of(3) }),
      reason('UNSUPPORTED_ALGORITHM'),
    );
    const small = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({ format: 'jwk' });
    assert.throws(
      () => rsaPkcs8FromComponents({ p: b(small.p), q: b(small.q) }),
      reason('UNSUPPORTED_ALGORITHM'),
    );
    assert.throws(() => rsaPkcs8FromComponents({ p: new Uint8Array(0), q }), reason('KEY_INVALID'));
  });
});

describe('PKCS#8 from an EC scalar', () => {
  for (const [algorithm, curve] of [
    ['ECCP256', 'prime256v1'],
    ['ECCP384', 'secp384r1'],
  ] as const) {
    it(`rebuilds a ${algorithm} key and its public point`, () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const rebuilt = parse(ecPkcs8FromScalar(algorithm, b(privateKey.export({ format: 'jwk' }).d)));
      assert.ok(createPublicKey(rebuilt).equals(publicKey));
      assert.equal(rebuilt.asymmetricKeyDetails?.namedCurve, curve);
    });
  }

  it('left-pads a short scalar and refuses 0, the order and oversized input', () => {
    const one = parse(ecPkcs8FromScalar('ECCP256', Uint8Array.of(1)));
    const jwk = one.export({ format: 'jwk' });
    // 1 * G is the generator
    assert.equal(
      Buffer.from(jwk.x!, 'base64url').toString('hex'),
      '6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296',
    );
    assert.throws(() => ecPkcs8FromScalar('ECCP256', new Uint8Array(32)), reason('KEY_INVALID'));
    const n = Buffer.from('ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551', 'hex');
    assert.throws(() => ecPkcs8FromScalar('ECCP256', new Uint8Array(n)), reason('KEY_INVALID'));
    assert.throws(() => ecPkcs8FromScalar('ECCP256', new Uint8Array(33).fill(1)), reason('KEY_INVALID'));
    assert.throws(() => ecPkcs8FromScalar('ECCP256', new Uint8Array(0)), reason('KEY_INVALID'));
  });
});
