import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { encodeCommandApdu, encodeTlv } from '../../../apdu/codec/index.js';
import { padReferenceValue, buildSnapshot } from '../../../apdu/piv/index.js';
import type { PivCardState } from '../../../apdu/piv/index.js';
import { openPersistentCardState } from '../../../server/cards/index.js';
import { KeyProviderError, type KekProvider } from '../../../server/keys/kek-provider.js';
import { findRecorded, referenceStatus, type Storage } from '../../../server/storage/index.js';
import { expectSw, hex, swHex, toHex } from '../../apdu/piv/support/host.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';
import {
  auditOf,
  CARD_MGMT_KEY,
  CARD_PIN,
  createTestCard,
  openSession,
  pinBytes,
} from './support/card-fixture.js';

const verifyApdu = (pin: string) =>
  encodeCommandApdu({ cla: 0, ins: 0x20, p1: 0, p2: 0x80, data: padReferenceValue(pinBytes(pin)) });
const generateApdu = (slot: number, algorithmId: number) =>
  encodeCommandApdu({
    cla: 0,
    ins: 0x47,
    p1: 0,
    p2: slot,
    data: hex(`AC03 8001 ${algorithmId.toString(16)}`),
    ne: 256,
  });
const signApdu = (slot: number, algorithmId: number, input: Uint8Array) =>
  encodeCommandApdu({
    cla: 0,
    ins: 0x87,
    p1: algorithmId,
    p2: slot,
    data: encodeTlv(0x7c, [encodeTlv(0x82, new Uint8Array(0)), encodeTlv(0x81, input)]),
    ne: 256,
  });
const sw = (response: Uint8Array) =>
  swHex((response[response.length - 2]! << 8) | response[response.length - 1]!);

