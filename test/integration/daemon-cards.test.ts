/**
 * End to end, all parts real: the test IdP, a card server on SQLite, pcscd with the cardlink
 * reader, `cardlink daemon` and a scripted `cardlink login --device-code`. One user with two cards
 * gets both in two slots; OpenSC lists them and signs with RSA and EC; openssl verifies.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardAbsent, waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { cardlinkCli, type TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import type { PcscdInstance } from '../support/pcscd.js';
import { toolRunner } from '../support/tool-run.js';
import { DEVICE_KEY_KEYRING_MARKER, KEYRING_SERVICE } from '../../daemon/device/device-key.js';

const PINS = ['246810', '135791'];

describe("the daemon puts a user's two cards into two reader slots", () => {
  let stack: DaemonStack;
  let dir: string;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;
  let cardIds: readonly string[];

  const { run, p11 } = toolRunner(() => ({
    env: pcscd.env,
    cwd: dir,
    output: 'stdout',
    context: () => daemon?.output().slice(-3000) ?? '',
  }));
  /** The daemon's log lines so far, parsed. */
  const logEntries = () =>
    stack
      .daemonLog()
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  /**
   * The `card` of each log line with `message`, once the log has at least `count` of them (the log
   * file is written asynchronously).
   */
  const cardsLogged = async (message: string, count: number): Promise<unknown[]> => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const cards = logEntries()
        .filter((e) => e['message'] === message)
        .map((e) => e['card']);
      if (cards.length >= count || Date.now() > deadline) return cards.sort();
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  /** `bin/cardlink <args> --config <the daemon's>`: its exit code and stdout. */
  const cli = async (...args: string[]): Promise<{ code: unknown; stdout: string }> => {
    const child = cardlinkCli([...args, '--config', daemon.configFile]);
    let stdout = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    const code = await new Promise((resolve) => child.once('exit', resolve));
    return { code, stdout };
  };

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-cards',
      cards: PINS.map((pin, i) => ({ label: `alice card ${i + 1}`, pin, puk: '97531864' })),
      pcscd: { cardlink: { slots: 4, friendlyName: 'cardlink Daemon Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      keyring: true,
      login: true,
    });
    ({ dir, pcscd, daemon, cardIds } = stack);
  });

  after(async () => {
    await stack?.stop();
  });

  it('`cardlink status --json` shows the session, the user and both cards in slots 0 and 1', async () => {
    const { code, stdout: text } = await cli('status', '--json');
    assert.equal(code, 0, text);
    const status = JSON.parse(text) as {
      state: string;
      user: string;
      deviceStatus: string;
      serverRoundTripMs: number;
      cards: { cardId: string; slot: number; state: string; readerName: string }[];
    };
    assert.equal(status.state, 'connected');
    assert.equal(status.user, 'alice');
    assert.equal(status.deviceStatus, 'approved');
    assert.ok(status.serverRoundTripMs > 0, `round trip measured: ${status.serverRoundTripMs}`);
    assert.deepEqual(
      status.cards.map((c) => [c.slot, c.state]),
      [
        [0, 'inserted'],
        [1, 'inserted'],
      ],
    );
    assert.deepEqual(new Set(status.cards.map((c) => c.cardId)), new Set(cardIds));
    assert.equal(status.cards[0]!.readerName, pcscd.readerName(0));
  });

  it('the log has one "card inserted" line per card, naming the card and its slot', async () => {
    await cardsLogged('card inserted', cardIds.length);
    const inserted = logEntries().filter((entry) => entry['message'] === 'card inserted');
    assert.deepEqual(
      inserted.map((entry) => `${String(entry['card'])} in ${String(entry['slot'])}`).sort(),
      cardIds.map((id, slot) => `${id} in ${slot}`).sort(),
      stack.daemonLog(),
    );
  });

  it('the device key that proved this device to the server is in the desktop keyring, not in a file', async () => {
    const stateDir = path.join(stack.daemonDir, 'state');
    const marker = JSON.parse(fs.readFileSync(path.join(stateDir, DEVICE_KEY_KEYRING_MARKER), 'utf8')) as {
      account: string;
    };
    assert.ok(!fs.readdirSync(stateDir).some((name) => name.endsWith('.pem')), 'no key file');
    const created = logEntries().find((entry) => entry['message'] === 'device key created');
    assert.equal(created?.['store'], 'keyring', daemon.output().slice(-2000));
    assert.equal(created?.['location'], `keyring: ${KEYRING_SERVICE} / ${marker.account}`);
  });

  it('`cardlink status` and `cardlink cards` say where each card is, in words', async () => {
    const status = await cli('status');
    assert.equal(status.code, 0, status.stdout);
    assert.match(status.stdout, /^state: connected$/m);
    assert.match(status.stdout, /^user: alice$/m);
    const cards = await cli('cards');
    assert.equal(cards.code, 0, cards.stdout);
    for (const [i, cardId] of cardIds.entries())
      assert.ok(
        cards.stdout.includes(`alice card ${i + 1} (${cardId}): in "${pcscd.readerName(i)}"`),
        cards.stdout,
      );
  });

  it('`cardlink diag` writes a 0600 bundle with the daemon, reader, server and log, and no token or key', async () => {
    // A token this test knows, handed over as the tray would: the bundle must not hold it.
    const token = (await stack.idp.login()).accessToken;
    await daemon.handOver(token);
    const file = path.join(dir, 'diag.json');
    const { code, stdout } = await cli('diag', '--output', file);
    assert.equal(code, 0, stdout);
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const text = fs.readFileSync(file, 'utf8');
    const bundle = JSON.parse(text) as {
      versions: Record<string, string>;
      daemon: { running: boolean; status: { state: string; cards: unknown[] } };
      reader: { driverSocketPresent: boolean };
      server: { reachable: boolean; medianMs: number };
      deviceKey: { store: string };
      log: string[];
    };
    assert.equal(bundle.daemon.running, true);
    assert.equal(bundle.daemon.status.state, 'connected');
    assert.equal(bundle.daemon.status.cards.length, 2);
    assert.equal(bundle.reader.driverSocketPresent, true);
    assert.equal(bundle.server.reachable, true);
    assert.ok(bundle.server.medianMs > 0);
    assert.equal(bundle.deviceKey.store, 'keyring');
    assert.ok(bundle.log.length > 0);
    assert.match(bundle.versions['node']!, /^v\d+/);
    for (const part of token.split('.')) assert.ok(!text.includes(part), 'no part of the access token');
    assert.doesNotMatch(text, /eyJ[\w-]{10,}\.eyJ[\w-]{10,}/, 'no JWT at all');
    assert.doesNotMatch(text, /PRIVATE KEY/);
  });

  it('pkcs11-tool sees two PIV tokens', async () => {
    const out = await p11(['--list-token-slots']);
    assert.equal((out.match(/token label/g) ?? []).length, 2, out);
    assert.ok(out.includes(pcscd.readerName(0)) && out.includes(pcscd.readerName(1)), out);
  });

  it('signs with RSA-2048 on one card and P-256 on the other; openssl verifies both', async () => {
    const cards = await daemon.cards();
    fs.writeFileSync(path.join(dir, 'data'), 'two cards, one daemon');
    const cases = [
      { slot: 0, id: '01', mechanism: 'SHA256-RSA-PKCS', extra: [] as string[] },
      { slot: 1, id: '04', mechanism: 'ECDSA-SHA256', extra: ['--signature-format', 'openssl'] },
    ];
    for (const c of cases) {
      const card = cards.find((x) => x.slot === c.slot)!;
      const pin = PINS[cardIds.indexOf(card.cardId)]!;
      const tag = `s${c.slot}`;
      await p11([
        '--slot-index',
        String(c.slot),
        '--read-object',
        '--type',
        'cert',
        '--id',
        c.id,
        '--output-file',
        `${tag}.der`,
      ]);
      await run('openssl', [
        'x509',
        '-inform',
        'der',
        '-in',
        `${tag}.der`,
        '-noout',
        '-pubkey',
        '-out',
        `${tag}.pem`,
      ]);
      await p11([
        '--slot-index',
        String(c.slot),
        '--login',
        '--pin',
        pin,
        '--sign',
        '--id',
        c.id,
        '--mechanism',
        c.mechanism,
        ...c.extra,
        '--input-file',
        'data',
        '--output-file',
        `${tag}.sig`,
      ]);
      const verified = await run('openssl', [
        'dgst',
        '-sha256',
        '-verify',
        `${tag}.pem`,
        '-signature',
        `${tag}.sig`,
        'data',
      ]);
      assert.match(verified, /Verified OK/);
    }
  });

  it('disconnect takes both cards out and says offline; connect brings them back', async () => {
    const control = await daemon.control();
    try {
      await control.request('disconnect');
      await waitForCardAbsent(pcscd.readerName(0), 10_000);
      await waitForCardAbsent(pcscd.readerName(1), 10_000);
      const offline = await control.request('status');
      assert.equal(offline.state, 'offline');
      assert.deepEqual(offline.cards, []);
      await control.request('connect');
    } finally {
      await control.close();
    }
    await daemon.waitForCards((cards) => cards.filter((c) => c.state === 'inserted').length === 2);
    await waitForCardPresent(pcscd.readerName(0), 10_000);
    assert.equal((await daemon.status()).state, 'connected');
    // Out once and in again: one line each time, per card.
    assert.deepEqual(await cardsLogged('card removed', 2), [...cardIds].sort(), stack.daemonLog());
    assert.deepEqual(
      await cardsLogged('card inserted', 4),
      [...cardIds, ...cardIds].sort(),
      stack.daemonLog(),
    );
  });

  // Last: the daemon stays logged out.
  it('`cardlink logout` takes both cards out and ends the session', async () => {
    const { code, stdout } = await cli('logout');
    assert.equal(code, 0, stdout);
    assert.match(stdout, /^Logged out\.$/m);
    await waitForCardAbsent(pcscd.readerName(0), 10_000);
    await waitForCardAbsent(pcscd.readerName(1), 10_000);
    const status = await daemon.status();
    assert.equal(status.state, 'logged-out');
    assert.deepEqual(status.cards, []);
  });
});
