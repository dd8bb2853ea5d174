import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { PivCardState } from '../../../apdu/piv/card-state.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { PivCard } from '../../../apdu/piv/piv-card.js';
import { expectSw, Host, newTestCard, swHex } from './support/host.js';

describe('class bytes, instructions and framing', () => {
  it('maps class bytes to ISO status words', async () => {
    const { host } = await newTestCard();
    const cases: [string, string][] = [
      ['80', '6E00'],
      ['FF', '6E00'],
      ['20', '6E00'],
      ['01', '6881'],
      ['03', '6881'],
      ['40', '6881'],
      ['04', '6882'],
      ['0C', '6882'],
    ];
    for (const [cla, sw] of cases) expectSw(await host.raw(`${cla}FD000000`), sw, `CLA ${cla}`);
    expectSw(await host.raw('00FD000000'), '9000');
  });

  it('unknown instructions are 6D00; malformed lengths 6700', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('00B0000000'), '6D00');
    expectSw(await host.raw('00CA DF30 05'.replace(/ /g, '')), '6D00');
    expectSw(await host.raw('00FD00'), '6700');
    expectSw(await host.raw(''), '6700');
    expectSw(await host.raw('00A4040005A0000003'), '6700');
    expectSw(await host.raw('00A40400000006A000000308'), '6700');
  });

  it('chaining only for PUT DATA, GENERAL AUTHENTICATE and IMPORT KEY; an interrupted chain is 6883', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('10A4040005A000000308'), '6884');
    expectSw(await host.raw('10DB3FFF025C03'), '9000');
    expectSw(await host.raw('00FD000000'), '6883');
    expectSw(await host.raw('00FD000000'), '9000', 'the chain is gone');
  });

  it('never rejects: a failing store gives 6F00 and unknown input types too', async () => {
    const { state } = await newTestCard();
    const broken: PivCardState = {
      ...state,
      objects: {
        get: async () => {
          throw new Error('disk on fire');
        },
        put: state.objects.put,
      },
    };
    const card = new PivCard(broken);
    const host = new Host(card);
    expectSw(await host.getData(OBJECT_TAG.CHUID), '6F00');
    expectSw(await host.raw('00FD000000'), '9000', 'the card keeps working');
    const r = await card.transmit('not bytes' as unknown as Uint8Array);
    assert.equal(swHex((r[0]! << 8) | r[1]!), '6F00');
  });

  it('processes concurrent commands one at a time, in order', async () => {
    const { card, state } = await newTestCard();
    const wrong = '00200080083030303030303030'.replace(/(..)/g, '$1');
    const replies = await Promise.all(
      [0, 1, 2, 3].map(() => card.transmit(Uint8Array.from(Buffer.from(wrong, 'hex')))),
    );
    assert.deepEqual(
      replies.map((r) => swHex((r[0]! << 8) | r[1]!)),
      ['63C2', '63C1', '6983', '6983'],
    );
    assert.equal((await state.references.status('pin')).remaining, 0);
    assert.ok(memoryStateFingerprint(state));
  });
});