/** The provider with an HMAC (PIN comparison) that fails while `failing.on` is set. */
function withFailingHmac(provider: KekProvider, failing: { on: boolean }): KekProvider {
  return new Proxy(provider, {
    get(target, prop) {
      if (prop === 'hmac') {
        return (data: Uint8Array, version?: number) => {
          if (failing.on) return Promise.reject(new KeyProviderError('injected HSM failure'));
          return target.hmac(data, version);
        };
      }
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

for (const kind of BACKENDS) {
  describe(`exactly-once commands on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    it('serves a snapshot asked for while a command runs, after that command', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      const order: string[] = [];
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      let started!: () => void;
      const commandStarted = new Promise<void>((resolve) => (started = resolve));
      const command = s.state.runCommand(1, async (view) => {
        order.push('command start');
        started();
        await gate;
        const response = await s.card.transmit(verifyApdu('999999'), view); // a wrong PIN: one try gone
        order.push('command end');
        return response;
      });
      const snapshot = s.state.exclusive(async (view) => {
        order.push('snapshot start');
        return buildSnapshot(view);
      });
      // Wait for the command to be inside its unit (a loaded machine may take long to get there),
      // then give the snapshot time it would need to overtake it.
      await commandStarted;
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(order, ['command start'], 'the snapshot waits for the running command');
      release();
      assert.equal(sw((await command).response), '63C2');
      const taken = await snapshot;
      assert.deepEqual(order, ['command start', 'command end', 'snapshot start']);
      assert.equal(taken.pinRetries?.remaining, 2, 'the snapshot sees the finished command');
    });

    it('answers a replayed wrong VERIFY from the record: one try consumed, the card not run again', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      let runs = 0;
      const command = (view: PivCardState) => {
        runs++;
        return s.card.transmit(verifyApdu('999999'), view);
      };
      const first = await s.state.runCommand(7, command);
      assert.equal(sw(first.response), '63C2');
      assert.deepEqual([first.replayed, first.recorded], [false, true]);
      const again = await s.state.runCommand(7, command);
      assert.deepEqual([again.replayed, toHex(again.response)], [true, toHex(first.response)]);
      assert.equal(runs, 1);
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 2);

      // A reconnect to another server process (a new state of the same session) replays too.
      const reopened = await openPersistentCardState({
        storage,
        kek,
        cardId: created.cardId,
        sessionId: s.sessionId,
        epoch: s.epoch,
        actor: 'user:test',
      });
      const third = await reopened.runCommand(7, command);
      assert.deepEqual([third.replayed, sw(third.response), runs], [true, '63C2', 1]);
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 2);
      assert.equal((await auditOf(storage, created.cardId, 'pin.failed')).length, 1);
      reopened.dispose();
      s.state.dispose();
    });

    it('refuses a recorded sequence number claimed as a first attempt, and changes nothing', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      const command = (view: PivCardState) => s.card.transmit(verifyApdu('999999'), view);
      const first = await s.state.runCommand(3, command, { firstAttempt: true });
      assert.deepEqual([sw(first.response), first.replayed], ['63C2', false]);
      // Skipping the lookup is only an optimisation: the record's primary key still refuses a rerun.
      await assert.rejects(s.state.runCommand(3, command, { firstAttempt: true }), {
        code: 'ERR_COMMAND_ALREADY_RECORDED',
      });
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 2);
      assert.equal((await auditOf(storage, created.cardId, 'pin.failed')).length, 1);
      const replay = await s.state.runCommand(3, command);
      assert.deepEqual([replay.replayed, sw(replay.response)], [true, '63C2']);
      s.state.dispose();
    });

    it('does not generate or sign twice for a replayed GENERATE or GENERAL AUTHENTICATE', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      expectSw(await s.host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
      const seq = s.nextSeq();
      const gen = await s.state.runCommand(seq, (view) => s.card.transmit(generateApdu(0x9e, 0x11), view));
      assert.equal(sw(gen.response), '9000');
      const replay = await s.state.runCommand(seq, (view) => s.card.transmit(generateApdu(0x9e, 0x11), view));
      assert.deepEqual([replay.replayed, toHex(replay.response)], [true, toHex(gen.response)]);
      assert.equal((await auditOf(storage, created.cardId, 'key.generated')).length, 1);
      const info = await s.state.keys.info(0x9e);
      assert.ok(
        toHex(gen.response).includes(toHex(info!.publicKeySpki.subarray(-65))),
        'the stored key is the first one',
      );

      const input = randomBytes(32);
      const signSeq = s.nextSeq();
      const signed = await s.state.runCommand(signSeq, (view) =>
        s.card.transmit(signApdu(0x9e, 0x11, input), view),
      );
      assert.equal(sw(signed.response), '9000');
      const used = (await auditOf(storage, created.cardId, 'key.used')).length;
      const resent = await s.state.runCommand(signSeq, (view) =>
        s.card.transmit(signApdu(0x9e, 0x11, input), view),
      );
      assert.deepEqual([resent.replayed, toHex(resent.response)], [true, toHex(signed.response)]);
      assert.equal((await auditOf(storage, created.cardId, 'key.used')).length, used);
      s.state.dispose();
    });

    it('records read-only commands only when asked to', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      const getChuid = (view: PivCardState) => s.card.transmit(hex('00CB3FFF 05 5C035FC102 00'), view);
      const plain = await s.state.runCommand(100, getChuid);
      assert.deepEqual([sw(plain.response), plain.recorded], ['9000', false]);
      assert.equal(await findRecorded(storage, s.sessionId, 100), undefined);
      const kept = await s.state.runCommand(101, getChuid, { recordAlways: true });
      assert.equal(kept.recorded, true);
      assert.equal(toHex((await findRecorded(storage, s.sessionId, 101))!), toHex(kept.response));
      s.state.dispose();
    });

    it('keeps a try consumed when the comparison fails, and replays the provisional answer', async () => {
      const created = await createTestCard(storage, kek);
      const failing = { on: false };
      const s = await openSession(storage, withFailingHmac(kek, failing), created.cardId);
      failing.on = true;
      await assert.rejects(
        s.state.runCommand(50, (view) => s.card.transmit(verifyApdu(CARD_PIN), view)),
        (e: Error & { code?: string }) => e.code === 'ERR_KEY_PROVIDER',
      );
      failing.on = false;
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 2, 'the try counted');
      const replay = await s.state.runCommand(50, (view) => s.card.transmit(verifyApdu(CARD_PIN), view));
      assert.deepEqual([replay.replayed, sw(replay.response)], [true, '63C2']);
      assert.equal(
        (await referenceStatus(storage, created.cardId, 'pin')).remaining,
        2,
        'not consumed again',
      );
      const fresh = await s.state.runCommand(51, (view) => s.card.transmit(verifyApdu(CARD_PIN), view));
      assert.deepEqual([fresh.replayed, sw(fresh.response)], [false, '9000']);
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 3);
      s.state.dispose();
    });

    it('commits all of a command or nothing', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      const before = await s.state.objects.get(0x5fc108);
      await assert.rejects(
        s.state.runCommand(60, async (view) => {
          await view.keys.generate(0x85, 'ECCP256', 'never');
          await view.objects.put(0x5fc108, hex('BC00'));
          throw new Error('the command failed after two writes');
        }),
        /failed after two writes/,
      );
      assert.equal(await s.state.keys.info(0x85), undefined, 'no key left behind');
      assert.deepEqual(await s.state.objects.get(0x5fc108), before);
      assert.equal((await auditOf(storage, created.cardId, 'key.generated')).length, 0);
      assert.equal(await findRecorded(storage, s.sessionId, 60), undefined);

      // The same writes in a command that succeeds land together, with the record.
      const ok = await s.state.runCommand(61, async (view) => {
        await view.keys.generate(0x85, 'ECCP256', 'never');
        await view.objects.put(0x5fc108, hex('BC00'));
        return hex('9000');
      });
      assert.equal(ok.recorded, true);
      assert.ok(await s.state.keys.info(0x85));
      assert.equal(toHex((await s.state.objects.get(0x5fc108))!), 'BC00');
      s.state.dispose();
    });

    it('refuses store calls from outside a running command', async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      const running = s.state.runCommand(70, async (view) => {
        await view.objects.put(0x5fc108, hex('BC00'));
        await gate;
        return hex('9000');
      });
      await new Promise((r) => setTimeout(r, 20));
      await assert.rejects(
        s.state.objects.get(0x5fc108),
        (e: Error & { code?: string }) => e.code === 'ERR_INTERNAL',
      );
      release();
      assert.equal((await running).recorded, true);
      assert.equal(toHex((await s.state.objects.get(0x5fc108))!), 'BC00');
      s.state.dispose();
    });

    it("refuses a command's view once the command has ended", async () => {
      const created = await createTestCard(storage, kek);
      const s = await openSession(storage, kek, created.cardId);
      const before = await s.state.objects.get(0x5fc108);
      let kept!: PivCardState;
      await s.state.runCommand(80, async (view) => {
        kept = view;
        return hex('9000');
      });
      // Work a command left running must not write outside the command's transaction.
      await assert.rejects(
        kept.objects.put(0x5fc108, hex('BC00')),
        (e: Error & { code?: string }) => e.code === 'ERR_INTERNAL',
      );
      assert.deepEqual(await s.state.objects.get(0x5fc108), before, 'nothing written');
      s.state.dispose();
    });
  });
}
