import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import assert from 'node:assert/strict';
import {
  concatBytes,
  encodeCommandApdu,
  encodeTlv,
  findTlv,
  parseResponseApdu,
  parseTlvList,
  SW,
} from '../../../../apdu/codec/index.js';
import type { ManagementKeyAlgorithm, PivCardState } from '../../../../apdu/piv/card-state.js';
import { MANAGEMENT_ALGORITHM_ID, MANAGEMENT_BLOCK_BYTES, PIV_AID } from '../../../../apdu/piv/constants.js';
import { createMemoryCardState } from '../../../../apdu/piv/memory-card-state.js';
import { installDefaultObjects } from '../../../../apdu/piv/objects/default-objects.js';
import { PivCard } from '../../../../apdu/piv/piv-card.js';
import { padReferenceValue } from '../../../../apdu/piv/reference-data.js';

/**
 * The host side of the tests: what middleware does to talk to the card (GET RESPONSE loops,
 * command chaining, management key challenge-response with node:crypto). Test secrets are made
 * up per test; the card ships none.
 */

export const TEST_PIN = new TextEncoder().encode('246813');
export const TEST_PUK = new TextEncoder().encode('97531864');

export interface Reply {
  readonly data: Uint8Array;
  readonly sw: number;
}

export const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
export const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex').toUpperCase();
export const swHex = (sw: number): string => sw.toString(16).padStart(4, '0').toUpperCase();

const CIPHERS: Record<ManagementKeyAlgorithm, string> = {
  '3DES': 'des-ede3',
  AES128: 'aes-128-ecb',
  AES192: 'aes-192-ecb',
  AES256: 'aes-256-ecb',
};
const KEY_BYTES: Record<ManagementKeyAlgorithm, number> = { '3DES': 24, AES128: 16, AES192: 24, AES256: 32 };

export function ecb(
  algorithm: ManagementKeyAlgorithm,
  key: Uint8Array,
  block: Uint8Array,
  encrypt: boolean,
): Uint8Array {
  const c = encrypt
    ? createCipheriv(CIPHERS[algorithm], key, null)
    : createDecipheriv(CIPHERS[algorithm], key, null);
  c.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([c.update(block), c.final()]));
}

/** A management key of `algorithm` with distinct DES parts (never weak). */
export function randomManagementKey(algorithm: ManagementKeyAlgorithm): Uint8Array {
  for (;;) {
    const key = new Uint8Array(randomBytes(KEY_BYTES[algorithm]));
    if (algorithm !== '3DES') return key;
    const part = (i: number) => toHex(key.subarray(i * 8, i * 8 + 8).map((b) => b & 0xfe));
    if (part(0) !== part(1) && part(1) !== part(2)) return key;
  }
}

export interface TestCard {
  readonly card: PivCard;
  readonly state: PivCardState;
  readonly host: Host;
  readonly managementKey: { algorithm: ManagementKeyAlgorithm; key: Uint8Array };
}

export async function newTestCard(
  options: {
    algorithm?: ManagementKeyAlgorithm;
    pinRetries?: number;
    pukRetries?: number;
    defaults?: boolean;
  } = {},
): Promise<TestCard> {
  const algorithm = options.algorithm ?? 'AES192';
  const managementKey = { algorithm, key: randomManagementKey(algorithm) };
  const state = createMemoryCardState({
    pin: TEST_PIN,
    puk: TEST_PUK,
    managementKey,
    serial: 0x01020304,
    ...(options.pinRetries !== undefined ? { pinRetries: options.pinRetries } : {}),
    ...(options.pukRetries !== undefined ? { pukRetries: options.pukRetries } : {}),
  });
  if (options.defaults !== false) await installDefaultObjects(state);
  const card = new PivCard(state);
  return { card, state, host: new Host(card), managementKey };
}

export class Host {
  constructor(readonly card: { transmit(apdu: Uint8Array): Promise<Uint8Array> }) {}

  /** One APDU, no automatic GET RESPONSE. */
  async raw(apdu: Uint8Array | string): Promise<Reply> {
    const r = parseResponseApdu(await this.card.transmit(typeof apdu === 'string' ? hex(apdu) : apdu));
    return { data: r.data, sw: r.sw };
  }

  /** Sends a command, chaining (CLA 10) data over 255 bytes and following 61xx with GET RESPONSE. */
  async send(cmd: { ins: number; p1: number; p2: number; data?: Uint8Array; ne?: number }): Promise<Reply> {
    const data = cmd.data ?? new Uint8Array(0);
    let reply: Reply | undefined;
    if (data.length <= 255) {
      reply = await this.raw(
        encodeCommandApdu({ cla: 0, ins: cmd.ins, p1: cmd.p1, p2: cmd.p2, data, ne: cmd.ne ?? 256 }),
      );
    } else {
      for (let off = 0; off < data.length; off += 255) {
        const last = off + 255 >= data.length;
        const part = data.subarray(off, off + 255);
        reply = await this.raw(
          encodeCommandApdu({
            cla: last ? 0x00 : 0x10,
            ins: cmd.ins,
            p1: cmd.p1,
            p2: cmd.p2,
            data: part,
            ne: last ? 256 : undefined,
          }),
        );
        if (!last) assert.equal(swHex(reply.sw), '9000', 'non-final chain part');
      }
    }
    return this.collect(reply!);
  }

