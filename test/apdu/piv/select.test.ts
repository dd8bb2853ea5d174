import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { findTlv, parseTlvList, parseTlvTree } from '../../../apdu/codec/index.js';
import { atrCheckByte, PIV_CARD_ATR } from '../../../apdu/piv/atr.js';
import { PIV_AID } from '../../../apdu/piv/constants.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { expectSw, hex, newTestCard, toHex } from './support/host.js';

describe('ATR', () => {
  it('carries the PIV AID in compact-TLV historical bytes (tag F9) and a correct TCK', async () => {
    const { card } = await newTestCard();
    assert.equal(toHex(card.atr), '3BFB1300008131FE1580F9A000000308000010007' + '1');
    assert.equal(toHex(PIV_CARD_ATR), toHex(card.atr));
    // XOR of T0 .. TCK is zero (ISO 7816-3 section 8.2.5)
    assert.equal(atrCheckByte(card.atr), 0);
    assert.equal(card.atr[1]! & 0x0f, 11, 'T0 counts 11 historical bytes');
  });
});

describe('SELECT', () => {
  for (const length of [5, 6, 9, 11]) {
    it(`selects PIV with a ${length}-byte prefix of the AID and returns the application property template`, async () => {
      const { host } = await newTestCard();
      const r = await host.select(PIV_AID.subarray(0, length));
      expectSw(r, '9000');
      const [apt] = parseTlvTree(r.data);
      assert.equal(apt!.tag, 0x61);
      const aid = apt!.children.find((c) => c.tag === 0x4f)!;
      assert.equal(toHex(aid.value), '000010000100');
      const authority = apt!.children.find((c) => c.tag === 0x79)!;
      assert.equal(toHex(authority.children[0]!.value), 'A000000308');
      const label = apt!.children.find((c) => c.tag === 0x50)!;
      assert.equal(Buffer.from(label.value).toString(), 'cardlink PIV');
      const ac = apt!.children.find((c) => c.tag === 0xac)!;
      const algs = ac.children.filter((c) => c.tag === 0x80).map((c) => c.value[0]);
      assert.deepEqual(algs, [0x07, 0x05, 0x11, 0x14]);
      assert.ok(!algs.includes(0x27) && !algs.includes(0x2e), 'never advertises secure messaging');
      assert.equal(toHex(ac.children.find((c) => c.tag === 0x06)!.value), '00');
    });
  }

  it('honours Le: a short Le gets 61xx and the rest with GET RESPONSE', async () => {
    const { host } = await newTestCard();
    const full = await host.select();
    const first = await host.raw('00A4040009A00000030800001000' + '08');
    expectSw(first, '61' + (full.data.length - 8).toString(16).toUpperCase().padStart(2, '0'));
    assert.equal(toHex(first.data), toHex(full.data.subarray(0, 8)));
    const rest = await host.collect(first);
    assert.equal(toHex(rest.data), toHex(full.data));
  });

  it('P2=0C selects without response data', async () => {
    const { host } = await newTestCard();
    const r = await host.raw('00A4040C05A000000308');
    expectSw(r, '9000');
    assert.equal(r.data.length, 0);
  });

  const probes: Record<string, string> = {
    coolkey: 'A0000001160100',
    muscle: 'A00000000101',
    'sc-hsm': 'E82B0601040181C31F0201',
    EstEID: 'F04573744549442076657220312E30',
    openpgp: 'D27600012401',
    'PIV AID + extra byte': 'A0000003080000100001' + '0000',
    'four bytes of the RID': 'A0000003',
  };
  for (const [name, aid] of Object.entries(probes)) {
    it(`answers 6A82 to a SELECT of ${name} and leaves PIV selected`, async () => {
      const { host } = await newTestCard();
      expectSw(await host.select(hex(aid)), '6A82');
      expectSw(await host.getData(OBJECT_TAG.CHUID), '9000', 'PIV still answers without a new SELECT');
    });
  }

  it('refuses other SELECT forms and OpenSC probes cleanly, PIV staying selected', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('00A4000C023F00'), '6A81');
    expectSw(await host.raw('00A4040405A000000308'), '6A86');
    expectSw(await host.raw('00CADF3005'), '6D00');
    expectSw(await host.raw('00A4040000'), '6A82');
    expectSw(await host.getData(OBJECT_TAG.DISCOVERY), '9000');
  });

  it('PIV is the default application after reset', async () => {
    const { card, host } = await newTestCard();
    card.reset();
    const r = await host.getData(OBJECT_TAG.DISCOVERY);
    expectSw(r, '9000');
    const discovery = parseTlvList(r.data)[0]!;
    assert.equal(discovery.tag, 0x7e);
    assert.equal(toHex(findTlv(parseTlvList(discovery.value), 0x4f)!.value), toHex(PIV_AID));
  });
});
