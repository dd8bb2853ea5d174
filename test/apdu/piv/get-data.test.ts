import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeCommandApdu, findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { DATA_OBJECTS, OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { decodeFascNCharacters } from '../../../apdu/piv/objects/fasc-n.js';
import { expectSw, newTestCard, swHex, toHex } from './support/host.js';

const PIN_PROTECTED = [
  OBJECT_TAG.PRINTED_INFORMATION,
  OBJECT_TAG.CARDHOLDER_FACIAL_IMAGE,
  OBJECT_TAG.CARDHOLDER_FINGERPRINTS,
  OBJECT_TAG.CARDHOLDER_IRIS_IMAGES,
  OBJECT_TAG.PAIRING_CODE_REFERENCE_DATA,
];

describe('GET DATA', () => {
  it('reads the CHUID the way OpenSC 0.23 does: Le=08 first, then the exact length', async () => {
    const { host, state } = await newTestCard();
    const probe = await host.raw('00CB3FFF055C035FC102' + '08');
    assert.equal(probe.data.length, 8);
    assert.equal(swHex(probe.sw).slice(0, 2), '61');
    assert.equal(probe.data[0], 0x53);
    const total = 2 + probe.data[1]!; // 53 len (short form here)
    const exact = await host.raw(
      encodeCommandApdu({
        cla: 0,
        ins: 0xcb,
        p1: 0x3f,
        p2: 0xff,
        data: Uint8Array.of(0x5c, 3, 0x5f, 0xc1, 0x02),
        ne: total,
      }),
    );
    expectSw(exact, '9000');
    assert.equal(exact.data.length, total);
    const chuid = parseTlvList(parseTlvList(exact.data)[0]!.value);
    assert.equal(toHex(findTlv(chuid, 0x34)!.value), toHex(state.identity.guid));
    const fascn = decodeFascNCharacters(findTlv(chuid, 0x30)!.value);
    assert.match(fascn, /^S9999F9999F/, 'agency code 9999');
    assert.match(Buffer.from(findTlv(chuid, 0x35)!.value).toString(), /^\d{8}$/);
    assert.ok(findTlv(chuid, 0x3e) && findTlv(chuid, 0xfe));
  });

  it('chains a large object with 61xx / GET RESPONSE, and an extended Le gets it whole', async () => {
    const { host, managementKey } = await newTestCard();
    expectSw(await host.mutualAuth(managementKey.algorithm, managementKey.key), '9000');
    const cert = new Uint8Array(randomBytes(2100));
    expectSw(await host.putData(OBJECT_TAG.CERT_PIV_AUTHENTICATION, cert), '9000');
    const first = await host.raw('00CB3FFF055C035FC105' + '00');
    assert.equal(first.data.length, 256);
    expectSw(first, '6100');
    const all = await host.collect(first);
    expectSw(all, '9000');
    assert.equal(toHex(parseTlvList(all.data)[0]!.value), toHex(cert));
    const extended = await host.raw(
      encodeCommandApdu({
        cla: 0,
        ins: 0xcb,
        p1: 0x3f,
        p2: 0xff,
        data: Uint8Array.of(0x5c, 3, 0x5f, 0xc1, 0x05),
        ne: 65536,
      }),
    );
    expectSw(extended, '9000');
    assert.equal(toHex(extended.data), toHex(all.data));
  });

  it('GET RESPONSE with nothing pending is 6985; another command drops the pending rest', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('00C0000000'), '6985');
    const first = await host.raw('00CB3FFF055C035FC102' + '08');
    assert.equal(swHex(first.sw).slice(0, 2), '61');
    expectSw(await host.raw('00FD000000'), '9000');
    expectSw(await host.raw('00C0000000'), '6985');
  });

  it('answers the Discovery Object with its own tag 7E', async () => {
    const { host } = await newTestCard();
    const r = await host.getData(OBJECT_TAG.DISCOVERY);
    expectSw(r, '9000');
    const [d] = parseTlvList(r.data);
    assert.equal(d!.tag, 0x7e);
    assert.equal(toHex(findTlv(parseTlvList(d!.value), 0x5f2f)!.value), '4000');
  });

  it('every absent standard container is 6A82; PIN-protected ones are 6982 until VERIFY', async () => {
    const { host } = await newTestCard({ defaults: false });
    for (const spec of DATA_OBJECTS) {
      expectSw(await host.getData(spec.tag), spec.read === 'pin' ? '6982' : '6A82', spec.name);
    }
    expectSw(await host.verifyPin(), '9000');
    for (const spec of DATA_OBJECTS) expectSw(await host.getData(spec.tag), '6A82', spec.name);
  });

  it('PIN-protected containers are readable after VERIFY', async () => {
    const { host, managementKey } = await newTestCard();
    expectSw(await host.mutualAuth(managementKey.algorithm, managementKey.key), '9000');
    for (const tag of PIN_PROTECTED) expectSw(await host.putData(tag, Uint8Array.of(0x88, 1, 0x42)), '9000');
    for (const tag of PIN_PROTECTED) expectSw(await host.getData(tag), '6982');
    expectSw(await host.verifyPin(), '9000');
    for (const tag of PIN_PROTECTED) {
      const r = await host.getData(tag);
      expectSw(r, '9000');
      assert.equal(toHex(r.data), '5303880142');
    }
  });

  it('refuses malformed requests with clean status words and changes nothing', async () => {
    const { host, state } = await newTestCard();
    const before = memoryStateFingerprint(state);
    expectSw(await host.raw('00CBDF3005'), '6A86', 'P1P2 other than 3FFF');
    expectSw(await host.raw('00CB3FFF00'), '6A80', 'no tag list');
    expectSw(await host.raw('00CB3FFF03530100'), '6A80', 'not a tag list');
    expectSw(await host.raw('00CB3FFF065C045FC10201'), '6A80', 'four-byte tag');
    expectSw(await host.raw('00CB3FFF045C02'), '6700', 'Lc does not match');
    expectSw(await host.raw('00CB3FFF055C035FC1'), '6700', 'truncated');
    expectSw(await host.raw('00CB3FFF055C045FC102'), '6A80', 'TLV runs past the data');
    expectSw(await host.raw('00CB3FFF055C035FC1FF'), '6A82', 'not a PIV container');
    expectSw(await host.raw('00CB3FFF045C02007E'), '6A80', 'tag with a leading zero');
    assert.equal(memoryStateFingerprint(state), before);
  });
});
