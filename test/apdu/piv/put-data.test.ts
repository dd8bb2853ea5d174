import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { concatBytes, encodeTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { MAX_DATA_OBJECT_VALUE_BYTES, OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { expectSw, hex, newTestCard, toHex } from './support/host.js';

describe('PUT DATA', () => {
  it('requires management key authentication and then stores (chained) objects', async () => {
    const { host, state, managementKey } = await newTestCard();
    const cert = new Uint8Array(randomBytes(1800));
    const before = memoryStateFingerprint(state);
    expectSw(await host.putData(OBJECT_TAG.CERT_DIGITAL_SIGNATURE, cert), '6982');
    assert.equal(memoryStateFingerprint(state), before);
    expectSw(await host.mutualAuth(managementKey.algorithm, managementKey.key), '9000');
    expectSw(await host.putData(OBJECT_TAG.CERT_DIGITAL_SIGNATURE, cert), '9000');
    const r = await host.getData(OBJECT_TAG.CERT_DIGITAL_SIGNATURE);
    assert.equal(toHex(parseTlvList(r.data)[0]!.value), toHex(cert));
    expectSw(await host.putData(OBJECT_TAG.CERT_DIGITAL_SIGNATURE, new Uint8Array(0)), '9000', 'delete');
    expectSw(await host.getData(OBJECT_TAG.CERT_DIGITAL_SIGNATURE), '6A82');
  });

  it('stores the Discovery Object by its own tag 7E', async () => {
    const { host, managementKey } = await newTestCard();
    await host.mutualAuth(managementKey.algorithm, managementKey.key);
    const value = hex('4F0BA000000308000010000100 5F2F024000'.replace(' ', ''));
    expectSw(await host.send({ ins: 0xdb, p1: 0x3f, p2: 0xff, data: encodeTlv(0x7e, value) }), '9000');
    const r = await host.getData(OBJECT_TAG.DISCOVERY);
    assert.equal(toHex(r.data), toHex(encodeTlv(0x7e, value)));
    const bit = hex('0201FF');
    expectSw(await host.send({ ins: 0xdb, p1: 0x3f, p2: 0xff, data: encodeTlv(0x7f61, bit) }), '9000');
    assert.equal(toHex((await host.getData(0x7f61)).data), toHex(encodeTlv(0x7f61, bit)));
  });

  it('refuses malformed bodies, unknown tags and oversized values without changing anything', async () => {
    const { host, state, managementKey } = await newTestCard();
    await host.mutualAuth(managementKey.algorithm, managementKey.key);
    const before = memoryStateFingerprint(state);
    const put = (data: Uint8Array) => host.send({ ins: 0xdb, p1: 0x3f, p2: 0xff, data });
    expectSw(await host.send({ ins: 0xdb, p1: 0x3f, p2: 0xfe, data: hex('5C035FC105530100') }), '6A86');
    expectSw(await put(hex('5C035FC105')), '6A80', 'no 53');
    expectSw(await put(hex('530100')), '6A80', 'no 5C');
    expectSw(await put(hex('5C035FC1FF530100')), '6A80', 'not a PIV container');
    expectSw(await put(hex('5C035FC105530100 00'.replace(' ', ''))), '6A80', 'trailing byte');
    expectSw(await put(hex('5C035FC10553820100')), '6A80', 'length past the end');
    const big = new Uint8Array(MAX_DATA_OBJECT_VALUE_BYTES + 1);
    expectSw(await put(concatBytes([hex('5C035FC108'), encodeTlv(0x53, big)])), '6A84', 'too large');
    assert.equal(memoryStateFingerprint(state), before);
    const max = new Uint8Array(MAX_DATA_OBJECT_VALUE_BYTES).fill(7);
    expectSw(
      await put(concatBytes([hex('5C035FC108'), encodeTlv(0x53, max)])),
      '9000',
      'largest object fits',
    );
  });
});
