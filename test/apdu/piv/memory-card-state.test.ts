import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  constants,
  createECDH,
  createPublicKey,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
} from 'node:crypto';
import fc from 'fast-check';
import { KEY_SLOTS } from '../../../apdu/piv/constants.js';
import { CardStateError } from '../../../apdu/piv/crypto/errors.js';
import {
  createMemoryCardState,
  memoryStateFingerprint,
  type MemoryCardStateOptions,
} from '../../../apdu/piv/memory-card-state.js';
import type { PivCardState } from '../../../apdu/piv/card-state.js';

const ascii = (s: string) => new TextEncoder().encode(s);
const PIN = ascii('246810');
const PUK = ascii('13579111');
const MGMT = Uint8Array.from(Buffer.from('0f1e2d3c4b5a69788796a5b4c3d2e1f00123456789abcdef', 'hex'));
const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;

function newState(extra: Partial<MemoryCardStateOptions> = {}): PivCardState {
  return createMemoryCardState({
    pin: PIN,
    puk: PUK,
    managementKey: { algorithm: '3DES', key: MGMT },
    ...extra,
  });
}

describe('memory card state: creation', () => {
  it('requires well-formed PIN, PUK and management key', () => {
    const base = { pin: PIN, puk: PUK, managementKey: { algorithm: '3DES' as const, key: MGMT } };
    assert.throws(
      () => createMemoryCardState({ ...base, pin: ascii('12345') }),
      reason('REFERENCE_DATA_LENGTH'),
    );
    assert.throws(
      () => createMemoryCardState({ ...base, pin: ascii('123456789') }),
      reason('REFERENCE_DATA_LENGTH'),
    );
    assert.throws(
      () => createMemoryCardState({ ...base, puk: ascii('12345\xff\xff\xff') }),
      reason('REFERENCE_DATA_LENGTH'),
    );
    assert.throws(
      () => createMemoryCardState({ ...base, pin: undefined as never }),
      reason('REFERENCE_DATA_LENGTH'),
    );
    assert.throws(
      () => createMemoryCardState({ ...base, managementKey: undefined as never }),
      reason('KEY_INVALID'),
    );
    assert.throws(
      () => createMemoryCardState({ ...base, managementKey: { algorithm: 'AES128', key: MGMT } }),
      reason('KEY_INVALID'),
    );
    assert.throws(() => createMemoryCardState({ ...base, pinRetries: 0 }), reason('INPUT_RANGE'));
    assert.throws(() => createMemoryCardState({ ...base, guid: new Uint8Array(15) }), reason('INPUT_LENGTH'));
    assert.throws(() => createMemoryCardState({ ...base, serial: 2 ** 32 }), reason('INPUT_RANGE'));
  });

  it('keeps identity and defaults to 3 tries', async () => {
    const guid = randomBytes(16);
    const s = newState({ serial: 123456, guid });
    assert.equal(s.identity.serial, 123456);
    assert.deepEqual(s.identity.guid, new Uint8Array(guid));
    guid[0] = guid[0]! ^ 1; // the caller's buffer is not the state's
    assert.notDeepEqual(s.identity.guid, new Uint8Array(guid));
    assert.deepEqual(await s.references.status('pin'), { remaining: 3, limit: 3 });
    assert.deepEqual(await s.references.status('puk'), { remaining: 3, limit: 3 });
    assert.equal(newState().identity.guid.length, 16);
  });
});

