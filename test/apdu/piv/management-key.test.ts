import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { encodeTlv, findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import type { ManagementKeyAlgorithm } from '../../../apdu/piv/card-state.js';
import { MANAGEMENT_ALGORITHM_ID } from '../../../apdu/piv/constants.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/catalogue.js';
import { ecb, expectSw, hex, newTestCard, randomManagementKey, toHex } from './support/host.js';

const ALGORITHMS: ManagementKeyAlgorithm[] = ['3DES', 'AES128', 'AES192', 'AES256'];
const PRINTED = OBJECT_TAG.PRINTED_INFORMATION;

describe('management key (9B) authentication', () => {
  for (const algorithm of ALGORITHMS) {
    it(`mutual authentication with ${algorithm} unlocks PUT DATA`, async () => {
      const { host, managementKey } = await newTestCard({ algorithm });
      expectSw(await host.putData(PRINTED, Uint8Array.of(1)), '6982');
      expectSw(await host.mutualAuth(algorithm, managementKey.key), '9000');
      expectSw(await host.putData(PRINTED, Uint8Array.of(1)), '9000');
    });

    it(`external authentication with ${algorithm} unlocks PUT DATA`, async () => {
      const { host, managementKey } = await newTestCard({ algorithm });
      expectSw(await host.externalAuth(algorithm, managementKey.key), '9000');
      expectSw(await host.putData(PRINTED, Uint8Array.of(1)), '9000');
    });

    it(`a wrong ${algorithm} key fails with 6982 in both modes`, async () => {
      const { host, state } = await newTestCard({ algorithm });
      const before = memoryStateFingerprint(state);
      const wrong = randomManagementKey(algorithm);
      expectSw(await host.mutualAuth(algorithm, wrong), '6982');
      expectSw(await host.externalAuth(algorithm, wrong), '6982');
      expectSw(await host.putData(PRINTED, Uint8Array.of(1)), '6982');
      assert.equal(memoryStateFingerprint(state), before);
    });
  }

  it('P1 must be the management key algorithm (6A80)', async () => {
    const { host } = await newTestCard({ algorithm: 'AES128' });
    expectSw(await host.raw('0087039B047C028000'), '6A80');
    expectSw(await host.raw('0087079B047C028000'), '6A80');
    expectSw(await host.raw('0087089B047C028000'), '9000');
  });

  it('a challenge answers once and any other command drops it', async () => {
    const { host, managementKey } = await newTestCard({ algorithm: '3DES' });
    const { algorithm, key } = managementKey;
    const id = MANAGEMENT_ALGORITHM_ID[algorithm];
    const ask = async () => {
      const r = await host.send({ ins: 0x87, p1: id, p2: 0x9b, data: hex('7C028100') });
      return findTlv(parseTlvList(findTlv(parseTlvList(r.data), 0x7c)!.value), 0x81)!.value;
    };
    const answer = (challenge: Uint8Array) =>
      host.send({
        ins: 0x87,
        p1: id,
        p2: 0x9b,
        data: encodeTlv(0x7c, encodeTlv(0x82, ecb(algorithm, key, challenge, true))),
      });

    expectSw(await answer(new Uint8Array(8)), '6982', 'no challenge outstanding');
    let challenge = await ask();
    await host.raw('00FD0000');
    expectSw(await answer(challenge), '6982', 'dropped by another command');
    challenge = await ask();
    expectSw(await host.send({ ins: 0x87, p1: id, p2: 0x9b, data: hex('7C038201FF') }), '6A80');
    expectSw(await answer(challenge), '6982', 'spent by the malformed answer');
    challenge = await ask();
    expectSw(await answer(challenge), '9000');
    expectSw(await answer(challenge), '6982', 'no replay');
  });

  it('never encrypts a host challenge before the host proved the key', async () => {
    const { host } = await newTestCard({ algorithm: 'AES256' });
    const challenge = '00112233445566778899AABBCCDDEEFF';
    // `81 challenge, 82 00` would ask the card to encrypt the host's block: refused.
    expectSw(await host.raw(`00870C9B167C148110${challenge}8200`), '6A80');
    // mutual step 2 without a witness outstanding
    const body = toHex(
      encodeTlv(0x7c, [encodeTlv(0x80, new Uint8Array(16)), encodeTlv(0x81, hex(challenge))]),
    );
    expectSw(await host.raw(`00870C9B${(body.length / 2).toString(16)}${body}`), '6982');
  });

  it("serves OpenSC's random request (P1=00, 7C 02 81 00) without arming an authentication", async () => {
    const { host, managementKey } = await newTestCard({ algorithm: 'AES128' });
    const r = await host.raw('0087009B047C02810000');
    expectSw(r, '9000');
    const random = findTlv(parseTlvList(findTlv(parseTlvList(r.data), 0x7c)!.value), 0x81)!.value;
    assert.equal(random.length, 16);
    const forged = encodeTlv(0x7c, encodeTlv(0x82, ecb('AES128', managementKey.key, random, true)));
    expectSw(await host.send({ ins: 0x87, p1: 0x08, p2: 0x9b, data: forged }), '6982', 'not a challenge');
    expectSw(await host.raw('0087009B047C02800000'), '6A80', 'P1=00 serves nothing else');
  });

  it('reset drops the authentication', async () => {
    const { card, host, managementKey } = await newTestCard();
    expectSw(await host.mutualAuth(managementKey.algorithm, managementKey.key), '9000');
    card.reset();
    expectSw(await host.putData(PRINTED, Uint8Array.of(1)), '6982');
  });
});
