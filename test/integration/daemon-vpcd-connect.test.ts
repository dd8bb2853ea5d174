/**
 * The daemon on vsmartcard's vpcd in its normal mode (reader.vpcdMode "connect"), the way Windows'
 * BixVReader works: vpcd, inside a private pcscd (`DEVICENAME /dev/null:<port>`), listens; the daemon
 * connects to it, one connection per slot, to 127.0.0.1. All parts real: the test IdP, a card server
 * with two cards of alice's, Debian 12's vpcd. OpenSC passes its PKCS#11 self-test with a login on
 * each card; when pcscd goes away and comes back the daemon connects again by itself.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';
import { toolRunner } from '../support/tool-run.js';

const PINS = ['246810', '135791'];
const CONNECTED = /"message":"vpcd connected"/g;

/** /proc/net/tcp's "address:port" for 127.0.0.1 or 0.0.0.0 and a port (little-endian host). */
const procEndpoint = (address: '127.0.0.1' | '0.0.0.0', port: number) =>
  `${address === '127.0.0.1' ? '0100007F' : '00000000'}:${port.toString(16).toUpperCase().padStart(4, '0')}`;
/** Lines of /proc/net/tcp: [local, remote, state] (state 0A = LISTEN, 01 = ESTABLISHED). */
const tcpTable = () =>
  fs
    .readFileSync('/proc/net/tcp', 'latin1')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((c) => c.length > 3)
    .map((c) => ({ local: c[1]!, remote: c[2]!, state: c[3]! }));

describe("the daemon connects to Debian's vpcd in normal mode (as to BixVReader) and serves two cards", () => {
  let stack: DaemonStack;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;
  let cardIds: readonly string[];
  let port: number;

  const tools = toolRunner(() => ({ env: pcscd.env, cwd: stack.dir }));
  const run = tools.status;
  const p11 = (args: string[]) => run('pkcs11-tool', ['--module', OPENSC_PKCS11, ...args]);
  const connected = () => (stack.daemonLog().match(CONNECTED) ?? []).length;

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-vpcd-connect',
      cards: PINS.map((pin, i) => ({ label: `alice card ${i + 1}`, pin, puk: '97531864' })),
      pcscd: { cardlink: false },
      vpcd: true,
      vpcdMode: 'connect',
      daemon: { deviceName: 'alice-vpcd-connect' },
      login: true,
    });
    ({ pcscd, daemon, cardIds } = stack);
    const settings = JSON.parse(fs.readFileSync(daemon.configFile, 'utf8')) as {
      reader: { vpcdPort: number; vpcdMode: string };
    };
    assert.equal(settings.reader.vpcdMode, 'connect');
    port = settings.reader.vpcdPort;
  });

  after(async () => {
    await stack?.stop();
    await pcscd?.stop();
  });

  it('vpcd listens (on every interface: vpcd.c binds INADDR_ANY) and the daemon connects to 127.0.0.1', () => {
    const table = tcpTable();
    for (const p of [port, port + 1]) {
      // What vpcd 0.8 does with "/dev/null:<port>"; docs/reader-vpcd.md says how to fence it in.
      assert.ok(
        table.some((t) => t.state === '0A' && t.local === procEndpoint('0.0.0.0', p)),
        `vpcd listens on ${p}`,
      );
      assert.ok(
        table.some((t) => t.state === '01' && t.remote === procEndpoint('127.0.0.1', p)),
        `an established connection to 127.0.0.1:${p}`,
      );
    }
    assert.doesNotMatch(stack.daemonLog(), /TCP_QUICKACK is not available/);
    // pcscd (root) owns vpcd's end: the daemon's check of the listener's owner lets it through.
    assert.doesNotMatch(stack.daemonLog(), /vpcd connection refused/);
  });

  it('the daemon puts one card in each of vpcd\'s slots, "Virtual PCD 00 00" and "00 01"', async () => {
    const cards = await daemon.cards();
    assert.deepEqual(cards.map((c) => [c.slot, c.state, c.readerName]).sort(), [
      [0, 'inserted', pcscd.vpcdReaderName(0)],
      [1, 'inserted', pcscd.vpcdReaderName(1)],
    ]);
    assert.deepEqual(new Set(cards.map((c) => c.cardId)), new Set(cardIds));
  });

  it('pkcs11-tool sees two tokens and --test --login passes on each card', async () => {
    const list = await p11(['--list-token-slots']);
    assert.equal(list.code, 0, list.out);
    assert.equal((list.out.match(/token label/g) ?? []).length, 2, list.out);
    for (const card of await daemon.cards()) {
      const pin = PINS[cardIds.indexOf(card.cardId)]!;
      const { code, out } = await p11(['--slot-index', String(card.slot), '--login', '--pin', pin, '--test']);
      assert.equal(code, 0, `slot ${card.slot}:\n${out}\n${daemon.output().slice(-2000)}`);
      assert.match(out, /No errors/);
      assert.doesNotMatch(out, /ERR|failed/);
    }
  });

  it('pcscd stops and starts again: the daemon connects again by itself and OpenSC sees both cards', async () => {
    const before = connected();
    await pcscd.stop();
    // Gone for a while: the daemon keeps trying (its pause grows) and says so once per slot.
    await new Promise((r) => setTimeout(r, 1500));
    assert.match(stack.daemonLog(), /vpcd reader not reachable; connecting again/);
    assert.ok(daemon.child.exitCode === null, 'the daemon keeps running without its reader');
    pcscd = await startPcscd({ cardlink: false, vpcd: { port, listen: true } });
    for (const deadline = Date.now() + 15_000; connected() < before + 2 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(connected(), before + 2, 'one new connection per slot');
    let out = '';
    for (const deadline = Date.now() + 10_000; Date.now() < deadline;) {
      out = (await p11(['--list-token-slots'])).out;
      if ((out.match(/token label/g) ?? []).length === 2) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal((out.match(/token label/g) ?? []).length, 2, out);
  });
});