  /** Follows 61xx with GET RESPONSE until the end of the response. */
  async collect(first: Reply): Promise<Reply> {
    const parts = [first.data];
    let sw = first.sw;
    while ((sw & 0xff00) === SW.BYTES_REMAINING_00) {
      const next = await this.raw(Uint8Array.of(0x00, 0xc0, 0x00, 0x00, sw & 0xff));
      parts.push(next.data);
      sw = next.sw;
    }
    return { data: concatBytes(parts), sw };
  }

  async select(aid: Uint8Array = PIV_AID): Promise<Reply> {
    return this.send({ ins: 0xa4, p1: 0x04, p2: 0x00, data: aid });
  }

  async getData(tag: number): Promise<Reply> {
    const tagBytes =
      tag > 0xffff ? [tag >> 16, (tag >> 8) & 0xff, tag & 0xff] : tag > 0xff ? [tag >> 8, tag & 0xff] : [tag];
    return this.send({ ins: 0xcb, p1: 0x3f, p2: 0xff, data: encodeTlv(0x5c, Uint8Array.from(tagBytes)) });
  }

  async putData(tag: number, value: Uint8Array): Promise<Reply> {
    const tagBytes =
      tag > 0xffff ? [tag >> 16, (tag >> 8) & 0xff, tag & 0xff] : tag > 0xff ? [tag >> 8, tag & 0xff] : [tag];
    return this.send({
      ins: 0xdb,
      p1: 0x3f,
      p2: 0xff,
      data: concatBytes([encodeTlv(0x5c, Uint8Array.from(tagBytes)), encodeTlv(0x53, value)]),
    });
  }

  async verifyPin(pin: Uint8Array = TEST_PIN, p2 = 0x80): Promise<Reply> {
    return this.send({ ins: 0x20, p1: 0x00, p2, data: padReferenceValue(pin) });
  }

  /** yubico-piv-tool / ykman style mutual authentication. Returns the last reply. */
  async mutualAuth(algorithm: ManagementKeyAlgorithm, key: Uint8Array): Promise<Reply> {
    const id = MANAGEMENT_ALGORITHM_ID[algorithm];
    const step1 = await this.send({ ins: 0x87, p1: id, p2: 0x9b, data: hex('7C028000') });
    if (step1.sw !== SW.OK) return step1;
    const witness = findTlv(parseTlvList(findTlv(parseTlvList(step1.data), 0x7c)!.value), 0x80)!.value;
    const challenge = new Uint8Array(randomBytes(MANAGEMENT_BLOCK_BYTES[algorithm]));
    const body = encodeTlv(0x7c, [
      encodeTlv(0x80, ecb(algorithm, key, witness, false)),
      encodeTlv(0x81, challenge),
    ]);
    const step2 = await this.send({ ins: 0x87, p1: id, p2: 0x9b, data: body });
    if (step2.sw !== SW.OK) return step2;
    const answer = findTlv(parseTlvList(findTlv(parseTlvList(step2.data), 0x7c)!.value), 0x82)!.value;
    assert.equal(
      toHex(answer),
      toHex(ecb(algorithm, key, challenge, true)),
      'card proved the management key',
    );
    return step2;
  }

  /** OpenSC piv-tool style external authentication. */
  async externalAuth(algorithm: ManagementKeyAlgorithm, key: Uint8Array): Promise<Reply> {
    const id = MANAGEMENT_ALGORITHM_ID[algorithm];
    const step1 = await this.send({ ins: 0x87, p1: id, p2: 0x9b, data: hex('7C028100') });
    if (step1.sw !== SW.OK) return step1;
    const challenge = findTlv(parseTlvList(findTlv(parseTlvList(step1.data), 0x7c)!.value), 0x81)!.value;
    assert.equal(challenge.length, MANAGEMENT_BLOCK_BYTES[algorithm]);
    const body = encodeTlv(0x7c, encodeTlv(0x82, ecb(algorithm, key, challenge, true)));
    return this.send({ ins: 0x87, p1: id, p2: 0x9b, data: body });
  }

  /** GENERAL AUTHENTICATE `7C { 82 00, <tag> input }` and the content of 82 in the answer. */
  async privateKeyOp(algorithmId: number, slot: number, tag: 0x81 | 0x85, input: Uint8Array): Promise<Reply> {
    const body = encodeTlv(0x7c, [encodeTlv(0x82, new Uint8Array(0)), encodeTlv(tag, input)]);
    const r = await this.send({ ins: 0x87, p1: algorithmId, p2: slot, data: body });
    if (r.sw !== SW.OK) return r;
    const inner = findTlv(parseTlvList(findTlv(parseTlvList(r.data), 0x7c)!.value), 0x82)!.value;
    return { data: inner, sw: r.sw };
  }

  /** GENERATE; returns the 7F49 content. */
  async generate(slot: number, algorithmId: number, extra: Uint8Array = new Uint8Array(0)): Promise<Reply> {
    const body = encodeTlv(0xac, concatBytes([encodeTlv(0x80, Uint8Array.of(algorithmId)), extra]));
    const r = await this.send({ ins: 0x47, p1: 0x00, p2: slot, data: body });
    if (r.sw !== SW.OK) return r;
    return { data: findTlv(parseTlvList(r.data), 0x7f49)!.value, sw: r.sw };
  }
}

export function expectSw(reply: Reply, sw: string, message?: string): void {
  assert.equal(swHex(reply.sw), sw, message);
}
