/**
 * `cardlink local-card` as a user meets it: clear failures when pcscd or the reader driver is
 * missing, bad options named, and a clean removal of the card on Ctrl-C.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CARDLINK_BIN } from '../../support/local-card.js';
import { startPcscd } from '../../support/pcscd.js';
import { waitForCardAbsent } from '../../../daemon/reader/pcsc-presence.js';

function runCli(args: string[], env: NodeJS.ProcessEnv) {
  const r = spawnSync(CARDLINK_BIN, args, {
    env: { ...process.env, ...env },
    encoding: 'utf8',
    timeout: 60000,
  });
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

describe('cardlink local-card', () => {
  it('names the missing pcscd and the fix (exit 69)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-nopcscd-'));
    const r = runCli(['local-card', '--pin', '123456', '--puk', '12345678'], {
      PCSCLITE_CSOCK_NAME: path.join(dir, 'no-such-pcscd.comm'),
    });
    fs.rmSync(dir, { recursive: true });
    assert.equal(r.status, 69, r.out);
    assert.match(r.out, /pcscd is not running/);
    assert.match(r.out, /apt-get install pcscd/);
    assert.match(r.out, /ERR_PCSCD_UNAVAILABLE/);
  });

  it('names the missing reader driver and the set-up script (exit 69)', async () => {
    const pcscd = await startPcscd({ cardlink: false });
    try {
      const r = runCli(
        [
          'local-card',
          '--bridge-socket',
          path.join(pcscd.dir, 'absent.sock'),
          '--pin',
          '123456',
          '--puk',
          '12345678',
        ],
        pcscd.env,
      );
      assert.equal(r.status, 69, r.out);
      assert.match(r.out, /cardlink reader driver is not listening/);
      assert.match(r.out, /install-scripts\/debian\/setup\.sh/);
    } finally {
      await pcscd.stop();
    }
  });

  it('refuses bad secrets and options by name, without echoing the secret', () => {
    const short = runCli(['local-card', '--pin', '12345', '--puk', '12345678'], {});
    assert.equal(short.status, 78);
    assert.match(short.out, /--pin must be 6 to 8 characters/);
    assert.doesNotMatch(short.out, /12345[^6-9]/);
    const key = runCli(['local-card', '--mgmt-key', 'zz'], {});
    assert.equal(key.status, 78);
    assert.match(key.out, /--mgmt-key must be hexadecimal/);
    const slot = runCli(['local-card', '--with-keys', '--slot-algorithm', '9b=RSA2048'], {});
    assert.equal(slot.status, 78);
    assert.match(slot.out, /--slot-algorithm "9b=RSA2048"/);
  });

  it('shows generated secrets once, then removes the card from the reader on SIGINT', async () => {
    const pcscd = await startPcscd({ cardlink: { slots: 2, friendlyName: 'cardlink Test Reader' } });
    try {
      const child = spawn(
        CARDLINK_BIN,
        ['local-card', '--bridge-socket', pcscd.socketPath, '--reader-name', 'cardlink Test Reader'],
        {
          env: pcscd.env,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`not ready: ${out}`)), 30000);
        child.stdout.on('data', () => {
          if (out.includes('ready:')) {
            clearTimeout(t);
            resolve();
          }
        });
        child.once('exit', () => reject(new Error(`exited early: ${out}`)));
      });
      assert.match(out, /PIN\s+\d{8}\n/);
      assert.match(out, /PUK\s+\d{8}\n/);
      assert.match(out, /management key\s+[0-9a-f]{48} \(AES192\)/);
      assert.match(out, /ready: PIV card present in reader "cardlink Test Reader 00 00"/);
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      child.kill('SIGINT');
      assert.equal(await exited, 0);
      await waitForCardAbsent('cardlink Test Reader 00 00', 5000);
    } finally {
      await pcscd.stop();
    }
  });
});
