/**
 * End to end, all parts real: what a program using the card sees when the card server goes away.
 * The daemon reaches the server through a TCP proxy that refuses connections (the server is
 * unreachable) or holds every byte back (the server is slow). A command waiting for the server must
 * get an ISO status in bounded time: 6F00 when the grace period ends and the card leaves the reader,
 * or 6F00 at `timeouts.commandSeconds` while the card stays; never a hang.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { PcscClient } from '../support/pcsc-client.js';
import type { TcpProxy } from '../support/tcp-proxy.js';

const SELECT_PIV = Buffer.from('00A4040009A0000003080000100000', 'hex');
/** Yubico GET METADATA of the PIN: its retry counter is card state, so the server answers it. */
const PIN_METADATA = Buffer.from('00F7008000', 'hex');
const GRACE_SECONDS = 3;
const COMMAND_SECONDS = 8;
/** Longer than the command timeout: the server's answer comes too late to be used. */
const SLOW_SERVER_ONE_WAY_MS = 15_000;

const sw = (answer: Buffer) => answer.subarray(-2).toString('hex');

describe('daemon: a card server that is unreachable or does not answer', () => {
  let stack: DaemonStack;
  let proxy: TcpProxy;
  let pcsc: PcscClient;

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-outage',
      proxy: true,
      cards: [{ label: 'alice card', pin: '424242', puk: '97531864' }],
      pcscd: { cardlink: { slots: 1, friendlyName: 'cardlink Outage Reader' } },
      daemon: {
        deviceName: 'alice-laptop',
        settings: {
          reconnect: { initialDelayMs: 100, maxDelayMs: 400 },
          timeouts: { graceSeconds: GRACE_SECONDS, commandSeconds: COMMAND_SECONDS },
        },
      },
      login: true,
    });
    proxy = stack.proxy!;
    pcsc = await PcscClient.open();
  });

  after(async () => {
    await pcsc?.close();
    await stack?.stop();
  });

  it('past the grace period the card leaves, the waiting command gets 6F00 then, and the card returns with the server', async () => {
    const events = await stack.daemon.events();
    const card = await pcsc.connect(stack.pcscd.readerName(0));
    try {
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000');
      assert.equal(sw(await card.transmit(PIN_METADATA)), '9000');
      proxy.pause();
      proxy.cutAll();
      const started = Date.now();
      const answer = await card.transmit(PIN_METADATA);
      const waitedMs = Date.now() - started;
      assert.equal(answer.toString('hex'), '6f00');
      // It waited for the server while the grace period ran, and was answered when it ended,
      // well before its own timeout.
      assert.ok(waitedMs >= (GRACE_SECONDS * 1000) / 2, `answered after ${waitedMs} ms`);
      assert.ok(waitedMs < COMMAND_SECONDS * 1000, `answered after ${waitedMs} ms`);
    } finally {
      await card.disconnect().catch(() => undefined);
    }
    try {
      await waitForCardAbsent(stack.pcscd.readerName(0), 10_000);
      const [status] = await stack.daemon.cards();
      assert.equal(status!.state, 'removed');
      assert.ok(
        events.seen.some((e) => e.event === 'card-removed'),
        JSON.stringify(events.seen),
      );
      assert.match(stack.daemonLog(), /card removed.*past the grace period/);

      proxy.resume();
      await waitForCardPresent(stack.pcscd.readerName(0), 20_000);
      const again = await pcsc.connect(stack.pcscd.readerName(0));
      try {
        assert.equal(sw(await again.transmit(SELECT_PIV)), '9000');
        assert.equal(sw(await again.transmit(PIN_METADATA)), '9000');
      } finally {
        await again.disconnect();
      }
    } finally {
      proxy.resume();
      await events.close();
    }
  });

  it('a command the server does not answer in time gets 6F00 at commandSeconds; the card stays', async () => {
    const card = await pcsc.connect(stack.pcscd.readerName(0));
    try {
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000');
      proxy.setDelay(SLOW_SERVER_ONE_WAY_MS);
      const started = Date.now();
      const answer = await card.transmit(PIN_METADATA);
      const waitedMs = Date.now() - started;
      assert.equal(answer.toString('hex'), '6f00');
      assert.ok(waitedMs >= COMMAND_SECONDS * 1000 - 100, `answered after ${waitedMs} ms`);
      assert.ok(waitedMs < SLOW_SERVER_ONE_WAY_MS, `answered after ${waitedMs} ms`);
      const [status] = await stack.daemon.cards();
      assert.equal(status!.state, 'inserted', 'a slow answer is not an outage: the card stays');
      // The card still answers what it can answer locally.
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000');
    } finally {
      proxy.setDelay(0);
      await card.disconnect();
    }
  });
});
