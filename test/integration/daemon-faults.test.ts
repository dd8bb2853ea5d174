/**
 * End to end, all parts real, faults on purpose: the daemon reaches the card server through a TCP
 * proxy that can cut the connection; the server is restarted; a second daemon on the same machine
 * (pcscd's second cardlink reader) logs into the same card.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { startTestDaemon, type TestDaemon } from '../support/daemon.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { PcscClient, type PcscCard } from '../support/pcsc-client.js';
import type { PcscdInstance } from '../support/pcscd.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import type { TcpProxy } from '../support/tcp-proxy.js';
import { toolRunner } from '../support/tool-run.js';

const PIN = '424242';
const SECOND_READER = 'cardlink Second Reader';
const SELECT_PIV = Buffer.from('00A4040009A0000003080000100000', 'hex');
const WRONG_VERIFY = Buffer.from('00200080083939393939393939', 'hex');
/** Yubico GET METADATA of the PIN: tag 06 holds (retries total, retries remaining). */
const PIN_METADATA = Buffer.from('00F7008000', 'hex');

function pinRetriesRemaining(metadata: Buffer): number {
  assert.equal(
    metadata.subarray(-2).toString('hex'),
    '9000',
    `metadata answered ${metadata.toString('hex')}`,
  );
  for (let i = 0; i + 1 < metadata.length - 2;) {
    const tag = metadata[i]!;
    const len = metadata[i + 1]!;
    if (tag === 0x06) return metadata[i + 3]!;
    i += 2 + len;
  }
  throw new Error(`no retries in metadata ${metadata.toString('hex')}`);
}

describe('daemon faults: cut connection, server restart, takeover', () => {
  let stack: DaemonStack;
  let dir: string;
  let proxy: TcpProxy;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;
  let pcsc: PcscClient;

  const { run } = toolRunner(() => ({
    env: pcscd.env,
    cwd: dir,
    output: 'stdout',
    context: () => daemon?.output().slice(-3000) ?? '',
  }));
  const signOnce = async (tag: string) => {
    await run('pkcs11-tool', [
      '--module',
      OPENSC_PKCS11,
      '--slot-index',
      '0',
      '--login',
      '--pin',
      PIN,
      '--sign',
      '--id',
      '04',
      '--mechanism',
      'ECDSA-SHA256',
      '--signature-format',
      'openssl',
      '--input-file',
      'data',
      '--output-file',
      `${tag}.sig`,
    ]);
    return run('openssl', ['dgst', '-sha256', '-verify', 'pub.pem', '-signature', `${tag}.sig`, 'data']);
  };

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-faults',
      proxy: true,
      server: { deviceRegistration: 'automatic' },
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864' }],
      pcscd: {
        cardlink: { slots: 2, friendlyName: 'cardlink Faults Reader' },
        secondCardlink: { slots: 2, friendlyName: SECOND_READER },
      },
      daemon: {
        deviceName: 'alice-laptop',
        settings: {
          reconnect: { initialDelayMs: 100, maxDelayMs: 1000 },
          timeouts: { graceSeconds: 60, commandSeconds: 20 },
        },
      },
      login: true,
    });
    ({ dir, pcscd, daemon } = stack);
    proxy = stack.proxy!;
    fs.writeFileSync(path.join(dir, 'data'), 'signed through faults');
    await run('pkcs11-tool', [
      '--module',
      OPENSC_PKCS11,
      '--slot-index',
      '0',
      '--read-object',
      '--type',
      'cert',
      '--id',
      '04',
      '--output-file',
      'cert.der',
    ]);
    await run('openssl', [
      'x509',
      '-inform',
      'der',
      '-in',
      'cert.der',
      '-noout',
      '-pubkey',
      '-out',
      'pub.pem',
    ]);
    pcsc = await PcscClient.open();
  });

  after(async () => {
    await pcsc?.close();
    await stack?.stop();
  });

  it('a cut while a wrong-PIN VERIFY is in flight costs exactly one PIN try', async () => {
    const card: PcscCard = await pcsc.connect(pcscd.readerName(0));
    try {
      assert.equal((await card.transmit(SELECT_PIV)).subarray(-2).toString('hex'), '9000');
      const before = pinRetriesRemaining(await card.transmit(PIN_METADATA));
      const accepted = proxy.acceptedConnections;
      // The next bytes the daemon sends are the VERIFY's frame: the server gets it, the answer is lost.
      const cut = proxy.armCut({ onNextClientChunk: true, forwardFirst: true });
      const answer = await card.transmit(WRONG_VERIFY);
      await cut;
      assert.equal(
        answer.toString('hex'),
        `63c${before - 1}`,
        'the retransmitted VERIFY got the recorded answer',
      );
      assert.ok(proxy.acceptedConnections > accepted, 'the daemon reconnected');
      assert.equal(pinRetriesRemaining(await card.transmit(PIN_METADATA)), before - 1);
      assert.match(stack.daemonLog(), /session resumed/);
    } finally {
      await card.disconnect();
    }
  });

  it('the server restarts mid-session: the card stays inserted and the next signature works', async () => {
    const events = await daemon.events();
    try {
      assert.match(await signOnce('before'), /Verified OK/);
      await stack.restartServer();
      // The daemon notices, cannot resume (the old process's sessions are gone), opens a new one.
      const deadline = Date.now() + 20_000;
      while (!events.seen.some((e) => e.event === 'connected') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        events.seen.some((e) => e.event === 'disconnected'),
        JSON.stringify(events.seen),
      );
      assert.ok(
        events.seen.some((e) => e.event === 'connected'),
        JSON.stringify(events.seen),
      );
      assert.match(await signOnce('after'), /Verified OK/);
      assert.deepEqual(
        events.seen.filter((e) => e.event === 'card-removed'),
        [],
        'the card never left the reader',
      );
    } finally {
      await events.close();
    }
  });

  it('a second daemon logging into the card takes it over; the first one says by whom', async () => {
    const second = await startTestDaemon({
      ...stack.daemonOptions(path.join(dir, 'daemon-b'), 'alice-desktop'),
      secondReader: { friendlyName: SECOND_READER },
    });
    try {
      await second.login('alice');
      await second.waitForCards((cards) => cards.some((c) => c.state === 'inserted'));
      const [mine] = await daemon.waitForCards((cards) => cards[0]?.state === 'taken-over');
      assert.equal(mine!.takenOverBy, 'alice-desktop');
      await waitForCardAbsent(pcscd.readerName(0), 10_000);
      const status = await daemon.status();
      assert.equal(status.cards[0]!.state, 'taken-over');
      assert.equal(status.cards[0]!.takenOverBy, 'alice-desktop');
      // The daemon logs who took the card (the TAKEN_OVER frame's byDeviceName), once. The log file
      // is written asynchronously: wait for the line.
      const takenOverLines = () =>
        stack
          .daemonLog()
          .split('\n')
          .filter((line) => line.includes('"card taken over"'))
          .map((line) => (JSON.parse(line) as { by?: string }).by);
      const logDeadline = Date.now() + 10_000;
      while (takenOverLines().length === 0 && Date.now() < logDeadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(takenOverLines(), ['alice-desktop'], stack.daemonLog());
      const secondReader = (await pcsc.readerNames()).find((n) => n.startsWith(SECOND_READER));
      assert.ok(secondReader, 'pcscd lists the second reader');
      await waitForCardPresent(secondReader, 10_000);
    } finally {
      await second.stop();
    }
  });
});
