import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { concatBytes, encodeCommandApdu, encodeTlv } from '../../../apdu/codec/index.js';
import type { KeyAlgorithm, PivCardState } from '../../../apdu/piv/card-state.js';
import { KEY_SLOTS } from '../../../apdu/piv/constants.js';
import { createMemoryCardState, memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { DATA_OBJECTS, OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { installDefaultObjects } from '../../../apdu/piv/objects/default-objects.js';
import { PivCard } from '../../../apdu/piv/piv-card.js';
import { padReferenceValue } from '../../../apdu/piv/reference-data.js';
import { Host, randomManagementKey, swHex, TEST_PIN, TEST_PUK } from './support/host.js';
import { pkcs1v15Sha256Block } from './support/keys.js';

/**
 * Property: whatever bytes arrive — random, or valid commands with bytes flipped, truncated,
 * Lc/Le/CLA/P1/P2 changed, chain bits set — the card answers, never rejects, always with at least
 * a status word from the ISO set (never 6F00, which would be an unexpected exception), and an
 * error status word leaves the persistent state as it was (snapshot through the stores, plus the
 * memory store's full fingerprint). The one allowed change: a wrong PIN/PUK (63Cx, or 6983 for
 * the last try) costs exactly one try of one reference.
 */

/**
 * Number of APDUs; override with CARDLINK_PIV_FUZZ_CASES (CI default 100000, about 25 s).
 * CARDLINK_PIV_FUZZ_VERBOSE=1 prints the mix of status words seen.
 */
const FUZZ_CASES = Number(process.env.CARDLINK_PIV_FUZZ_CASES ?? 100_000);
/** Commands between resets (each session starts with PIN and/or management key, or nothing). */
const SESSION_LENGTH = 400;
/** Commands before the fuzzer moves to a fresh card (PIN and PUK get blocked along the way). */
const CARD_LIFETIME = 5_000;
/** fast-check seed; override with CARDLINK_PIV_FUZZ_SEED to replay a failure. */
const SEED = process.env.CARDLINK_PIV_FUZZ_SEED ? Number(process.env.CARDLINK_PIV_FUZZ_SEED) : undefined;

const ALLOWED_SW = /^(9000|61..|63C.|6700|688[1-4]|698[2-5]|6A8[0-8]|6D00|6E00)$/;

interface Keys {
  readonly pkcs8: Record<KeyAlgorithm, Uint8Array>;
  readonly ec256: KeyObject;
}

function makeKeys(): Keys {
  const der = (k: KeyObject) => new Uint8Array(k.export({ type: 'pkcs8', format: 'der' }));
  const ec256 = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
  return {
    ec256,
    pkcs8: {
      RSA2048: der(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey),
      RSA3072: der(generateKeyPairSync('rsa', { modulusLength: 3072 }).privateKey),
      ECCP256: der(ec256),
      ECCP384: der(generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey),
    },
  };
}

interface FuzzCard {
  readonly base: PivCardState;
  readonly card: PivCard;
  readonly host: Host;
  readonly mgmt: { algorithm: 'AES128'; key: Uint8Array };
}

/**
 * A card with keys in 9A (RSA-2048), 9C (P-256), 9D (P-384), 9E (P-256), 82 (RSA-3072). Its key
 * store generates RSA keys by importing pre-made ones (RSA generation would dominate the run).
 */
async function freshCard(keys: Keys): Promise<FuzzCard> {
  const mgmt = { algorithm: 'AES128' as const, key: randomManagementKey('AES128') };
  const base = createMemoryCardState({
    pin: TEST_PIN,
    puk: TEST_PUK,
    managementKey: mgmt,
    pinRetries: 5,
    pukRetries: 5,
  });
  await installDefaultObjects(base);
  const slots: [number, KeyAlgorithm][] = [
    [0x9a, 'RSA2048'],
    [0x9c, 'ECCP256'],
    [0x9d, 'ECCP384'],
    [0x9e, 'ECCP256'],
    [0x82, 'RSA3072'],
  ];
  for (const [slot, algorithm] of slots)
    await base.keys.importKey(slot, algorithm, keys.pkcs8[algorithm], 'once');
  await base.objects.put(OBJECT_TAG.CERT_PIV_AUTHENTICATION, new Uint8Array(700).fill(0x30));
  const state: PivCardState = {
    ...base,
    keys: {
      ...base.keys,
      generate: (slot, algorithm, pinPolicy) =>
        algorithm.startsWith('RSA')
          ? base.keys.importKey(slot, algorithm, keys.pkcs8[algorithm], pinPolicy)
          : base.keys.generate(slot, algorithm, pinPolicy),
    },
  };
  const card = new PivCard(state);
  return { base, card, host: new Host(card), mgmt };
}

const apdu = (cla: number, ins: number, p1: number, p2: number, data?: Uint8Array, ne?: number) =>
  encodeCommandApdu({ cla, ins, p1, p2, ...(data ? { data } : {}), ...(ne !== undefined ? { ne } : {}) });
const h = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const tagList = (tag: number) =>
  encodeTlv(0x5c, h(tag.toString(16).padStart(tag > 0xffff ? 6 : tag > 0xff ? 4 : 2, '0')));
const dyn = (...items: Uint8Array[]) => encodeTlv(0x7c, items);
const empty = new Uint8Array(0);

/** Valid (or nearly valid) commands of every kind, for mutation. */
function seeds(keys: Keys): Uint8Array[] {
  const pin = padReferenceValue(TEST_PIN);
  const puk = padReferenceValue(TEST_PUK);
  const digest = createHash('sha256').update('fuzz').digest();
  const rsaBlock = pkcs1v15Sha256Block(new TextEncoder().encode('fuzz'), 256);
  const rsaSign = dyn(encodeTlv(0x82, empty), encodeTlv(0x81, rsaBlock));
  const peer = h('04' + '11'.repeat(64));
  const ecScalar = new Uint8Array(Buffer.from(keys.ec256.export({ format: 'jwk' }).d!, 'base64url'));
  const out: Uint8Array[] = [
    apdu(0, 0xa4, 0x04, 0x00, h('A0000003080000100001 00'.replace(' ', '')), 256),
    apdu(0, 0xa4, 0x04, 0x00, h('A000000308')),
    apdu(0, 0xa4, 0x04, 0x00, h('A0000001160100')),
    apdu(0, 0xc0, 0x00, 0x00, undefined, 256),
    apdu(0, 0x20, 0x00, 0x80),
    apdu(0, 0x20, 0x00, 0x81),
    apdu(0, 0x20, 0xff, 0x80),
    apdu(0, 0x20, 0x00, 0x80, pin),
    apdu(0, 0x20, 0x00, 0x81, puk),
    apdu(0, 0x24, 0x00, 0x80, concatBytes([pin, pin])),
    apdu(0, 0x24, 0x00, 0x81, concatBytes([puk, puk])),
    apdu(0, 0x2c, 0x00, 0x80, concatBytes([puk, pin])),
    apdu(0, 0x87, 0x11, 0x9c, dyn(encodeTlv(0x82, empty), encodeTlv(0x81, digest)), 256),
    apdu(0, 0x87, 0x14, 0x9d, dyn(encodeTlv(0x82, empty), encodeTlv(0x81, digest)), 256),
    apdu(0, 0x87, 0x11, 0x9e, dyn(encodeTlv(0x82, empty), encodeTlv(0x85, peer)), 256),
    apdu(0, 0x87, 0x07, 0x9a, rsaSign, 65536),
    apdu(0x10, 0x87, 0x07, 0x9a, rsaSign.subarray(0, 255)),
    apdu(0, 0x87, 0x07, 0x9a, rsaSign.subarray(255), 256),
    apdu(0, 0x87, 0x08, 0x9b, h('7C028000'), 256),
    apdu(0, 0x87, 0x08, 0x9b, h('7C028100'), 256),
    apdu(0, 0x87, 0x00, 0x9b, h('7C028100'), 256),
    apdu(0, 0x87, 0x08, 0x9b, dyn(encodeTlv(0x82, new Uint8Array(16))), 256),
    apdu(
      0,
      0x87,
      0x08,
      0x9b,
      dyn(encodeTlv(0x80, new Uint8Array(16)), encodeTlv(0x81, new Uint8Array(16))),
      256,
    ),
    apdu(0, 0x47, 0x00, 0x9a, h('AC03800111'), 256),
    apdu(0, 0x47, 0x00, 0x83, h('AC06800114AA0103'), 256),
    apdu(
      0,
      0xdb,
      0x3f,
      0xff,
      concatBytes([tagList(OBJECT_TAG.PRINTED_INFORMATION), encodeTlv(0x53, h('8801AA'))]),
    ),
    apdu(
      0,
      0xdb,
      0x3f,
      0xff,
      concatBytes([tagList(OBJECT_TAG.RETIRED_CERT_FIRST), encodeTlv(0x53, h('7001AA'))]),
    ),
    apdu(0, 0xdb, 0x3f, 0xff, encodeTlv(0x7e, h('4F0BA0000003080000100001005F2F024000'))),
    apdu(0x10, 0xdb, 0x3f, 0xff, tagList(OBJECT_TAG.CHUID)),
    apdu(0, 0xdb, 0x3f, 0xff, encodeTlv(0x53, new Uint8Array(40))),
    apdu(0, 0xfe, 0x11, 0x9e, concatBytes([encodeTlv(0x06, ecScalar), h('AA0102')])),
    apdu(0, 0xff, 0xff, 0xff, concatBytes([h('089B10'), new Uint8Array(16)])),
    apdu(0, 0xf7, 0x00, 0x9a, undefined, 256),
    apdu(0, 0xf7, 0x00, 0x80, undefined, 256),
    apdu(0, 0xf7, 0x00, 0x9b, undefined, 256),
    apdu(0, 0xf8, 0x00, 0x00, undefined, 256),
    apdu(0, 0xfd, 0x00, 0x00, undefined, 256),
    apdu(0, 0xca, 0xdf, 0x30, undefined, 5),
  ];
  for (const spec of DATA_OBJECTS) {
    out.push(apdu(0, 0xcb, 0x3f, 0xff, tagList(spec.tag), 8));
    out.push(apdu(0, 0xcb, 0x3f, 0xff, tagList(spec.tag), 256));
  }
  return out;
}

function commandArbitrary(seedList: Uint8Array[]): fc.Arbitrary<Uint8Array> {
  const seed = fc.constantFrom(...seedList);
  const copy = (b: Uint8Array) => b.slice();
  const mutated = fc.oneof(
    fc.tuple(seed, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([s, i, x]) => {
      const b = copy(s);
      b[i % b.length]! ^= x;
      return b;
    }),
    fc.tuple(seed, fc.nat()).map(([s, n]) => s.slice(0, n % (s.length + 1))),
    fc.tuple(seed, fc.integer({ min: 0, max: 255 })).map(([s, lc]) => {
      const b = copy(s);
      if (b.length > 4) b[4] = lc;
      return b;
    }),
    fc.tuple(seed, fc.integer({ min: 0, max: 255 })).map(([s, le]) => concatBytes([s, Uint8Array.of(le)])),
    fc.tuple(seed, fc.integer({ min: 0, max: 255 })).map(([s, cla]) => {
      const b = copy(s);
      b[0] = cla;
      return b;
    }),
    seed.map((s) => {
      const b = copy(s);
      b[0]! ^= 0x10; // toggle the chaining bit
      return b;
    }),
    fc.tuple(seed, fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 255 })).map(([s, p1, p2]) => {
      const b = copy(s);
      b[2] = p1;
      b[3] = p2;
      return b;
    }),
    fc.tuple(seed, fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 8 })).map(([s, i, extra]) => {
      const at = i % (s.length + 1);
      return concatBytes([s.subarray(0, at), extra, s.subarray(at)]);
    }),
    fc.tuple(seed, fc.nat(), fc.integer({ min: 1, max: 8 })).map(([s, i, n]) => {
      const at = i % (s.length + 1);
      return concatBytes([s.subarray(0, at), s.subarray(at + n)]);
    }),
  );
  const random = fc.oneof(
    fc.uint8Array({ minLength: 0, maxLength: 300 }),
    fc
      .tuple(fc.integer({ min: 0, max: 255 }), fc.uint8Array({ minLength: 0, maxLength: 40 }))
      .map(([ins, rest]) => concatBytes([Uint8Array.of(0x00, ins), rest])),
  );
  return fc.oneof(
    { weight: 3, arbitrary: seed },
    { weight: 12, arbitrary: mutated },
    { weight: 2, arbitrary: random },
  );
}

