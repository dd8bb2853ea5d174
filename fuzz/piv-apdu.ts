/**
 * Fuzz property of the PIV card (apdu/piv/piv-card.ts): whatever bytes arrive — random, or valid
 * commands with bytes flipped, truncated, Lc/Le/CLA/P1/P2 changed, chain bits set — the card
 * answers and never rejects, always with a well-formed status word of the ISO 7816-4 set the card
 * uses (never 6F00, which would be an unexpected exception), and an error status word leaves the
 * persistent state as it was (a snapshot through the stores plus the memory store's fingerprint,
 * taken before and after). The one allowed change: a wrong PIN/PUK (63Cx, or 6983 for the last
 * try) costs exactly one try of one reference.
 *
 * Stateful: commands run one after another on one card, in sessions of SESSION_LENGTH commands
 * that start with nothing, the PIN, the management key, or both; every CARD_LIFETIME commands a
 * fresh card (the fuzzer blocks PIN and PUK along the way). Run by test/apdu/piv/fuzz.test.ts (CI,
 * 100 000 commands) and bench/fuzz-depth.ts (≥ 1M).
 */
import {
  createCipheriv,
  createDecipheriv,
  generateKeyPairSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import fc from 'fast-check';
import {
  concatBytes,
  encodeCommandApdu,
  encodeTlv,
  findTlv,
  parseResponseApdu,
  parseTlvList,
} from '../apdu/codec/index.js';
import type { KeyAlgorithm, PivCardState } from '../apdu/piv/index.js';
import {
  KEY_SLOTS,
  MANAGEMENT_ALGORITHM_ID,
  createMemoryCardState,
  memoryStateFingerprint,
  PivCard,
  padReferenceValue,
} from '../apdu/piv/index.js';
import { DATA_OBJECTS, OBJECT_TAG, installDefaultObjects } from '../apdu/piv/objects/index.js';
import { failure, hex, OK, thrown, type Verdict } from './property.js';

/** Commands between resets (each session starts with PIN and/or management key, or nothing). */
export const SESSION_LENGTH = 400;
/** Commands before the fuzzer moves to a fresh card (PIN and PUK get blocked along the way). */
export const CARD_LIFETIME = 5_000;

/**
 * The status words the card may answer; each is of an ISO 7816-4 class (61xx, 63Cx, 67xx, 68xx,
 * 69xx, 6Axx, 6Dxx, 6Exx, 9000). 6F00 (no precise diagnosis) is not among them: the card answers
 * it only for an exception it did not expect.
 */
export const ALLOWED_SW = /^(9000|61..|63C.|6700|688[1-4]|698[2-5]|6A8[0-8]|6D00|6E00)$/;

// Made-up secrets of the fuzzed cards (the card ships none).
const PIN = new TextEncoder().encode('246813');
const PUK = new TextEncoder().encode('97531864');

const swHex = (sw: number) => sw.toString(16).padStart(4, '0').toUpperCase();
const h = (s: string) => Uint8Array.from(Buffer.from(s, 'hex'));
const empty = new Uint8Array(0);
const apdu = (cla: number, ins: number, p1: number, p2: number, data?: Uint8Array, ne?: number) =>
  encodeCommandApdu({ cla, ins, p1, p2, ...(data ? { data } : {}), ...(ne !== undefined ? { ne } : {}) });
const tagList = (tag: number) =>
  encodeTlv(0x5c, h(tag.toString(16).padStart(tag > 0xffff ? 6 : tag > 0xff ? 4 : 2, '0')));
const dyn = (...items: Uint8Array[]) => encodeTlv(0x7c, items);

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
  readonly mgmtKey: Uint8Array;
}

/**
 * A card with keys in 9A (RSA-2048), 9C (P-256), 9D (P-384), 9E (P-256), 82 (RSA-3072) and an
 * AES-128 management key. Its key store generates RSA keys by importing pre-made ones (RSA
 * generation would dominate the run).
 */
