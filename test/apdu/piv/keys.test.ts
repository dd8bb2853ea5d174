import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  createECDH,
  createHash,
  generateKeyPairSync,
  randomBytes,
  verify,
  type JsonWebKey,
  type KeyObject,
} from 'node:crypto';
import { concatBytes, encodeTlv, findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import type { KeyAlgorithm } from '../../../apdu/piv/card-state.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { decodeKeyHistory } from '../../../apdu/piv/objects/key-history.js';
import { expectSw, hex, newTestCard, toHex, type TestCard } from './support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block, publicKeyFromTemplate, SIZES } from './support/keys.js';

const MESSAGE = new TextEncoder().encode('cardlink signs this');

async function adminCard(): Promise<TestCard> {
  const t = await newTestCard();
  expectSw(await t.host.mutualAuth(t.managementKey.algorithm, t.managementKey.key), '9000');
  return t;
}

async function generate(
  t: TestCard,
  slot: number,
  algorithm: KeyAlgorithm,
  extra?: Uint8Array,
): Promise<KeyObject> {
  const r = await t.host.generate(slot, ALGORITHM_IDS[algorithm], extra);
  expectSw(r, '9000', `generate ${algorithm}`);
  return publicKeyFromTemplate(algorithm, r.data);
}

/** Signs MESSAGE on the card the way middleware does and checks it with node:crypto. */
async function signAndCheck(
  t: TestCard,
  slot: number,
  algorithm: KeyAlgorithm,
  publicKey: KeyObject,
  hash = 'sha256',
) {
  const rsa = algorithm.startsWith('RSA');
  const input = rsa
    ? pkcs1v15Sha256Block(MESSAGE, SIZES[algorithm])
    : createHash(hash).update(MESSAGE).digest();
  const r = await t.host.privateKeyOp(ALGORITHM_IDS[algorithm], slot, 0x81, input);
  expectSw(r, '9000', `sign ${algorithm}`);
  assert.ok(verify(rsa ? 'sha256' : hash, MESSAGE, publicKey, r.data), `${algorithm} signature verifies`);
}

describe('key generation and private-key operations', () => {
  for (const algorithm of ['RSA2048', 'RSA3072', 'ECCP256', 'ECCP384'] as const) {
    it(`generates ${algorithm} in 9A and signs (verified with node:crypto)`, async () => {
      const t = await adminCard();
      const publicKey = await generate(t, 0x9a, algorithm);
      expectSw(await t.host.verifyPin(), '9000');
      await signAndCheck(t, 0x9a, algorithm, publicKey, algorithm === 'ECCP384' ? 'sha384' : 'sha256');
      if (algorithm === 'ECCP384') await signAndCheck(t, 0x9a, algorithm, publicKey, 'sha256'); // shorter hash
      // The metadata reports the same public key, generated, PIN once.
      const meta = await t.host.send({ ins: 0xf7, p1: 0, p2: 0x9a });
      expectSw(meta, '9000');
      const items = parseTlvList(meta.data);
      assert.equal(findTlv(items, 0x01)!.value[0], ALGORITHM_IDS[algorithm]);
      assert.equal(toHex(findTlv(items, 0x02)!.value), '0201');
      assert.equal(toHex(findTlv(items, 0x03)!.value), '01');
      const pub = publicKeyFromTemplate(algorithm, findTlv(items, 0x04)!.value);
      assert.ok(pub.equals(publicKey));
    });
  }

  it('RSA sign arrives chained and its answer is fetched with GET RESPONSE', async () => {
    const t = await adminCard();
    const publicKey = await generate(t, 0x9a, 'RSA2048');
    await t.host.verifyPin();
    const block = pkcs1v15Sha256Block(MESSAGE, 256);
    const body = encodeTlv(0x7c, [encodeTlv(0x82, new Uint8Array(0)), encodeTlv(0x81, block)]);
    const first = await t.host.raw(concatBytes([hex('1087079AFF'), body.subarray(0, 255)]));
    expectSw(first, '9000');
    const rest = body.subarray(255);
    const last = await t.host.raw(
      concatBytes([hex('0087079A'), Uint8Array.of(rest.length), rest, Uint8Array.of(0)]),
    );
    expectSw(last, '6108');
    const whole = await t.host.collect(last);
    const sig = findTlv(parseTlvList(findTlv(parseTlvList(whole.data), 0x7c)!.value), 0x82)!.value;
    assert.ok(verify('sha256', MESSAGE, publicKey, sig));
  });

  for (const algorithm of ['ECCP256', 'ECCP384'] as const) {
    it(`ECDH with ${algorithm} matches node:crypto`, async () => {
      const t = await adminCard();
      const r = await t.host.generate(0x9d, ALGORITHM_IDS[algorithm]);
      const cardPoint = findTlv(parseTlvList(r.data), 0x86)!.value;
      const peer = createECDH(algorithm === 'ECCP256' ? 'prime256v1' : 'secp384r1');
      peer.generateKeys();
      await t.host.verifyPin();
      const shared = await t.host.privateKeyOp(
        ALGORITHM_IDS[algorithm],
        0x9d,
        0x85,
        new Uint8Array(peer.getPublicKey()),
      );
      expectSw(shared, '9000');
      assert.equal(toHex(shared.data), toHex(peer.computeSecret(cardPoint)));
      // A point not on the curve, or a compressed one, is refused.
      const bad = new Uint8Array(peer.getPublicKey());
      bad[bad.length - 1]! ^= 1;
      expectSw(await t.host.privateKeyOp(ALGORITHM_IDS[algorithm], 0x9d, 0x85, bad), '6A80');
      expectSw(
        await t.host.privateKeyOp(
          ALGORITHM_IDS[algorithm],
          0x9d,
          0x85,
          new Uint8Array(peer.getPublicKey(null, 'compressed')),
        ),
        '6A80',
      );
    });
  }

  it('9C is PIN-always: each signature needs its own VERIFY', async () => {
    const t = await adminCard();
    const publicKey = await generate(t, 0x9c, 'ECCP256');
    const digest = createHash('sha256').update(MESSAGE).digest();
    expectSw(await t.host.privateKeyOp(0x11, 0x9c, 0x81, digest), '6982');
    expectSw(await t.host.verifyPin(), '9000');
    await signAndCheck(t, 0x9c, 'ECCP256', publicKey);
    expectSw(await t.host.privateKeyOp(0x11, 0x9c, 0x81, digest), '6982', 'verification spent');
    expectSw(await t.host.raw('00200080'), '9000', 'the PIN itself is still verified');
    expectSw(await t.host.verifyPin(), '9000');
    await signAndCheck(t, 0x9c, 'ECCP256', publicKey);
  });

  it('9A and 9D are PIN-once; 9E needs no PIN', async () => {
    const t = await adminCard();
    const k9a = await generate(t, 0x9a, 'ECCP256');
    const k9e = await generate(t, 0x9e, 'ECCP256');
    const digest = createHash('sha256').update(MESSAGE).digest();
    await signAndCheck(t, 0x9e, 'ECCP256', k9e);
    expectSw(await t.host.privateKeyOp(0x11, 0x9a, 0x81, digest), '6982');
    await t.host.verifyPin();
    await signAndCheck(t, 0x9a, 'ECCP256', k9a);
    await signAndCheck(t, 0x9a, 'ECCP256', k9a);
  });

  it('an explicit PIN policy (Yubico AA) overrides the slot default', async () => {
    const t = await adminCard();
    const never = await generate(t, 0x9a, 'ECCP256', hex('AA0101'));
    await signAndCheck(t, 0x9a, 'ECCP256', never);
    const always = await generate(t, 0x9e, 'ECCP256', hex('AA0103'));
    const digest = createHash('sha256').update(MESSAGE).digest();
    expectSw(await t.host.privateKeyOp(0x11, 0x9e, 0x81, digest), '6982');
    await t.host.verifyPin();
    await signAndCheck(t, 0x9e, 'ECCP256', always);
    expectSw(await t.host.privateKeyOp(0x11, 0x9e, 0x81, digest), '6982');
  });

  it('refuses wrong algorithms, empty slots and malformed templates', async () => {
    const t = await adminCard();
    await generate(t, 0x9a, 'ECCP256');
    await t.host.verifyPin();
    const digest = createHash('sha256').update(MESSAGE).digest();
    const before = memoryStateFingerprint(t.state);
    expectSw(await t.host.privateKeyOp(0x14, 0x9a, 0x81, digest), '6A80', 'P-384 id for a P-256 key');
    expectSw(await t.host.privateKeyOp(0x07, 0x9a, 0x81, digest), '6A80', 'RSA id for an EC key');
    expectSw(await t.host.privateKeyOp(0x03, 0x9a, 0x81, digest), '6A80', 'not a key algorithm');
    expectSw(await t.host.privateKeyOp(0x11, 0x9d, 0x81, digest), '6A88', 'empty slot');
    expectSw(await t.host.privateKeyOp(0x11, 0x80, 0x81, digest), '6A86', 'not a key slot');
    expectSw(await t.host.privateKeyOp(0x11, 0x9a, 0x81, new Uint8Array(65)), '6A80', 'input too long');
    expectSw(await t.host.raw('0087119A047C028100'), '6A80', 'challenge request to a private key');
    expectSw(await t.host.raw('0087119A067C04820081 00'.replace(' ', '')), '6A80', 'empty input');
    expectSw(await t.host.raw('0087119A027C00'), '6A80', 'empty template');
    expectSw(await t.host.raw('0087119A03820100'), '6A80', 'no 7C');
    assert.equal(memoryStateFingerprint(t.state), before);
    await generate(t, 0x9d, 'RSA2048');
    expectSw(
      await t.host.privateKeyOp(0x07, 0x9d, 0x81, new Uint8Array(255).fill(1)),
      '6A80',
      'RSA input not modulus-sized',
    );
    expectSw(
      await t.host.privateKeyOp(0x07, 0x9d, 0x81, new Uint8Array(256).fill(0xff)),
      '6A80',
      'RSA input above the modulus',
    );
    expectSw(await t.host.privateKeyOp(0x07, 0x9d, 0x85, new Uint8Array(65)), '6A80', 'ECDH with an RSA key');
  });

  it('GENERATE needs the management key and a valid template', async () => {
    const t = await newTestCard();
    const before = memoryStateFingerprint(t.state);
    expectSw(await t.host.raw('004700 9A 05 AC03800111'.replace(/ /g, '')), '6982');
    expectSw(await t.host.mutualAuth(t.managementKey.algorithm, t.managementKey.key), '9000');
    expectSw(await t.host.raw('0047009B05AC03800111'), '6A86', 'not a key slot');
    expectSw(await t.host.raw('0047019A05AC03800111'), '6A86', 'P1');
    expectSw(await t.host.raw('0047009A05AC03800127'), '6A80', 'unsupported algorithm');
    expectSw(await t.host.raw('0047009A08AC06800111AB0102'), '6A80', 'touch always');
    expectSw(await t.host.raw('0047009A08AC06800111AA0104'), '6A80', 'PIN policy match-once');
    expectSw(await t.host.raw('0047009A03800111'), '6A80', 'no AC');
    expectSw(await t.host.raw('0047009A02AC00'), '6A80', 'no algorithm');
    assert.equal(memoryStateFingerprint(t.state), before);
    expectSw(await t.host.raw('0047009A08AC06800111AB0101'), '9000', 'touch never is fine');
  });
});

describe('IMPORT KEY (Yubico FE)', () => {
  const rsaBody = (jwk: JsonWebKey, tweak?: (parts: Uint8Array[]) => void) => {
    const parts = ['p', 'q', 'dp', 'dq', 'qi'].map(
      (k) => new Uint8Array(Buffer.from(jwk[k as 'p'] as string, 'base64url')),
    );
    tweak?.(parts);
    return concatBytes(parts.map((v, i) => encodeTlv(i + 1, v)));
  };

  for (const bits of [2048, 3072]) {
    it(`imports RSA-${bits} (chained) and signs with it`, async () => {
      const t = await adminCard();
      const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
      const body = rsaBody(privateKey.export({ format: 'jwk' }));
      const id = bits === 2048 ? 0x07 : 0x05;
      expectSw(await t.host.send({ ins: 0xfe, p1: id, p2: 0x9d, data: body }), '9000');
      await t.host.verifyPin();
      await signAndCheck(t, 0x9d, bits === 2048 ? 'RSA2048' : 'RSA3072', publicKey);
      const meta = parseTlvList((await t.host.send({ ins: 0xf7, p1: 0, p2: 0x9d })).data);
      assert.equal(toHex(findTlv(meta, 0x03)!.value), '02', 'origin imported');
    });
  }

  for (const [algorithm, curve] of [
    ['ECCP256', 'P-256'],
    ['ECCP384', 'P-384'],
  ] as const) {
    it(`imports ${algorithm} with a PIN policy and signs with it`, async () => {
      const t = await adminCard();
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve });
      const d = new Uint8Array(Buffer.from(privateKey.export({ format: 'jwk' }).d!, 'base64url'));
      const body = concatBytes([encodeTlv(0x06, d), hex('AA0101')]);
      expectSw(await t.host.send({ ins: 0xfe, p1: ALGORITHM_IDS[algorithm], p2: 0x9e, data: body }), '9000');
      await signAndCheck(t, 0x9e, algorithm, publicKey, algorithm === 'ECCP256' ? 'sha256' : 'sha384');
    });
  }

  it('refuses imports without the management key, with bad components or the wrong size', async () => {
    const t = await newTestCard();
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const jwk = privateKey.export({ format: 'jwk' });
    const good = rsaBody(jwk);
    const before = memoryStateFingerprint(t.state);
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x07, p2: 0x9a, data: good }), '6982');
    expectSw(await t.host.mutualAuth(t.managementKey.algorithm, t.managementKey.key), '9000');
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x05, p2: 0x9a, data: good }), '6A80', 'RSA-2048 key for 05');
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x27, p2: 0x9a, data: good }), '6A86', 'unknown algorithm');
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x07, p2: 0x9b, data: good }), '6A86', 'not a key slot');
    const badDp = rsaBody(jwk, (parts) => (parts[2]![parts[2]!.length - 1]! ^= 2));
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x07, p2: 0x9a, data: badDp }), '6A80', 'dP does not match');
    expectSw(
      await t.host.send({ ins: 0xfe, p1: 0x07, p2: 0x9a, data: good.subarray(0, 200) }),
      '6A80',
      'truncated',
    );
    expectSw(await t.host.send({ ins: 0xfe, p1: 0x11, p2: 0x9a, data: good }), '6A80', 'RSA parts for EC');
    expectSw(
      await t.host.send({ ins: 0xfe, p1: 0x11, p2: 0x9a, data: hex('0620' + 'FF'.repeat(32)) }),
      '6A80',
      'scalar >= n',
    );
    expectSw(
      await t.host.send({ ins: 0xfe, p1: 0x11, p2: 0x9a, data: hex('0620' + '00'.repeat(32)) }),
      '6A80',
      'zero scalar',
    );
    assert.equal(memoryStateFingerprint(t.state), before);
  });
});

