/**
 * The daemon on vsmartcard's vpcd instead of our driver (reader.transport "vpcd"), all parts real:
 * the test IdP, a card server with two cards of alice's, `cardlink daemon` listening on a loopback
 * port pair, then a private pcscd with Debian 12's vpcd reader in reversed mode connecting to it.
 * OpenSC sees both cards, one per vpcd slot, and passes its own PKCS#11 self-test with a login on
 * each; a restarted pcscd finds the cards again; logging out leaves pcscd running with the inert
 * placeholder in both slots.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { cardlinkCli, type TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { startPcscd, type PcscdInstance } from '../support/pcscd.js';
import { toolRunner } from '../support/tool-run.js';

const PINS = ['246810', '135791'];

describe("the daemon serves a user's two cards through Debian's vpcd (reversed mode, loopback)", () => {
  let stack: DaemonStack;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;
  let cardIds: readonly string[];

  const tools = toolRunner(() => ({ env: pcscd.env, cwd: stack.dir }));
  const run = tools.status;
  const p11 = (args: string[]) => run('pkcs11-tool', ['--module', OPENSC_PKCS11, ...args]);

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-vpcd',
      cards: PINS.map((pin, i) => ({ label: `alice card ${i + 1}`, pin, puk: '97531864' })),
      pcscd: { cardlink: false },
      vpcd: true,
      daemon: { deviceName: 'alice-vpcd' },
      login: true,
    });
    ({ pcscd, daemon, cardIds } = stack);
  });

  after(async () => {
    const running = pcscd?.running();
    // The pcscd of the restart test is not the stack's: it too stops before the daemon.
    await pcscd?.stop();
    await stack?.stop();
    assert.ok(running !== false, 'pcscd survived the tests');
  });

  it('the daemon puts one card in each of vpcd\'s slots, "Virtual PCD 00 00" and "00 01"', async () => {
    const cards = await daemon.cards();
    assert.deepEqual(cards.map((c) => [c.slot, c.state, c.readerName]).sort(), [
      [0, 'inserted', pcscd.vpcdReaderName(0)],
      [1, 'inserted', pcscd.vpcdReaderName(1)],
    ]);
    assert.deepEqual(new Set(cards.map((c) => c.cardId)), new Set(cardIds));
  });

  it('the vpcd side runs with TCP_QUICKACK (no warning that it is missing)', () => {
    const log = stack.daemonLog();
    assert.match(log, /"message":"vpcd connected"/);
    assert.doesNotMatch(log, /TCP_QUICKACK is not available/);
  });

  it('pkcs11-tool sees two PIV tokens, one in each vpcd slot', async () => {
    const { code, out } = await p11(['--list-token-slots']);
    assert.equal(code, 0, out);
    assert.equal((out.match(/token label/g) ?? []).length, 2, out);
    assert.ok(out.includes(pcscd.vpcdReaderName(0)) && out.includes(pcscd.vpcdReaderName(1)), out);
  });

  it('pkcs11-tool --test --login passes on each card', async () => {
    const cards = await daemon.cards();
    for (const card of cards) {
      const pin = PINS[cardIds.indexOf(card.cardId)]!;
      const { code, out } = await p11(['--slot-index', String(card.slot), '--login', '--pin', pin, '--test']);
      assert.equal(code, 0, `slot ${card.slot}:\n${out}\n${daemon.output().slice(-2000)}`);
      assert.match(out, /No errors/);
      assert.doesNotMatch(out, /ERR|failed/);
    }
  });

  it('after a pcscd restart the new vpcd connects again and OpenSC sees both cards', async () => {
    const settings = JSON.parse(fs.readFileSync(daemon.configFile, 'utf8')) as {
      reader: { vpcdPort: number };
    };
    const connectedBefore = (stack.daemonLog().match(/"message":"vpcd connected"/g) ?? []).length;
    await pcscd.stop();
    pcscd = await startPcscd({ cardlink: false, vpcd: { port: settings.reader.vpcdPort } });
    const { code, out } = await p11(['--list-token-slots']);
    assert.equal(code, 0, out);
    assert.equal((out.match(/token label/g) ?? []).length, 2, out);
    // The log file is written asynchronously: wait for the lines, then count them exactly.
    const connected = () => (stack.daemonLog().match(/"message":"vpcd connected"/g) ?? []).length;
    for (const deadline = Date.now() + 5000; connected() < connectedBefore + 2 && Date.now() < deadline;)
      await new Promise((r) => setTimeout(r, 50));
    assert.equal(connected(), connectedBefore + 2, 'one new connection per slot');
    assert.equal((await daemon.cards()).filter((c) => c.state === 'inserted').length, 2);
  });

  it('logout takes both cards out: pcscd keeps running and OpenSC finds no token', async () => {
    const logout = cardlinkCli(['logout', '--config', daemon.configFile]);
    const code = await new Promise((resolve) => logout.once('exit', resolve));
    assert.equal(code, 0);
    await daemon.waitForCards((cards) => cards.every((c) => c.state !== 'inserted'));
    // pcscd re-reads a slot's ATR when it powers the idle card up again; OpenSC connects anew.
    const { out } = await p11(['--list-token-slots']);
    assert.equal((out.match(/token label/g) ?? []).length, 0, out);
    assert.ok(pcscd.running(), 'pcscd still runs after the cards went out');
  });
});
