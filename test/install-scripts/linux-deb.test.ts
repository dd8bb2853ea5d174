/**
 * The .deb packages (install-scripts/linux/build-deb.sh) installed with dpkg into a clean Debian 12
 * root (test/support/debian-root.ts), the form admins push with their tools:
 * - cardlink-client with a preseeded /etc/cardlink/install.conf: the maintainer scripts run the
 *   install steps (reader in the root's pcscd, client config, units); reinstalling changes nothing;
 *   an upgrade keeps the config; remove keeps only the config; purge leaves the root as it was.
 * - cardlink-server: no pcsclite; the service user, the hardened unit and the config; the unit's
 *   own ExecStartPre (`cardlink server migrate`) and ExecStart, run as that user with the unit's
 *   Environment=, bring up a server that answers /healthz. No systemd runs in the root, so the test
 *   does what systemd would do for StateDirectory= (the directory, 0700, owned by the user).
 * Both took 5 min here (2 cores, load average ~10), most of it building the two packages.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import https from 'node:https';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
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
import { REPO_ROOT } from '../support/pcscd.js';
import { stagedTree } from '../support/staged-tree.js';

/** Building two packages (most of it) and installing them. */
const DEB_TEST_TIMEOUT_MS = 20 * 60_000;
/** dpkg's own records, which a purge leaves by design (status, the package list, its log). */
const DPKG_RECORDS = /^\/var\/(lib\/dpkg|log\/dpkg\.log|log\/alternatives\.log)(\/|$)/;

