/**
 * install-scripts/linux/install.sh and uninstall.sh, for real, in a clean Debian 12 root made by
 * debootstrap (test/install-scripts/debian-root.sh, cached) and entered with chroot, with that
 * root's own pcscd. The card server and the IdP run in this process on loopback; everything else
 * (the installed daemon, `cardlink login`, pcscd, `pkcs11-tool`) runs inside the root.
 *
 * Node.js 20 is the install's one prerequisite that Debian 12 does not ship: the root gets this
 * machine's node binary in /usr/local/bin, as an admin would install it (test/support/debian-root.ts).
 *
 * The root takes ~3 minutes to build the first time (test/prepare-machine.sh builds it once per
 * machine); from the cache the test took 80 s here (2 cores, load average ~10), most of it staging
 * /opt/cardlink.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestCard, startTestCardServer, type TestCardServer } from '../support/card-server.js';
import {
  inRootExists,
  makeDebianRoot,
  run,
  type DebianRoot,
  type Ran,
  waitFor,
} from '../support/debian-root.js';
import { freePort } from '../support/free-port.js';
import { startTestIdp, type TestIdp } from '../support/oidc-provider.js';
import { stagedTree } from '../support/staged-tree.js';

/** The whole scenario: building the root (first run), staging, four installs and two removals. */
const INSTALL_TEST_TIMEOUT_MS = 15 * 60_000;
/** How long the installed daemon may take to put alice's card into the root's reader. */
const CARD_VISIBLE_TIMEOUT_MS = 30_000;
const SCRIPTS = '/tmp/cardlink-src/install-scripts/linux';
/** A second identity provider for install.sh's repeatable --issuer; only written and checked, never asked. */
const SECOND_ISSUER = 'https://idp2.example.com/';

