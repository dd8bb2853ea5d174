/**
 * The daemon's front card answers public commands from the snapshot exactly as the real card
 * would, and sends everything else to the real card as one complete command.
 */
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey, verify } from 'node:crypto';
import fc from 'fast-check';
import { FrontCard, type RemoteCardLink } from '../../../daemon/cards/front-card.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/index.js';
import {
  provisionStandardKeys,
  buildSnapshot,
  decodeSnapshot,
  encodeSnapshot,
} from '../../../apdu/piv/index.js';
import { Host, newTestCard, swHex, TEST_PIN, toHex, type TestCard } from '../../apdu/piv/support/host.js';
import { pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';

interface Link extends RemoteCardLink {
  commands: Uint8Array[];
  resets: boolean[];
}

function linkTo(real: TestCard): Link {
  const link: Link = {
    commands: [],
    resets: [],
    async transmit(command, reset) {
      link.commands.push(command);
      link.resets.push(reset);
      if (reset) real.card.reset();
      return real.card.transmit(command);
    },
    snapshot: () => buildSnapshot(real.state),
  };
  return link;
}

const PUBLIC_COMMANDS = [
  '00A4040009A00000030800001000', // SELECT, OpenSC's 9 bytes
  '00A4040005A000000308', // SELECT, yubico-piv-tool's RID
  '00A4040007A0000001510000', // SELECT of another application: 6A82, PIV stays selected
  '00CB3FFF055C035FC10208', // CHUID with Le=08 first (OpenSC 0.23)
  '00CB3FFF055C035FC10200',
  '00CB3FFF055C035FC10700', // CCC
  '00CB3FFF055C037E00', // Discovery: wrong (short) tag list form
  '00CB3FFF035C017E00', // Discovery
  '00CB3FFF055C035FC10500', // 9A certificate: longer than 256, chained with 61xx
  '00C0000000', // GET RESPONSE of it
  '00CB3FFF055C035FC10C00', // Key History
  '00CB3FFF055C035FC11000', // a retired-key certificate not present: 6A82
  '00F8000000', // serial
  '00FD000000', // version
];

describe('front card: public answers from the snapshot, one round trip for the rest', () => {
  let real: TestCard;
  before(async () => {
    real = await newTestCard();
    await provisionStandardKeys(real.state);
  });

  it('the snapshot round-trips and carries only public containers', async () => {
    const snapshot = await buildSnapshot(real.state);
    const decoded = decodeSnapshot(encodeSnapshot(snapshot));
    assert.equal(decoded.serial, snapshot.serial);
    assert.deepEqual([...decoded.objects.keys()].sort(), [...snapshot.objects.keys()].sort());
    assert.ok(decoded.objects.has(OBJECT_TAG.CHUID));
    assert.ok(decoded.objects.has(OBJECT_TAG.CERT_PIV_AUTHENTICATION));
    assert.ok(!decoded.objects.has(OBJECT_TAG.PRINTED_INFORMATION));
    assert.throws(() => decodeSnapshot(Uint8Array.of(0x80, 0x01, 0x02)), /unknown format/);
    assert.throws(() => decodeSnapshot(Uint8Array.of(0x80, 0x05)), /card snapshot/);
  });

  it('answers enumeration exactly as the card does, with no remote command', async () => {
    const link = linkTo(real);
    const front = new FrontCard(await buildSnapshot(real.state), link);
    const viaFront = new Host(front);
    const direct = new Host(real.card);
    for (const apdu of PUBLIC_COMMANDS) {
      const a = await viaFront.raw(apdu);
      const b = await direct.raw(apdu);
      assert.equal(`${toHex(a.data)} ${swHex(a.sw)}`, `${toHex(b.data)} ${swHex(b.sw)}`, apdu);
    }
    assert.equal(link.commands.length, 0);
    assert.equal(front.counters.remote, 0);
  });

  it('VERIFY is one remote command; a chained RSA signature is one remote command, its answer chained locally', async () => {
    const link = linkTo(real);
    const front = new FrontCard(await buildSnapshot(real.state), link);
    const host = new Host(front);
    const pin = Buffer.concat([Buffer.from(TEST_PIN), Buffer.from([0xff, 0xff])]);
    assert.equal(swHex((await host.send({ ins: 0x20, p1: 0x00, p2: 0x80, data: pin })).sw), '9000');
    assert.equal(link.commands.length, 1);

    const message = Buffer.from('one round trip');
    const block = pkcs1v15Sha256Block(message, 256);
    const template = Buffer.concat([Buffer.from('7C820106820081820100', 'hex'), block]);
    const reply = await host.send({ ins: 0x87, p1: 0x07, p2: 0x9a, data: template }); // CLA 10 then 00, then GET RESPONSE
    assert.equal(swHex(reply.sw), '9000');
    assert.equal(link.commands.length, 2, 'the chain went out as one command');
    const sig = reply.data.subarray(8); // 7C 82 01 04 82 82 01 00
    const spki = (await real.state.keys.info(0x9a))!.publicKeySpki;
    const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
    assert.ok(verify('sha256', message, key, sig));

    // A PIN-protected container depends on the card's PIN state: remote.
    await host.raw('00CB3FFF055C035FC10900');
    assert.equal(link.commands.length, 3);
  });

  it('a reset is answered locally and reaches the card with the next remote command', async () => {
    const link = linkTo(real);
    const front = new FrontCard(await buildSnapshot(real.state), link);
    const host = new Host(front);
    const pin = Buffer.concat([Buffer.from(TEST_PIN), Buffer.from([0xff, 0xff])]);
    await host.send({ ins: 0x20, p1: 0x00, p2: 0x80, data: pin });
    assert.equal(swHex((await host.raw('0020008000')).sw), '9000');
    front.reset();
    assert.equal(swHex((await host.raw('00A4040009A00000030800001000')).sw), '9000');
    // The front knows the PIN is no longer verified: the empty VERIFY is answered locally.
    const afterReset = await host.raw('0020008000');
    assert.equal(swHex(afterReset.sw), '63C3');
    assert.deepEqual(link.resets, [false]);
    // The next remote command tells the card, which forgets the PIN: Printed Information is refused.
    assert.equal(swHex((await host.raw('00CB3FFF055C035FC10900')).sw), '6982');
    assert.deepEqual(link.resets, [false, true]);
  });

  it('empty VERIFYs follow the PIN state without a round trip: tries left, verified, blocked', async () => {
    const card = await newTestCard();
    const link = linkTo(card);
    const front = new FrontCard(await buildSnapshot(card.state), link);
    const host = new Host(front);
    const direct = new Host(card.card);
    const wrong = '00200080083939393939393939'.slice(0, 10) + '3939393939393939';
    const steps = [wrong, '0020008000', wrong, '0020008000', '0020008000'];
    for (const apdu of steps) {
      const a = await host.raw(apdu);
      const b = await direct.raw('0020008000');
      if (apdu === '0020008000') assert.equal(swHex(a.sw), swHex(b.sw), 'front and card agree');
    }
    const remoteVerifies = link.commands.filter((c) => c[1] === 0x20 && c.length > 5).length;
    assert.equal(link.commands.length, remoteVerifies, 'only VERIFYs with a PIN went to the card');
  });

  it('after the card changes, the next local answer comes from a fresh snapshot', async () => {
    const link = linkTo(real);
    const front = new FrontCard(await buildSnapshot(real.state), link);
    const host = new Host(front);
    const before = await host.raw('00CB3FFF055C035FC10C00');
    const history = Uint8Array.of(0xc1, 0x01, 0x01, 0xc2, 0x01, 0x00, 0xfe, 0x00);
    await real.state.objects.put(OBJECT_TAG.KEY_HISTORY, history);
    front.invalidate();
    const after = await host.raw('00CB3FFF055C035FC10C00');
    assert.notEqual(toHex(after.data), toHex(before.data));
    assert.equal(toHex(after.data), `5308${toHex(history)}`);
    assert.equal(front.counters.snapshotFetches, 1);
  });

  it('random and mutated APDUs never throw and always get a status word', async () => {
    const link = linkTo(real);
    const front = new FrontCard(await buildSnapshot(real.state), link);
    const seeds = [...PUBLIC_COMMANDS, '0020008008313233343536FFFF', '10870711020102'].map((h) =>
      Buffer.from(h, 'hex'),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.uint8Array({ maxLength: 300 }),
          fc
            .tuple(fc.constantFrom(...seeds), fc.nat(40), fc.integer({ min: 0, max: 255 }))
            .map(([s, i, b]) => {
              const m = Uint8Array.from(s);
              if (m.length) m[i % m.length] = b;
              return m;
            }),
        ),
        async (apdu) => {
          const answer = await front.transmit(apdu);
          assert.ok(answer.length >= 2);
        },
      ),
      { numRuns: 3000 },
    );
  });
});