describe('memory card state: PIN and PUK', () => {
  it('verifies, counts down on a wrong value and restores on success', async () => {
    const s = newState();
    assert.deepEqual(await s.references.verify('pin', ascii('000000')), { ok: false, remaining: 2 });
    assert.deepEqual(await s.references.verify('pin', ascii('000000')), { ok: false, remaining: 1 });
    assert.deepEqual(await s.references.verify('pin', PIN), { ok: true });
    assert.deepEqual(await s.references.status('pin'), { remaining: 3, limit: 3 });
  });

  it('accepts the PIN with its 0xFF padding', async () => {
    const s = newState();
    assert.deepEqual(await s.references.verify('pin', Uint8Array.from([...PIN, 0xff, 0xff])), { ok: true });
  });

  it('once blocked, compares nothing: even the right PIN fails', async () => {
    const s = newState();
    for (let i = 0; i < 3; i++) await s.references.verify('pin', ascii('999999'));
    assert.deepEqual(await s.references.verify('pin', PIN), { ok: false, remaining: 0 });
    assert.deepEqual(await s.references.status('pin'), { remaining: 0, limit: 3 });
  });

  it('50 concurrent wrong PINs consume exactly the available tries', async () => {
    const s = newState({ pinRetries: 50 });
    const outcomes = await Promise.all(
      Array.from({ length: 50 }, () => s.references.verify('pin', ascii('000000'))),
    );
    assert.deepEqual(await s.references.status('pin'), { remaining: 0, limit: 50 });
    const remaining = outcomes.map((o) => (o.ok ? -1 : o.remaining)).sort((a, b) => a - b);
    assert.deepEqual(
      remaining,
      Array.from({ length: 50 }, (_, i) => i),
    );
    const s3 = newState();
    await Promise.all(Array.from({ length: 50 }, () => s3.references.verify('pin', ascii('000000'))));
    assert.deepEqual(await s3.references.status('pin'), { remaining: 0, limit: 3 });
  });

  it('changes the PIN and the PUK after verifying the current value', async () => {
    const s = newState();
    const next = ascii('11223344');
    assert.deepEqual(await s.references.change('pin', ascii('000000'), next), { ok: false, remaining: 2 });
    assert.deepEqual(await s.references.change('pin', PIN, next), { ok: true });
    assert.deepEqual(await s.references.verify('pin', PIN), { ok: false, remaining: 2 });
    assert.deepEqual(await s.references.verify('pin', next), { ok: true });
    assert.deepEqual(await s.references.change('puk', PUK, ascii('87654321')), { ok: true });
    assert.deepEqual(await s.references.verify('puk', ascii('87654321')), { ok: true });
  });

  it('refuses a malformed new PIN without consuming a try or changing anything', async () => {
    const s = newState();
    const before = memoryStateFingerprint(s);
    await assert.rejects(s.references.change('pin', PIN, ascii('123')), reason('REFERENCE_DATA_LENGTH'));
    await assert.rejects(
      s.references.change('pin', ascii('000000'), ascii('123456789')),
      reason('REFERENCE_DATA_LENGTH'),
    );
    await assert.rejects(s.references.unblockPin(PUK, ascii('12')), reason('REFERENCE_DATA_LENGTH'));
    await assert.rejects(s.references.verify('pin', new Uint8Array(9)), reason('REFERENCE_DATA_LENGTH'));
    assert.equal(memoryStateFingerprint(s), before);
  });

  it('unblocks the PIN with the PUK', async () => {
    const s = newState();
    for (let i = 0; i < 3; i++) await s.references.verify('pin', ascii('999999'));
    const newPin = ascii('555555');
    assert.deepEqual(await s.references.unblockPin(ascii('00000000'), newPin), { ok: false, remaining: 2 });
    assert.deepEqual(await s.references.status('pin'), { remaining: 0, limit: 3 });
    assert.deepEqual(await s.references.unblockPin(PUK, newPin), { ok: true });
    assert.deepEqual(await s.references.status('pin'), { remaining: 3, limit: 3 });
    assert.deepEqual(await s.references.status('puk'), { remaining: 3, limit: 3 });
    assert.deepEqual(await s.references.verify('pin', newPin), { ok: true });
    for (let i = 0; i < 3; i++) await s.references.verify('puk', ascii('00000000'));
    assert.deepEqual(await s.references.unblockPin(PUK, newPin), { ok: false, remaining: 0 });
  });
});