describe('Key History object', () => {
  it('counts retired slots holding a key and a certificate', async () => {
    const t = await adminCard();
    const history = async () => {
      const r = await t.host.getData(OBJECT_TAG.KEY_HISTORY);
      expectSw(r, '9000');
      return decodeKeyHistory(parseTlvList(r.data)[0]!.value);
    };
    assert.deepEqual(await history(), { onCard: 0, offCard: 0 });
    await generate(t, 0x82, 'ECCP256');
    assert.deepEqual(
      await history(),
      { onCard: 0, offCard: 0 },
      'a key without a certificate is not counted',
    );
    expectSw(await t.host.putData(OBJECT_TAG.RETIRED_CERT_FIRST, new Uint8Array(randomBytes(300))), '9000');
    assert.deepEqual(await history(), { onCard: 1, offCard: 0 });
    await generate(t, 0x84, 'ECCP256');
    expectSw(
      await t.host.putData(OBJECT_TAG.RETIRED_CERT_FIRST + 2, new Uint8Array(randomBytes(300))),
      '9000',
    );
    assert.deepEqual(await history(), { onCard: 3, offCard: 0 }, 'with a gap, up to the highest retired key');
    expectSw(await t.host.putData(OBJECT_TAG.RETIRED_CERT_FIRST + 2, new Uint8Array(0)), '9000');
    assert.deepEqual(await history(), { onCard: 1, offCard: 0 }, 'deleting the certificate');
  });
});