async function freshCard(keys: Keys): Promise<FuzzCard> {
  const mgmtKey = new Uint8Array(randomBytes(16));
  const base = createMemoryCardState({
    pin: PIN,
    puk: PUK,
    managementKey: { algorithm: 'AES128', key: mgmtKey },
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
  return { base, card: new PivCard(state), mgmtKey };
}

/** Valid (or nearly valid) commands of every kind, for mutation. */
function seeds(keys: Keys): Uint8Array[] {
  const pin = padReferenceValue(PIN);
  const puk = padReferenceValue(PUK);
  const digest = new Uint8Array(32).fill(0x5a);
  // A raw RSA input below any 2048-bit modulus (leading 00), shaped as a PKCS#1 v1.5 block.
  const rsaBlock = concatBytes([h('0001'), new Uint8Array(221).fill(0xff), new Uint8Array(1), digest]);
  const rsaSign = dyn(encodeTlv(0x82, empty), encodeTlv(0x81, rsaBlock));
  const peer = h('04' + '11'.repeat(64));
  const ecScalar = new Uint8Array(Buffer.from(keys.ec256.export({ format: 'jwk' }).d!, 'base64url'));
  const out: Uint8Array[] = [
    apdu(0, 0xa4, 0x04, 0x00, h('A000000308000010000100'), 256),
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
  const byte = fc.integer({ min: 0, max: 255 });
  const mutated = fc.oneof(
    fc.tuple(seed, fc.nat(), fc.integer({ min: 1, max: 255 })).map(([s, i, x]) => {
      const b = copy(s);
      b[i % b.length]! ^= x;
      return b;
    }),
    fc.tuple(seed, fc.nat()).map(([s, n]) => s.slice(0, n % (s.length + 1))),
    fc.tuple(seed, byte).map(([s, lc]) => {
      const b = copy(s);
      if (b.length > 4) b[4] = lc;
      return b;
    }),
    fc.tuple(seed, byte).map(([s, le]) => concatBytes([s, Uint8Array.of(le)])),
    fc.tuple(seed, byte).map(([s, cla]) => {
      const b = copy(s);
      b[0] = cla;
      return b;
    }),
    seed.map((s) => {
      const b = copy(s);
      b[0]! ^= 0x10; // toggle the chaining bit
      return b;
    }),
    fc.tuple(seed, byte, byte).map(([s, p1, p2]) => {
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
      .tuple(byte, fc.uint8Array({ minLength: 0, maxLength: 40 }))
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
  for (const spec of DATA_OBJECTS) parts.push(hex((await state.objects.get(spec.tag)) ?? empty));
  for (const slot of KEY_SLOTS) {
    const info = await state.keys.info(slot);
    parts.push(info ? `${info.algorithm}/${info.pinPolicy}/${info.origin}/${hex(info.publicKeySpki)}` : '-');
  }
  parts.push(await state.managementKey.algorithm());
  return {
    stores: parts.join('|'),
    pin: (await state.references.status('pin')).remaining,
    puk: (await state.references.status('puk')).remaining,
    fingerprint: memoryStateFingerprint(state),
  };
}

/** ISO 7816-4 5.1.3: SW1 is 61..6F (60 is a procedure byte) or 9X. */
function isoStatusClass(sw1: number): boolean {
  return (sw1 >= 0x61 && sw1 <= 0x6f) || (sw1 & 0xf0) === 0x90;
}

/** The data of a response's `7C { tag value }`, or undefined. */
function dynamicAuthItem(response: Uint8Array, tag: number): Uint8Array | undefined {
  try {
    const r = parseResponseApdu(response);
    if (r.sw !== 0x9000) return undefined;
    const outer = findTlv(parseTlvList(r.data), 0x7c);
    return outer && findTlv(parseTlvList(outer.value), tag)?.value;
  } catch {
    return undefined;
  }
}

/** yubico-piv-tool style mutual authentication with the card's AES-128 management key. */
async function authenticate(card: PivCard, key: Uint8Array): Promise<void> {
  const alg = MANAGEMENT_ALGORITHM_ID.AES128;
  const aes = (block: Uint8Array, encrypt: boolean) => {
    const c = encrypt ? createCipheriv('aes-128-ecb', key, null) : createDecipheriv('aes-128-ecb', key, null);
    c.setAutoPadding(false);
    return new Uint8Array(Buffer.concat([c.update(block), c.final()]));
  };
  const witness = dynamicAuthItem(await card.transmit(apdu(0, 0x87, alg, 0x9b, h('7C028000'), 256)), 0x80);
  if (!witness) throw new Error('the card gave no witness');
  const challenge = new Uint8Array(randomBytes(16));
  const body = dyn(encodeTlv(0x80, aes(witness, false)), encodeTlv(0x81, challenge));
  const answer = dynamicAuthItem(await card.transmit(apdu(0, 0x87, alg, 0x9b, body, 256)), 0x82);
  if (!answer || hex(answer) !== hex(aes(challenge, true))) throw new Error('mutual authentication failed');
}

/**
 * The PIV APDU property: `commands` generates one command per case; `check` sends it to the
 * current card and judges the answer. Cases must run one after another (the card carries state).
 */
export class PivApduFuzzer {
  readonly name = 'piv_apdu';
  readonly description =
    'random and mutated command APDUs, one after another on a stateful card: the card answers every ' +
    'one with a status word of the allowed ISO set, and an error leaves the persistent state as it was ' +
    '(a wrong PIN/PUK costs exactly one try)';
  readonly commands: fc.Arbitrary<Uint8Array>;
  /** Status words seen, by SW1 (hex). */
  readonly counts = new Map<string, number>();
  private fuzz!: FuzzCard;
  private before!: Snapshot;
  private n = 0;

  private constructor(private readonly keys: Keys) {
    this.commands = commandArbitrary(seeds(keys));
  }

  static async create(): Promise<PivApduFuzzer> {
    const fuzzer = new PivApduFuzzer(makeKeys());
    await fuzzer.newCard();
    return fuzzer;
  }

  /** Commands checked so far. */
  get cases(): number {
    return this.n;
  }

  async check(command: Uint8Array): Promise<Verdict> {
    try {
      if (this.n > 0 && this.n % CARD_LIFETIME === 0) await this.newCard();
      if (this.n % SESSION_LENGTH === 0) await this.startSession();
    } catch (error) {
      return thrown('starting a fuzz session', error);
    }
    this.n++;
    const context = hex(command);
    let response: Uint8Array;
    try {
      response = await this.fuzz.card.transmit(command);
    } catch (error) {
      return thrown(`transmit(${context})`, error);
    }
    if (!(response instanceof Uint8Array) || response.length < 2)
      return failure(`no status word for ${context}`);
    const sw1 = response[response.length - 2]!;
    const sw = swHex((sw1 << 8) | response[response.length - 1]!);
    if (!isoStatusClass(sw1)) return failure(`status word ${sw} of no ISO class for ${context}`);
    if (!ALLOWED_SW.test(sw)) return failure(`status word ${sw} for ${context}`);
    this.counts.set(sw.slice(0, 2), (this.counts.get(sw.slice(0, 2)) ?? 0) + 1);

    let after: Snapshot;
    try {
      after = await snapshot(this.fuzz.base);
    } catch (error) {
      return thrown(`reading the card state after ${context}`, error);
    }
    const before = this.before;
    this.before = after;
    if (sw === '9000' || sw.startsWith('61')) return OK;
    const wrongReference = /^63C.$/.test(sw) || sw === '6983';
    if (wrongReference && after.fingerprint !== before.fingerprint) {
      if (after.stores !== before.stores) return failure(`only a counter may change: ${sw} for ${context}`);
      const pinDrop = before.pin - after.pin;
      const pukDrop = before.puk - after.puk;
      if (!((pinDrop === 1 && pukDrop === 0) || (pinDrop === 0 && pukDrop === 1)))
        return failure(`not exactly one try consumed: ${sw} for ${context}`);
      return OK;
    }
    if (after.fingerprint !== before.fingerprint || after.stores !== before.stores)
      return failure(`state changed: ${sw} for ${context}`);
    return OK;
  }

  /**
   * Why the run did not reach the command handlers (only framing errors, no successes, no wrong
   * PIN, no security or data errors), or undefined when it did.
   */
  coverageProblem(): string | undefined {
    const seen = (sw1: string) => this.counts.get(sw1) ?? 0;
    if (seen('90') <= this.n / 50) return `too few successes: ${seen('90')} of ${this.n}`;
    for (const sw1 of ['63', '69', '6A']) if (seen(sw1) === 0) return `no ${sw1}xx answer in ${this.n}`;
    return undefined;
  }

  private async newCard(): Promise<void> {
    this.fuzz = await freshCard(this.keys);
    this.before = await snapshot(this.fuzz.base);
  }

  private async startSession(): Promise<void> {
    const { card, mgmtKey } = this.fuzz;
    card.reset();
    const mode = (this.n / SESSION_LENGTH) % 4;
    if (mode & 1) await card.transmit(apdu(0, 0x20, 0x00, 0x80, padReferenceValue(PIN)));
    // The PIN or the key may be blocked or changed by now: then the session starts without it.
    if (mode & 2) await authenticate(card, mgmtKey).catch(() => undefined);
    this.before = await snapshot(this.fuzz.base);
  }
}
