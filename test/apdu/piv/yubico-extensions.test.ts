import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concatBytes, findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { expectSw, hex, newTestCard, randomManagementKey, toHex } from './support/host.js';

describe('Yubico extensions', () => {
  it('GET VERSION reports 5.7.0 and GET SERIAL the identity serial', async () => {
    const { host } = await newTestCard();
    const v = await host.raw('00FD000000');
    expectSw(v, '9000');
    assert.equal(toHex(v.data), '050700');
    const s = await host.raw('00F8000000');
    expectSw(s, '9000');
    assert.equal(toHex(s.data), '01020304');
    expectSw(await host.raw('00FD010000'), '6A86');
  });

  it('GET METADATA for PIN, PUK and management key never claims a default value', async () => {
    const { host, managementKey } = await newTestCard({ algorithm: 'AES256', pinRetries: 5 });
    await host.verifyPin(new TextEncoder().encode('000000'));
    const pin = parseTlvList((await host.raw('00F7008000')).data);
    assert.equal(toHex(findTlv(pin, 0x01)!.value), 'FF');
    assert.equal(toHex(findTlv(pin, 0x05)!.value), '00');
    assert.equal(toHex(findTlv(pin, 0x06)!.value), '0504');
    const puk = parseTlvList((await host.raw('00F7008100')).data);
    assert.equal(toHex(findTlv(puk, 0x05)!.value), '00');
    assert.equal(toHex(findTlv(puk, 0x06)!.value), '0303');
    const mgmt = parseTlvList((await host.raw('00F7009B00')).data);
    assert.equal(toHex(findTlv(mgmt, 0x01)!.value), '0C');
    assert.equal(toHex(findTlv(mgmt, 0x02)!.value), '0001');
    assert.equal(toHex(findTlv(mgmt, 0x05)!.value), '00');
    expectSw(await host.raw('00F7009A00'), '6A88', 'empty slot');
    expectSw(await host.raw('00F7009900'), '6A88', 'no such reference');
    assert.ok(managementKey);
  });

  it('SET MANAGEMENT KEY needs the current key, then only the new one works', async () => {
    const { host, state, managementKey } = await newTestCard({ algorithm: '3DES' });
    const next = randomManagementKey('AES128');
    const body = concatBytes([hex('089B10'), next]);
    const before = memoryStateFingerprint(state);
    expectSw(await host.send({ ins: 0xff, p1: 0xff, p2: 0xff, data: body }), '6982');
    assert.equal(memoryStateFingerprint(state), before);
    expectSw(await host.mutualAuth('3DES', managementKey.key), '9000');
    expectSw(await host.send({ ins: 0xff, p1: 0xff, p2: 0xfe, data: body }), '6A86', 'touch not supported');
    expectSw(
      await host.send({
        ins: 0xff,
        p1: 0xff,
        p2: 0xff,
        data: concatBytes([hex('089B18'), next, next.subarray(0, 8)]),
      }),
      '6A80',
      'length',
    );
    expectSw(
      await host.send({ ins: 0xff, p1: 0xff, p2: 0xff, data: concatBytes([hex('089A10'), next]) }),
      '6A80',
      'not 9B',
    );
    expectSw(
      await host.send({ ins: 0xff, p1: 0xff, p2: 0xff, data: concatBytes([hex('099B10'), next]) }),
      '6A80',
      'algorithm',
    );
    const weak = concatBytes([
      hex('039B18'),
      hex('0102030405060708'),
      hex('0102030405060708'),
      hex('1112131415161718'),
    ]);
    expectSw(await host.send({ ins: 0xff, p1: 0xff, p2: 0xff, data: weak }), '6A80', 'weak 3DES key');
    assert.equal(memoryStateFingerprint(state), before);
    expectSw(await host.send({ ins: 0xff, p1: 0xff, p2: 0xff, data: body }), '9000');
    expectSw(
      await host.putData(OBJECT_TAG.PRINTED_INFORMATION, Uint8Array.of(1)),
      '9000',
      'still authenticated',
    );
    expectSw(await host.mutualAuth('3DES', managementKey.key), '6A80', 'the old algorithm is gone');
    expectSw(await host.mutualAuth('AES128', next), '9000');
    assert.equal(toHex(findTlv(parseTlvList((await host.raw('00F7009B00')).data), 0x01)!.value), '08');
  });

  it('RESET, SET PIN RETRIES, ATTEST and MOVE KEY are not supported (6D00)', async () => {
    const { host } = await newTestCard();
    for (const ins of ['FB', 'FA', 'F9', 'F6']) expectSw(await host.raw(`00${ins}0000`), '6D00', ins);
  });
});