function ok(r: Ran, what: string): Ran {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

let debian: DebianRoot | undefined;
let root = '';
let idp: TestIdp | undefined;
let server: TestCardServer | undefined;
let daemon: ChildProcess | undefined;
let serverUrl = '';
const inRoot = (args: string[], user?: string): Promise<Ran> => debian!.run(args, user);
const listRoot = (): Promise<Set<string>> => debian!.listPaths();
const rootPcscdPid = (): number | undefined => debian!.pcscdPid();

before(async () => {
  debian = await makeDebianRoot('alice');
  root = debian.dir;

  // The card server and the IdP on this machine's loopback; the root shares the network.
  const port = await freePort();
  serverUrl = `https://127.0.0.1:${port}/`;
  idp = await startTestIdp({ resource: serverUrl });
  const dataDir = fs.mkdtempSync(path.join(root, 'tmp/server-'));
  server = await startTestCardServer(dataDir, idp, {
    listen: { host: '127.0.0.1', port },
    publicUrl: serverUrl,
  });
  await createTestCard(server, idp, { pin: '123456', puk: '12345678', label: 'install test' });
  fs.copyFileSync(server.config.tls.certFile, path.join(root, 'tmp/server-ca.pem'));
});

after(async () => {
  if (daemon && daemon.exitCode === null) daemon.kill('SIGKILL');
  await server?.stop().catch(() => undefined);
  await idp?.close().catch(() => undefined);
  await debian?.remove();
});

test(
  'install.sh into a clean Debian 12 root: the installed daemon serves a card that pkcs11-tool sees; a second run changes nothing; an upgrade keeps the config; uninstall leaves none of its files',
  { timeout: INSTALL_TEST_TIMEOUT_MS },
  async (t) => {
    // stage.sh's client tree, made once per build and shared with linux-deb (test/support/staged-tree.ts).
    ok(
      await run('cp', ['-a', await stagedTree('client'), path.join(root, 'tmp/cardlink-src')]),
      'staged tree',
    );
    ok(await inRoot(['pcscd']), 'pcscd');
    const pcscdBefore = await waitFor('pcscd pid file', 10_000, async () => rootPcscdPid());
    const before = await listRoot();

    const params = [
      '--server-url',
      serverUrl,
      // Two identity providers, the first the default (login.issuers), each with its client id.
      '--issuer',
      idp!.issuer,
      '--issuer',
      SECOND_ISSUER,
      '--client-id',
      idp!.clientId,
      '--client-id',
      'cardlink-second',
      '--ca-file',
      '/tmp/server-ca.pem',
      '--user',
      'alice',
    ];
    // A parameter error is exit 2 and changes nothing.
    const bad = await inRoot([`${SCRIPTS}/install.sh`, ...params, '--slots', '9']);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /--slots must be a number from 1 to 8/);
    assert.deepEqual(await listRoot(), before);

    // 1. The install: Debian packages are already in the root, so apt is not called.
    const first = ok(await inRoot([`${SCRIPTS}/install.sh`, ...params]), 'install.sh');
    assert.match(first.stdout, /changed: \/opt\/cardlink \(application\)/);
    assert.match(first.stdout, /changed: \/etc\/cardlink\/daemon\.json/);
    assert.doesNotMatch(first.stdout, /Debian packages/);
    const installedNow = await listRoot();
    const added = [...installedNow].filter((p) => !before.has(p));
    for (const p of [
      '/opt/cardlink/bin/cardlink',
      '/usr/local/bin/cardlink',
      '/etc/cardlink/daemon.json',
      '/etc/cardlink/server-ca.pem',
      '/etc/reader.conf.d/cardlink',
      '/etc/systemd/user/cardlink-daemon.service',
      '/etc/systemd/user/default.target.wants/cardlink-daemon.service',
      '/etc/xdg/autostart/cardlink-tray.desktop',
      '/var/lib/cardlink-install/manifest',
    ]) {
      assert.ok(installedNow.has(p), `${p} installed`);
    }
    // Production dependencies only, and none of the server's native modules.
    for (const dev of ['typescript', 'eslint', 'better-sqlite3', 'pg', 'pkcs11js']) {
      assert.ok(!installedNow.has(`/opt/cardlink/node_modules/${dev}`), `${dev} not installed`);
    }
    assert.ok(installedNow.has('/opt/cardlink/node_modules/pcsclite'));
    const config = JSON.parse(fs.readFileSync(path.join(root, 'etc/cardlink/daemon.json'), 'utf8')) as {
      server: { url: string; caFile: string };
      login: { resource: string; issuers: { issuer: string; clientId: string }[] };
    };
    assert.equal(config.server.url, serverUrl);
    assert.equal(config.server.caFile, '/etc/cardlink/server-ca.pem');
    assert.deepEqual(config.login, {
      resource: serverUrl,
      issuers: [
        { issuer: idp!.issuer, clientId: idp!.clientId },
        { issuer: SECOND_ISSUER, clientId: 'cardlink-second' },
      ],
    });
    // As the installed daemon reads it: the first is the default (cardlink login below uses it).
    const checked = ok(await inRoot(['/usr/local/bin/cardlink', 'daemon', '--check']), 'check');
    const effective = JSON.parse(checked.stdout) as { login: { issuer: string; issuers: unknown[] } };
    assert.equal(effective.login.issuer, idp!.issuer);
    assert.equal(effective.login.issuers.length, 2);
    assert.match(
      fs.readFileSync(path.join(root, 'etc/cardlink/install.conf'), 'utf8'),
      new RegExp(`^CARDLINK_ISSUER=${idp!.issuer} ${SECOND_ISSUER}$`, 'm'),
    );
    // pcscd was restarted (it reads reader.conf.d only at start) and shows the reader.
    const pcscdAfter = await waitFor('restarted pcscd', 10_000, async () => {
      const pid = rootPcscdPid();
      return pid && pid !== pcscdBefore ? pid : undefined;
    });
    assert.notEqual(pcscdAfter, pcscdBefore);
    const slots = await waitFor('the cardlink reader in pkcs11-tool -L', 10_000, async () => {
      const r = await inRoot(['pkcs11-tool', '-L'], 'alice');
      return /cardlink Virtual Reader 00 00/.test(r.stdout) ? r.stdout : undefined;
    });
    assert.match(slots, /\(empty\)/);

    // 2. The installed daemon, started with the user unit's own ExecStart, serves alice's card.
    const unit = fs.readFileSync(path.join(root, 'etc/systemd/user/cardlink-daemon.service'), 'utf8');
    const execStart = /^ExecStart=(.+)$/m.exec(unit)![1]!.split(' ');
    assert.deepEqual(execStart, ['/opt/cardlink/bin/cardlink', 'daemon']);
    const env = debian!.env('alice');
    daemon = spawn('chroot', ['--userspec=alice:alice', root, ...execStart], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let daemonOut = '';
    daemon.stdout!.on('data', (d: Buffer) => (daemonOut += d.toString()));
    daemon.stderr!.on('data', (d: Buffer) => (daemonOut += d.toString()));
    await waitFor('daemon ready', 20_000, async () => {
      if (daemon!.exitCode !== null) throw new Error(`daemon exited ${daemon!.exitCode}:\n${daemonOut}`);
      return daemonOut.includes('cardlink daemon: ready') ? true : undefined;
    });
    const login = spawn(
      'chroot',
      ['--userspec=alice:alice', root, '/usr/local/bin/cardlink', 'login', '--device-code'],
      {
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let said = '';
    login.stdout!.on('data', (d: Buffer) => (said += d.toString()));
    login.stderr!.on('data', (d: Buffer) => (said += d.toString()));
    const loginDone = new Promise<number | null>((resolve) => login.once('exit', resolve));
    const code = await waitFor('login code', 20_000, async () => /enter the code (\S+)/.exec(said)?.[1]);
    await idp!.approveDeviceCode(code, { account: 'alice' });
    assert.equal(await loginDone, 0, said);
    const withCard = await waitFor('the card in pkcs11-tool -L', CARD_VISIBLE_TIMEOUT_MS, async () => {
      const r = await inRoot(['pkcs11-tool', '-L'], 'alice');
      return /token label/.test(r.stdout) ? r.stdout : undefined;
    });
    assert.match(withCard, /Slot 0 \(0x0\): cardlink Virtual Reader 00 00\n\s+token label\s*:/);
    daemon.kill('SIGTERM');
    await new Promise((resolve) =>
      daemon!.exitCode !== null ? resolve(null) : daemon!.once('exit', resolve),
    );

    // 3. The same install again: nothing changes, and it says so.
    const configBytes = fs.readFileSync(path.join(root, 'etc/cardlink/daemon.json'));
    const again = ok(await inRoot([`${SCRIPTS}/install.sh`, ...params]), 'second install.sh');
    assert.match(again.stdout, /nothing to change/);
    assert.doesNotMatch(again.stdout, /changed:/);
    assert.equal(rootPcscdPid(), pcscdAfter, 'pcscd not restarted when nothing changed');
    // A dry run names what it would change and changes nothing.
    const dry = ok(await inRoot([`${SCRIPTS}/install.sh`, '--slots', '2', '--dry-run']), 'dry run');
    assert.match(dry.stdout, /would change: \/etc\/reader\.conf\.d\/cardlink/);
    assert.match(fs.readFileSync(path.join(root, 'etc/reader.conf.d/cardlink'), 'utf8'), /slots=4/);
    // Settings the daemon refuses: exit 6, the old config stays.
    const refused = await inRoot([`${SCRIPTS}/install.sh`, '--server-url', 'https://bad host/']);
    assert.equal(refused.code, 6, refused.stdout + refused.stderr);
    assert.deepEqual(fs.readFileSync(path.join(root, 'etc/cardlink/daemon.json')), configBytes);

    // 4. An upgrade: a newer tree, no parameters; the application changes, the config stays.
    const next = path.join(root, 'tmp/cardlink-next');
    ok(await run('cp', ['-a', path.join(root, 'tmp/cardlink-src'), next]), 'cp');
    const pkgFile = path.join(next, 'package.json');
    const pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8')) as { version: string };
    fs.writeFileSync(pkgFile, JSON.stringify({ ...pkg, version: `${pkg.version}-upgrade` }, null, 2) + '\n');
    const upgrade = ok(await inRoot(['/tmp/cardlink-next/install-scripts/linux/install.sh']), 'upgrade');
    assert.match(upgrade.stdout, /changed: \/opt\/cardlink \(application\)/);
    assert.doesNotMatch(upgrade.stdout, /daemon\.json|reader\.conf/);
    assert.deepEqual(fs.readFileSync(path.join(root, 'etc/cardlink/daemon.json')), configBytes);
    const installedPkg = JSON.parse(
      fs.readFileSync(path.join(root, 'opt/cardlink/package.json'), 'utf8'),
    ) as {
      version: string;
    };
    assert.equal(installedPkg.version, `${pkg.version}-upgrade`);

    // 5. Uninstall: every file it installed is gone and the root is as before; alice's data stays.
    const manifest = fs.readFileSync(path.join(root, 'var/lib/cardlink-install/manifest'), 'utf8');
    const removed = ok(await inRoot(['/opt/cardlink/install-scripts/linux/uninstall.sh']), 'uninstall.sh');
    assert.match(removed.stdout, /removed: \/opt\/cardlink/);
    const afterUninstall = await listRoot();
    const left = added.filter((p) => afterUninstall.has(p));
    assert.deepEqual(left, [], `left behind: ${left.join(', ')}`);
    t.diagnostic(
      `install added ${added.length} paths (outside /opt/cardlink: ${added.filter((p) => !p.startsWith('/opt/cardlink/')).join(' ')}); after uninstall ${left.length} of them remain`,
    );
    assert.deepEqual(
      [...afterUninstall].filter((p) => !before.has(p)),
      [],
      'nothing new left',
    );
    assert.deepEqual(
      [...before].filter((p) => !afterUninstall.has(p)),
      [],
      'nothing of the root removed',
    );
    for (const line of manifest.split('\n').filter(Boolean)) {
      assert.ok(!inRootExists(path.join(root, line)), `${line} (manifest) removed`);
    }
    assert.ok(inRootExists(path.join(root, 'home/alice/.local/state/cardlink')), "alice's data kept");
    const gone = await waitFor('the reader gone after pcscd restart', 10_000, async () => {
      const r = await inRoot(['pkcs11-tool', '-L'], 'alice');
      return /cardlink Virtual Reader/.test(r.stdout) ? undefined : r.stdout + r.stderr;
    });
    assert.doesNotMatch(gone, /cardlink/);
    // --purge afterwards takes the users' data too, but runs as root in directories users control:
    // alice's ~/.config made a symlink to a directory of hers under /etc must not lead it there.
    const alice = fs
      .readFileSync(path.join(root, 'etc/passwd'), 'utf8')
      .split('\n')
      .find((l) => l.startsWith('alice:'))!
      .split(':');
    const bait = path.join(root, 'etc/purge-bait/cardlink');
    fs.mkdirSync(bait, { recursive: true });
    fs.chownSync(bait, Number(alice[2]), Number(alice[3]));
    fs.rmSync(path.join(root, 'home/alice/.config'), { recursive: true, force: true });
    fs.symlinkSync('/etc/purge-bait', path.join(root, 'home/alice/.config'));
    const purge = await inRoot([`${SCRIPTS}/uninstall.sh`, '--purge']);
    ok(purge, 'uninstall.sh --purge');
    assert.ok(!inRootExists(path.join(root, 'home/alice/.local/state/cardlink')), "alice's data purged");
    assert.ok(fs.existsSync(bait), 'nothing removed through the symlink');
    assert.match(purge.stdout + purge.stderr, /left alone: \/home\/alice\/\.config\/cardlink/);
  },
);
