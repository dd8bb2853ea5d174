/**
 * `cardlink server` as an administrator runs it: first start creates its state and a self-signed
 * TLS pair, prints where it listens and the fingerprint; bad settings name the key and the file.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { REPO_ROOT } from '../../support/pcscd.js';

const MAIN = path.join(REPO_ROOT, 'dist', 'bin', 'main.js');

describe('cardlink server', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-server-cli-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('starts with embedded defaults: SQLite, key file and TLS pair created private; stops on SIGTERM', async () => {
    const child = spawn(process.execPath, [MAIN, 'server', '--data-dir', dir, '--port', '0'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, CARDLINK_SERVER_CONFIG: '' },
    });
    let out = '';
    const ready = await new Promise<RegExpMatchArray>((resolve, reject) => {
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const m = out.match(
          /ready on (wss:\/\/127\.0\.0\.1:(\d+)\/v1\/session) \(TLS SHA-256 fingerprint ([0-9A-F:]+);/,
        );
        if (m) resolve(m);
      });
      child.on('exit', (code) => reject(new Error(`server exited ${code}: ${out}`)));
    });
    const cert = fs.readFileSync(path.join(dir, 'tls', 'server.crt'), 'utf8');
    assert.equal(ready[3], new X509Certificate(cert).fingerprint256);
    assert.match(out, /generated a self-signed TLS certificate/);
    assert.match(out, /no trusted issuers configured/);
    for (const file of ['tls/server.key', 'kek.json']) {
      assert.equal(fs.statSync(path.join(dir, file)).mode & 0o077, 0, `${file} is private`);
    }
    assert.ok(fs.existsSync(path.join(dir, 'cardlink.db')));
    const status = await new Promise<number>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: Number(ready[2]), path: '/healthz', ca: cert }, (r) => {
          r.resume();
          resolve(r.statusCode ?? 0);
        })
        .on('error', reject);
    });
    assert.equal(status, 200);
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    assert.equal(await exited, 0);
  });

  it('migrate reports the schema version and changes nothing the second time', () => {
    const run = () =>
      spawnSync(process.execPath, [MAIN, 'server', 'migrate', '--data-dir', dir], { encoding: 'utf8' });
    const again = run();
    assert.equal(again.status, 0, again.stderr);
    assert.match(again.stdout, /schema is current \(version \d+\)/);
  });

  it('a bad setting fails with exit 78 naming the key and the file', () => {
    const file = path.join(dir, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({ listen: { port: 'eighty' } }));
    const r = spawnSync(process.execPath, [MAIN, 'server', '--config', file], { encoding: 'utf8' });
    assert.equal(r.status, 78);
    assert.match(
      r.stderr,
      new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: setting "listen.port"`),
    );
    fs.writeFileSync(file, JSON.stringify({ listne: {} }));
    const typo = spawnSync(process.execPath, [MAIN, 'server', '--config', file], { encoding: 'utf8' });
    assert.equal(typo.status, 78);
    assert.match(typo.stderr, /setting "listne" is not a known setting/);
  });
});