function ok(r: Ran, what: string): Ran {
  assert.equal(r.code, 0, `${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

let debian: DebianRoot | undefined;
let root = '';
let idp: TestIdp | undefined;
let server: ChildProcess | undefined;

before(async () => {
  debian = await makeDebianRoot('alice');
  root = debian.dir;
});

after(async () => {
  if (server && server.exitCode === null) server.kill('SIGKILL');
  await idp?.close().catch(() => undefined);
  await debian?.remove();
});

async function buildDeb(variant: 'client' | 'server'): Promise<string> {
  const out = path.join(root, 'tmp');
  // The staged tree shared with linux-install (staging is most of a package build's time).
  const staged = await stagedTree(variant);
  const built = ok(
    await run('bash', [path.join(REPO_ROOT, 'install-scripts/linux/build-deb.sh'), variant, out], {
      ...process.env,
      CARDLINK_STAGED_TREE: staged,
    }),
    `build-deb.sh ${variant}`,
  );
  return '/tmp/' + path.basename(built.stdout.trim());
}

test(
  'cardlink-client.deb: preseeded install, reinstall without change, upgrade keeps the config, purge leaves the root as it was',
  { timeout: DEB_TEST_TIMEOUT_MS },
  async () => {
    const deb = await buildDeb('client');
    const contents = ok(await run('dpkg-deb', ['-c', path.join(root, deb)]), 'dpkg-deb -c').stdout;
    for (const native of ['better-sqlite3', 'pkcs11js', 'pg']) {
      assert.doesNotMatch(
        contents,
        new RegExp(`node_modules/${native}/`),
        `${native} not in the client package`,
      );
    }
    assert.match(contents, /node_modules\/pcsclite\//);

    ok(await debian!.run(['pcscd']), 'pcscd');
    const pcscd = await waitFor('pcscd', 10_000, async () => debian!.pcscdPid());
    const before = await debian!.listPaths();
    // The admin's preseed, as docs/install.md says.
    fs.mkdirSync(path.join(root, 'etc/cardlink'));
    fs.writeFileSync(
      path.join(root, 'etc/cardlink/install.conf'),
      'CARDLINK_SERVER_URL=https://cards.example.test/\nCARDLINK_USER=alice\nCARDLINK_SLOTS=2\n',
    );

    const installed = ok(await debian!.run(['dpkg', '-i', deb]), 'dpkg -i');
    assert.match(installed.stdout, /changed: \/etc\/cardlink\/daemon\.json/);
    assert.doesNotMatch(installed.stdout, /\/usr\/local\/bin/);
    assert.equal(fs.readlinkSync(path.join(root, 'usr/bin/cardlink')), '/opt/cardlink/bin/cardlink');
    const configFile = path.join(root, 'etc/cardlink/daemon.json');
    const config = JSON.parse(fs.readFileSync(configFile, 'utf8')) as { server: { url: string } };
    assert.equal(config.server.url, 'https://cards.example.test/');
    assert.match(fs.readFileSync(path.join(root, 'etc/reader.conf.d/cardlink'), 'utf8'), /slots=2:uid=1000/);
    assert.ok(inRootExists(path.join(root, 'etc/systemd/user/default.target.wants/cardlink-daemon.service')));
    assert.ok(inRootExists(path.join(root, 'etc/xdg/autostart/cardlink-tray.desktop')));
    await waitFor('pcscd restarted', 10_000, async () => {
      const pid = debian!.pcscdPid();
      return pid && pid !== pcscd ? pid : undefined;
    });
    const slots = await waitFor('the cardlink reader in pkcs11-tool -L', 10_000, async () => {
      const r = await debian!.run(['pkcs11-tool', '-L'], 'alice');
      return /cardlink Virtual Reader 00 01/.test(r.stdout) ? r.stdout : undefined;
    });
    assert.doesNotMatch(slots, /Virtual Reader 00 02/, 'two slots, as preseeded');

    const again = ok(await debian!.run(['dpkg', '-i', deb]), 'dpkg -i again');
    assert.match(again.stdout, /nothing to change/);
    const configBytes = fs.readFileSync(configFile);

    // An upgrade: the same package with a newer version.
    const unpacked = path.join(root, 'tmp/unpacked');
    ok(await run('dpkg-deb', ['-R', path.join(root, deb), unpacked]), 'dpkg-deb -R');
    const control = path.join(unpacked, 'DEBIAN/control');
    fs.writeFileSync(
      control,
      fs.readFileSync(control, 'utf8').replace(/^Version: (.+)$/m, 'Version: $1+upgrade'),
    );
    ok(
      await run('dpkg-deb', [
        '--root-owner-group',
        // Uncompressed: only the version differs, and gzip took ~10 s of the test.
        '-Znone',
        '-b',
        unpacked,
        path.join(root, 'tmp/upgrade.deb'),
      ]),
      'dpkg-deb -b',
    );
    ok(await debian!.run(['dpkg', '-i', '/tmp/upgrade.deb']), 'dpkg -i upgrade');
    const version = ok(
      await debian!.run(['dpkg-query', '-W', '-f=${Version}', 'cardlink-client']),
      'dpkg-query',
    );
    assert.match(version.stdout, /\+upgrade$/);
    assert.deepEqual(fs.readFileSync(configFile), configBytes, 'config kept on upgrade');

    // Remove keeps the config (as dpkg keeps conffiles); purge takes it too.
    ok(await debian!.run(['dpkg', '-r', 'cardlink-client']), 'dpkg -r');
    for (const gone of [
      'opt/cardlink',
      'usr/bin/cardlink',
      'etc/reader.conf.d/cardlink',
      'etc/systemd/user/cardlink-daemon.service',
    ]) {
      assert.ok(!inRootExists(path.join(root, gone)), `${gone} removed`);
    }
    assert.deepEqual(fs.readFileSync(configFile), configBytes, 'config kept on remove');
    ok(await debian!.run(['dpkg', '-P', 'cardlink-client']), 'dpkg -P');
    const afterPurge = await debian!.listPaths();
    const left = [...afterPurge].filter((p) => !before.has(p) && !DPKG_RECORDS.test(p));
    assert.deepEqual(left, [], `left behind: ${left.join(', ')}`);
    const lost = [...before].filter((p) => !afterPurge.has(p) && !DPKG_RECORDS.test(p));
    assert.deepEqual(lost, [], `removed from the root: ${lost.join(', ')}`);
  },
);

test(
  'cardlink-server.deb: no pcsclite; the unit runs cardlink server migrate and the server as its own user',
  { timeout: DEB_TEST_TIMEOUT_MS },
  async () => {
    const deb = await buildDeb('server');
    const contents = ok(await run('dpkg-deb', ['-c', path.join(root, deb)]), 'dpkg-deb -c').stdout;
    assert.doesNotMatch(contents, /node_modules\/pcsclite\//);
    assert.doesNotMatch(contents, /libifd-cardlink/);
    assert.match(contents, /node_modules\/better-sqlite3\//);

    const port = await freePort();
    idp = await startTestIdp({ resource: `https://127.0.0.1:${port}/` });
    fs.writeFileSync(
      path.join(root, 'tmp/server.json'),
      JSON.stringify({
        listen: { host: '127.0.0.1', port },
        publicUrl: `https://127.0.0.1:${port}/`,
        audience: idp.resource,
        issuers: [{ issuer: idp.issuer, tenant: 'acme' }],
      }),
    );
    fs.mkdirSync(path.join(root, 'etc/cardlink'), { recursive: true });
    fs.writeFileSync(
      path.join(root, 'etc/cardlink/install.conf'),
      'CARDLINK_SERVER_CONFIG=/tmp/server.json\n',
    );
    ok(await debian!.run(['dpkg', '-i', deb]), 'dpkg -i server');
    ok(await debian!.run(['getent', 'passwd', 'cardlink-server']), 'the service user');
    const stat = fs.statSync(path.join(root, 'etc/cardlink/server.json'));
    assert.equal(stat.mode & 0o777, 0o640);

    const unit = fs.readFileSync(path.join(root, 'etc/systemd/system/cardlink-server.service'), 'utf8');
    const value = (key: string): string[] =>
      [...unit.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!);
    assert.deepEqual(value('User'), ['cardlink-server']);
    assert.deepEqual(value('CapabilityBoundingSet'), ['']);
    assert.deepEqual(value('ProtectSystem'), ['strict']);
    assert.deepEqual(value('StateDirectoryMode'), ['0700']);
    // What systemd does for StateDirectory=cardlink-server, then the unit's commands as its user.
    ok(
      await debian!.run(['install', '-d', '-m', '0700', '-o', 'cardlink-server', '/var/lib/cardlink-server']),
      'state',
    );
    const env = Object.fromEntries(value('Environment').map((e) => e.split('=', 2) as [string, string]));
    const runAsUnit = (command: string): string[] => [
      'chroot',
      '--userspec=cardlink-server:cardlink-server',
      root,
      'env',
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...command.split(' '),
    ];
    const [pre] = value('ExecStartPre');
    assert.equal(pre, '/opt/cardlink/bin/cardlink server migrate');
    const [cmd, ...args] = runAsUnit(pre!);
    ok(await run(cmd!, args, debian!.env()), 'ExecStartPre');
    const [startCmd, ...startArgs] = runAsUnit(value('ExecStart')[0]!);
    server = spawn(startCmd!, startArgs, { env: debian!.env(), stdio: ['ignore', 'pipe', 'pipe'] });
    let said = '';
    server.stdout!.on('data', (d: Buffer) => (said += d.toString()));
    server.stderr!.on('data', (d: Buffer) => (said += d.toString()));
    await waitFor('server ready', 30_000, async () => {
      if (server!.exitCode !== null) throw new Error(`server exited ${server!.exitCode}:\n${said}`);
      return said.includes('cardlink server: ready') ? true : undefined;
    });
    const ca = fs.readFileSync(path.join(root, 'var/lib/cardlink-server/tls/server.crt'));
    const health = await new Promise<string>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port, path: '/healthz', ca }, (res) => {
          let body = '';
          res.on('data', (d: Buffer) => (body += d.toString()));
          res.on('end', () => resolve(`${res.statusCode} ${body}`));
        })
        .on('error', reject);
    });
    assert.match(health, /^200 .*"ok"/);
    const stateMode = fs.statSync(path.join(root, 'var/lib/cardlink-server')).mode & 0o777;
    assert.equal(stateMode, 0o700);
  },
);