describe('memory card state: keys', () => {
  it('generates, signs and derives in slots', async () => {
    const s = newState();
    assert.equal(await s.keys.info(0x9a), undefined);
    const rsa = await s.keys.generate(0x9a, 'RSA2048', 'once');
    assert.equal(rsa.algorithm, 'RSA2048');
    assert.equal(rsa.origin, 'generated');
    const block = randomBytes(256);
    block[0] = 0;
    const sig = await s.keys.sign(0x9a, block);
    const pub = createPublicKey({ key: Buffer.from(rsa.publicKeySpki), format: 'der', type: 'spki' });
    assert.deepEqual(
      new Uint8Array(publicEncrypt({ key: pub, padding: constants.RSA_NO_PADDING }, sig)),
      new Uint8Array(block),
    );

    const ec = await s.keys.generate(0x9d, 'ECCP256', 'always');
    const peer = createECDH('prime256v1');
    const peerPoint = peer.generateKeys();
    const jwk = createPublicKey({ key: Buffer.from(ec.publicKeySpki), format: 'der', type: 'spki' }).export({
      format: 'jwk',
    });
    const ourPoint = Buffer.concat([
      Buffer.from([4]),
      Buffer.from(jwk.x!, 'base64url'),
      Buffer.from(jwk.y!, 'base64url'),
    ]);
    assert.deepEqual(
      await s.keys.deriveSharedSecret(0x9d, peerPoint),
      new Uint8Array(peer.computeSecret(ourPoint)),
    );
    assert.deepEqual((await s.keys.info(0x9d))?.pinPolicy, 'always');
  });

  it('imports PKCS#8 keys and refuses another algorithm', async () => {
    const s = newState();
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const der = new Uint8Array(privateKey.export({ type: 'pkcs8', format: 'der' }));
    await assert.rejects(s.keys.importKey(0x9c, 'ECCP256', der, 'always'), reason('KEY_TYPE_MISMATCH'));
    await assert.rejects(
      s.keys.importKey(0x9c, 'ECCP384', Uint8Array.of(1, 2, 3), 'always'),
      reason('KEY_INVALID'),
    );
    const info = await s.keys.importKey(0x9c, 'ECCP384', der, 'always');
    assert.equal(info.origin, 'imported');
    assert.ok(
      createPublicKey({ key: Buffer.from(info.publicKeySpki), format: 'der', type: 'spki' }).equals(
        createPublicKey(privateKey),
      ),
    );
  });

  it('refuses unknown slots, empty slots and unknown PIN policies', async () => {
    const s = newState();
    assert.equal(KEY_SLOTS.length, 24);
    await assert.rejects(s.keys.generate(0x9b, 'ECCP256', 'never'), reason('SLOT_INVALID'));
    await assert.rejects(s.keys.generate(0x96, 'ECCP256', 'never'), reason('SLOT_INVALID'));
    await assert.rejects(s.keys.info(0x81), reason('SLOT_INVALID'));
    await assert.rejects(s.keys.generate(0x82, 'ECCP256', 'sometimes' as never), reason('INPUT_RANGE'));
    await assert.rejects(s.keys.sign(0x9e, new Uint8Array(32)), reason('SLOT_EMPTY'));
    await assert.rejects(s.keys.deriveSharedSecret(0x95, new Uint8Array(65)), reason('SLOT_EMPTY'));
    await assert.rejects(s.keys.generate(0x9a, 'DSA' as never, 'never'), reason('UNSUPPORTED_ALGORITHM'));
  });

  it('hands out copies of public keys', async () => {
    const s = newState();
    const info = await s.keys.generate(0x9e, 'ECCP256', 'never');
    const before = memoryStateFingerprint(s);
    info.publicKeySpki.fill(0);
    (await s.keys.info(0x9e))!.publicKeySpki.fill(0);
    assert.equal(memoryStateFingerprint(s), before);
    assert.notEqual((await s.keys.info(0x9e))!.publicKeySpki[0], 0);
  });
});

describe('memory card state: management key and objects', () => {
  it('encrypts and decrypts with the management key and replaces it', async () => {
    const s = newState();
    assert.equal(await s.managementKey.algorithm(), '3DES');
    const challenge = randomBytes(8);
    const c = await s.managementKey.encryptBlock(challenge);
    assert.deepEqual(await s.managementKey.decryptBlock(c), new Uint8Array(challenge));
    await assert.rejects(s.managementKey.encryptBlock(new Uint8Array(7)), reason('INPUT_LENGTH'));
    await assert.rejects(s.managementKey.replace('AES256', new Uint8Array(16)), reason('KEY_INVALID'));
    assert.equal(await s.managementKey.algorithm(), '3DES');
    const aes = randomBytes(32);
    await s.managementKey.replace('AES256', aes);
    aes.fill(0); // the store keeps its own copy
    assert.equal(await s.managementKey.algorithm(), 'AES256');
    const block = randomBytes(16);
    assert.deepEqual(
      await s.managementKey.decryptBlock(await s.managementKey.encryptBlock(block)),
      new Uint8Array(block),
    );
  });

  it('stores copies of objects and deletes on empty', async () => {
    const s = newState();
    const value = Uint8Array.of(1, 2, 3);
    await s.objects.put(0x5fc102, value);
    value[0] = 9;
    const got = (await s.objects.get(0x5fc102))!;
    assert.deepEqual(got, Uint8Array.of(1, 2, 3));
    got[0] = 9;
    assert.deepEqual(await s.objects.get(0x5fc102), Uint8Array.of(1, 2, 3));
    const buffer = Buffer.from([4, 5, 6]); // Buffer#slice is a view: the store must really copy
    await s.objects.put(0x5fc103, buffer);
    buffer[0] = 9;
    assert.deepEqual(await s.objects.get(0x5fc103), Uint8Array.of(4, 5, 6));
    await s.objects.put(0x5fc102, new Uint8Array(0));
    assert.equal(await s.objects.get(0x5fc102), undefined);
    await assert.rejects(s.objects.put(0, Uint8Array.of(1)), reason('OBJECT_INVALID'));
    await assert.rejects(s.objects.put(0x1000000, Uint8Array.of(1)), reason('OBJECT_INVALID'));
    await assert.rejects(s.objects.put(0x7e, new Uint8Array(16 * 1024 + 1)), reason('OBJECT_INVALID'));
  });
});

