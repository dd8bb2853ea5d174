import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { concatBytes } from '../../../apdu/codec/index.js';
import { memoryStateFingerprint } from '../../../apdu/piv/memory-card-state.js';
import { padReferenceValue } from '../../../apdu/piv/reference-data.js';
import { expectSw, hex, newTestCard, TEST_PIN, TEST_PUK } from './support/host.js';

const text = (s: string) => new TextEncoder().encode(s);
const WRONG = text('000000');
const NEW_PIN = text('8642097');

const resetRetry = (puk: Uint8Array, pin: Uint8Array) => ({
  ins: 0x2c,
  p1: 0x00,
  p2: 0x80,
  data: concatBytes([padReferenceValue(puk), padReferenceValue(pin)]),
});
const change = (p2: number, current: Uint8Array, next: Uint8Array) => ({
  ins: 0x24,
  p1: 0x00,
  p2,
  data: concatBytes([padReferenceValue(current), padReferenceValue(next)]),
});

describe('PIN life cycle', () => {
  it('empty VERIFY reports tries left, then 9000 once verified; P1=FF forgets it', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('0020008000'), '63C3');
    expectSw(await host.raw('00200080'), '63C3');
    expectSw(await host.verifyPin(), '9000');
    expectSw(await host.raw('00200080'), '9000');
    expectSw(await host.raw('0020FF80'), '9000');
    expectSw(await host.raw('00200080'), '63C3');
  });

  it('wrong PINs count down and block at the configured limit; then even the right PIN is 6983', async () => {
    const { host, state } = await newTestCard({ pinRetries: 5 });
    for (const left of [4, 3, 2, 1]) expectSw(await host.verifyPin(WRONG), `63C${left}`);
    expectSw(await host.verifyPin(WRONG), '6983');
    assert.deepEqual(await state.references.status('pin'), { remaining: 0, limit: 5 });
    expectSw(await host.verifyPin(), '6983');
    expectSw(await host.raw('00200080'), '6983');
    assert.equal((await state.references.status('pin')).remaining, 0);
  });

  it('a right PIN restores the counter; a wrong PIN forgets an earlier verification', async () => {
    const { host, state } = await newTestCard();
    expectSw(await host.verifyPin(WRONG), '63C2');
    expectSw(await host.verifyPin(), '9000');
    assert.equal((await state.references.status('pin')).remaining, 3);
    expectSw(await host.verifyPin(WRONG), '63C2');
    expectSw(await host.raw('00200080'), '63C2', 'no longer verified');
  });

  it('malformed VERIFY is refused without consuming a try', async () => {
    const { host, state } = await newTestCard();
    const before = memoryStateFingerprint(state);
    expectSw(await host.raw('002000800731323334353637'), '6A80', '7 bytes');
    expectSw(await host.raw('0020008008313233FFFFFFFFFF'), '6A80', 'value of 3 bytes');
    expectSw(await host.raw('00200080083132333435FF36FF'), '6A80', 'data after padding');
    expectSw(await host.raw('0020008009313233343536FFFFFF'), '6A80', '9 bytes');
    expectSw(await host.raw('00200000083132333435363738'), '6A88', 'global PIN');
    expectSw(await host.raw('00200096083132333435363738'), '6A88', 'other reference');
    expectSw(await host.raw('00200180083132333435363738'), '6A86', 'P1');
    expectSw(await host.raw('0020FF8001FF'), '6A80', 'P1=FF with data');
    expectSw(await host.raw('002000800831323334'), '6700', 'Lc larger than the data');
    assert.equal(memoryStateFingerprint(state), before);
    expectSw(await host.raw('00200080'), '63C3');
  });

  it('the PUK unblocks a blocked PIN with RESET RETRY COUNTER', async () => {
    const { host, state } = await newTestCard();
    for (let i = 0; i < 3; i++) await host.verifyPin(WRONG);
    expectSw(await host.verifyPin(), '6983');
    expectSw(await host.send(resetRetry(WRONG, NEW_PIN)), '63C2', 'wrong PUK');
    expectSw(await host.send(resetRetry(TEST_PUK, NEW_PIN)), '9000');
    assert.deepEqual(await state.references.status('puk'), { remaining: 3, limit: 3 });
    expectSw(await host.raw('00200080'), '63C3', 'new PIN not yet verified');
    expectSw(await host.verifyPin(TEST_PIN), '63C2', 'old PIN gone');
    expectSw(await host.verifyPin(NEW_PIN), '9000');
  });

  it('a blocked PUK stays blocked', async () => {
    const { host, state } = await newTestCard({ pukRetries: 3 });
    expectSw(await host.send(resetRetry(WRONG, NEW_PIN)), '63C2');
    expectSw(await host.send(resetRetry(WRONG, NEW_PIN)), '63C1');
    expectSw(await host.send(resetRetry(WRONG, NEW_PIN)), '6983');
    const before = memoryStateFingerprint(state);
    expectSw(await host.send(resetRetry(TEST_PUK, NEW_PIN)), '6983');
    expectSw(await host.send(change(0x81, TEST_PUK, text('11223344'))), '6983');
    expectSw(await host.verifyPin(TEST_PUK, 0x81), '6983');
    assert.equal(memoryStateFingerprint(state), before);
    expectSw(await host.verifyPin(), '9000', 'the PIN itself still works');
  });

  it('RESET RETRY COUNTER refuses malformed input without consuming a PUK try', async () => {
    const { host, state } = await newTestCard();
    const before = memoryStateFingerprint(state);
    expectSw(await host.send({ ...resetRetry(TEST_PUK, NEW_PIN), p2: 0x81 }), '6A88');
    expectSw(await host.send({ ...resetRetry(TEST_PUK, NEW_PIN), p1: 0x01 }), '6A86');
    expectSw(
      await host.send({ ...resetRetry(TEST_PUK, NEW_PIN), data: padReferenceValue(TEST_PUK) }),
      '6A80',
    );
    const shortPin = concatBytes([padReferenceValue(TEST_PUK), hex('3132333435FFFFFF')]);
    expectSw(await host.send({ ins: 0x2c, p1: 0, p2: 0x80, data: shortPin }), '6A80', 'new PIN of 5 bytes');
    assert.equal(memoryStateFingerprint(state), before);
  });

  it('CHANGE REFERENCE DATA changes the PIN and the PUK', async () => {
    const { host } = await newTestCard();
    expectSw(await host.send(change(0x80, WRONG, NEW_PIN)), '63C2');
    expectSw(await host.send(change(0x80, TEST_PIN, NEW_PIN)), '9000');
    expectSw(await host.verifyPin(TEST_PIN), '63C2');
    expectSw(await host.verifyPin(NEW_PIN), '9000');
    const newPuk = text('55667788');
    expectSw(await host.send(change(0x81, TEST_PUK, newPuk)), '9000');
    expectSw(await host.send(resetRetry(TEST_PUK, TEST_PIN)), '63C2');
    expectSw(await host.send(resetRetry(newPuk, TEST_PIN)), '9000');
  });

  it('CHANGE REFERENCE DATA refuses a new value of the wrong length without consuming a try', async () => {
    const { host, state } = await newTestCard();
    const before = memoryStateFingerprint(state);
    const fiveByte = concatBytes([padReferenceValue(TEST_PIN), hex('3132333435FFFFFF')]);
    expectSw(await host.send({ ins: 0x24, p1: 0, p2: 0x80, data: fiveByte }), '6A80');
    expectSw(await host.send({ ins: 0x24, p1: 0, p2: 0x80, data: padReferenceValue(TEST_PIN) }), '6A80');
    expectSw(await host.send({ ...change(0x80, TEST_PIN, NEW_PIN), p2: 0x00 }), '6A88');
    assert.equal(memoryStateFingerprint(state), before);
  });

  it('VERIFY with P2=81 checks the PUK and reports its tries', async () => {
    const { host } = await newTestCard();
    expectSw(await host.raw('00200081'), '63C3');
    expectSw(await host.verifyPin(WRONG, 0x81), '63C2');
    expectSw(await host.verifyPin(TEST_PUK, 0x81), '9000');
    expectSw(await host.raw('00200081'), '9000');
    expectSw(await host.raw('00200080'), '63C3', 'the PUK does not verify the PIN');
  });

  it('reset forgets the verified PIN', async () => {
    const { card, host } = await newTestCard();
    expectSw(await host.verifyPin(), '9000');
    card.reset();
    expectSw(await host.raw('00200080'), '63C3');
  });
});