interface Snapshot {
  /** Everything but the retry counters, read through the stores. */
  readonly stores: string;
  readonly pin: number;
  readonly puk: number;
  /** The memory store's own fingerprint (includes the counters and the PIN/PUK/key verifiers). */
  readonly fingerprint: string;
}

async function snapshot(state: PivCardState): Promise<Snapshot> {
  const parts: string[] = [];
  for (const spec of DATA_OBJECTS)
    parts.push(Buffer.from((await state.objects.get(spec.tag)) ?? []).toString('hex'));
  for (const slot of KEY_SLOTS) {
    const info = await state.keys.info(slot);
    parts.push(
      info
        ? `${info.algorithm}/${info.pinPolicy}/${info.origin}/${Buffer.from(info.publicKeySpki).toString('hex')}`
        : '-',
    );
  }
  parts.push(await state.managementKey.algorithm());
  return {
    stores: parts.join('|'),
    pin: (await state.references.status('pin')).remaining,
    puk: (await state.references.status('puk')).remaining,
    fingerprint: memoryStateFingerprint(state),
  };
}

describe('PIV card fuzzing', () => {
  it(
    `answers ${FUZZ_CASES} random and mutated APDUs with a status word and no state change on errors`,
    { timeout: 600_000 },
    async () => {
      const keys = makeKeys();
      const seedList = seeds(keys);
      let fuzz = await freshCard(keys);
      let before = await snapshot(fuzz.base);
      let n = 0;
      const counts = new Map<string, number>();

      const startSession = async () => {
        fuzz.card.reset();
        const mode = (n / SESSION_LENGTH) % 4;
        if (mode & 1) await fuzz.host.verifyPin();
        if (mode & 2) await fuzz.host.mutualAuth(fuzz.mgmt.algorithm, fuzz.mgmt.key).catch(() => undefined);
        before = await snapshot(fuzz.base);
      };

      await fc.assert(
        fc.asyncProperty(commandArbitrary(seedList), async (command) => {
          if (n > 0 && n % CARD_LIFETIME === 0) {
            fuzz = await freshCard(keys);
            before = await snapshot(fuzz.base);
          }
          if (n % SESSION_LENGTH === 0) await startSession();
          n++;

          const response = await fuzz.card.transmit(command);
          assert.ok(response instanceof Uint8Array && response.length >= 2, 'at least a status word');
          const sw = swHex((response[response.length - 2]! << 8) | response[response.length - 1]!);
          assert.match(sw, ALLOWED_SW, `status word ${sw} for ${Buffer.from(command).toString('hex')}`);
          counts.set(sw.slice(0, 2), (counts.get(sw.slice(0, 2)) ?? 0) + 1);

          const after = await snapshot(fuzz.base);
          const success = sw === '9000' || sw.startsWith('61');
          if (!success) {
            const wrongReference = /^63C.$/.test(sw) || sw === '6983';
            const context = `${sw} for ${Buffer.from(command).toString('hex')}`;
            if (wrongReference && after.fingerprint !== before.fingerprint) {
              assert.equal(after.stores, before.stores, `only a counter may change: ${context}`);
              const pinDrop = before.pin - after.pin;
              const pukDrop = before.puk - after.puk;
              assert.ok(
                (pinDrop === 1 && pukDrop === 0) || (pinDrop === 0 && pukDrop === 1),
                `exactly one try consumed: ${context}`,
              );
            } else {
              assert.equal(after.fingerprint, before.fingerprint, `state changed: ${context}`);
              assert.equal(after.stores, before.stores, `state changed: ${context}`);
            }
          }
          before = after;
        }),
        { numRuns: FUZZ_CASES, endOnFailure: true, ...(SEED !== undefined ? { seed: SEED } : {}) },
      );
      if (process.env.CARDLINK_PIV_FUZZ_VERBOSE) console.log(Object.fromEntries(counts));
      // The run must have reached the command handlers, not only framing errors.
      assert.ok((counts.get('90') ?? 0) > FUZZ_CASES / 50, `successes: ${counts.get('90')}`);
      assert.ok((counts.get('63') ?? 0) > 0 && (counts.get('69') ?? 0) > 0 && (counts.get('6A') ?? 0) > 0);
    },
  );
});