describe('memory card state: fingerprint', () => {
  it('is deterministic and changes with every kind of persistent state', async () => {
    const s = newState();
    const initial = memoryStateFingerprint(s);
    assert.equal(memoryStateFingerprint(s), initial);
    assert.notEqual(memoryStateFingerprint(newState()), initial); // other salts, serial, GUID
    await s.references.verify('pin', ascii('000000'));
    assert.notEqual(memoryStateFingerprint(s), initial);
    await s.references.verify('pin', PIN); // counter restored: back to the same state
    assert.equal(memoryStateFingerprint(s), initial);

    const seen = new Set([initial]);
    const step = async (what: string, f: () => Promise<unknown>) => {
      await f();
      const fp = memoryStateFingerprint(s);
      assert.ok(!seen.has(fp), `fingerprint did not change: ${what}`);
      seen.add(fp);
    };
    await step('puk counter', () => s.references.verify('puk', ascii('00000000')));
    await step('pin change', () => s.references.change('pin', PIN, PIN)); // same PIN, new salt
    await step('key', () => s.keys.generate(0x9a, 'ECCP256', 'once'));
    await step('key policy', () => s.keys.generate(0x9a, 'ECCP256', 'always'));
    await step('object', () => s.objects.put(0x5fc102, Uint8Array.of(1)));
    await step('object value', () => s.objects.put(0x5fc102, Uint8Array.of(2)));
    await step('management key', () => s.managementKey.replace('AES128', new Uint8Array(16).fill(3)));
    await step('management key bytes', () => s.managementKey.replace('AES128', new Uint8Array(16).fill(4)));
    await step('object delete', () => s.objects.put(0x5fc102, new Uint8Array(0)));
  });

  it('refuses a state it did not create', () => {
    const s = newState();
    assert.throws(() => memoryStateFingerprint({ ...s }), reason('INPUT_RANGE'));
  });

  it('failed commands change nothing', async () => {
    const s = newState({ pinRetries: 1, pukRetries: 1 });
    await s.keys.generate(0x9a, 'RSA2048', 'once');
    await s.keys.generate(0x9e, 'ECCP256', 'never');
    await s.objects.put(0x5fc102, Uint8Array.of(1, 2, 3));
    await s.references.verify('pin', ascii('000000')); // PIN and PUK blocked now:
    await s.references.verify('puk', ascii('00000000')); // no try left to consume
    const ecKey = new Uint8Array(
      generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({
        type: 'pkcs8',
        format: 'der',
      }),
    );
    const failing: ((b: Uint8Array) => Promise<unknown>)[] = [
      (b) => s.references.verify('pin', b.subarray(0, 8)), // blocked: nothing compared or counted
      () => s.references.verify('pin', PIN),
      (b) => s.references.change('pin', PIN, b.subarray(0, 5)),
      (b) => s.references.change('puk', b, PUK),
      (b) => s.references.unblockPin(PUK, b.length > 8 ? b : new Uint8Array(9)),
      (b) => s.keys.sign(0x9a, b.length === 256 ? new Uint8Array(256).fill(0xff) : b),
      (b) => s.keys.sign(0x9e, b.length >= 1 && b.length <= 64 ? new Uint8Array(65) : b),
      (b) => s.keys.sign(0x9c, b),
      (b) => s.keys.deriveSharedSecret(0x9e, b),
      (b) => s.keys.deriveSharedSecret(0x9a, b),
      (b) => s.keys.importKey(0x9a, 'RSA2048', b, 'once'),
      () => s.keys.importKey(0x9a, 'RSA2048', ecKey, 'once'),
      () => s.keys.generate(0x9b, 'RSA2048', 'once'),
      (b) => s.managementKey.replace('3DES', b.length === 24 ? new Uint8Array(24) : b),
      (b) => s.managementKey.encryptBlock(b.length % 8 === 0 ? new Uint8Array(9) : b),
      (b) => s.objects.put(0, b),
    ];
    const before = memoryStateFingerprint(s);
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: failing.length - 1 }),
        fc.uint8Array({ maxLength: 300 }),
        async (i, bytes) => {
          await failing[i]!(bytes).then(
            (r) => {
              // a few calls answer instead of throwing: they must report failure
              if (r && typeof r === 'object' && 'ok' in r) assert.equal((r as { ok: boolean }).ok, false);
              else assert.fail(`command ${i} succeeded`);
            },
            (e: unknown) => assert.ok(e instanceof CardStateError, `command ${i}: ${String(e)}`),
          );
          assert.equal(memoryStateFingerprint(s), before, `command ${i} changed the state`);
        },
      ),
      { numRuns: 300 },
    );
  });
});
