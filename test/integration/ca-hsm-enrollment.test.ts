/**
 * The issuing CA's key inside the card server's PKCS#11 token (SoftHSM2), through the whole chain:
 * the CA made with `keyInHsm` on a running card server whose KEK is in that token, `cardlink
 * enroll` -> daemon -> card server -> C_Sign in the token, the certificate read back by OpenSC
 * through pcscd and verified by OpenSSL against the CA; then the card server restarted (a new
 * provider and sessions on the same token) enrolls the card again, signing the new certificates
 * and the CRL that revokes the superseded ones with the same token key.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { PemConverter } from '../../apdu/piv/certificates/index.js';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/profile.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { findIssuingCa } from '../../server/storage/index.js';
import { runCardlink } from '../support/cli-run.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import { createSoftHsmToken } from '../support/softhsm.js';

/** How long the daemon may take to reconnect to the restarted server. */
const RECONNECT_TIMEOUT_MS = 30_000;

describe('the CA key in the card server HSM: self-service enrollment, before and after a server restart', () => {
  let stack: DaemonStack;
  let dir: string;
  let caFile: string;
  let secrets: string;

  const read9a = async (name: string): Promise<string> => {
    const der = path.join(dir, `${name}.der`);
    await promisify(execFile)(
      'pkcs11-tool',
      ['--module', OPENSC_PKCS11, '--read-object', '--type', 'cert', '--id', '01', '-o', der],
      { env: stack.pcscd.env, cwd: dir },
    );
    const pem = path.join(dir, `${name}.pem`);
    fs.writeFileSync(pem, new X509Certificate(fs.readFileSync(der)).toString());
    return pem;
  };
  const openssl = (args: string[]) => {
    const r = spawnSync('openssl', args, { encoding: 'utf8' });
    return { status: r.status, out: `${r.stdout}${r.stderr}` };
  };
  const enroll = async () => {
    const cardId = stack.cardIds[0]!;
    const run = await runCardlink(
      ['enroll', '--card', cardId, '--config', stack.daemon.configFile],
      process.env,
    );
    assert.equal(run.status, 0, `${run.stdout}${run.stderr}`);
    assert.match(run.stdout, /4 certificates issued/);
    const inReader = (await stack.daemon.cards()).find((c) => c.cardId === cardId)!;
    await waitForCardPresent(inReader.readerName!);
  };

  before(async () => {
    const token = await createSoftHsmToken();
    secrets = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-hsm-pin-'));
    const pinFile = path.join(secrets, 'hsm.pin');
    fs.writeFileSync(pinFile, token.pin, { mode: 0o600 });
    const base = await loadDefaultProfile();
    stack = await startDaemonStack({
      name: 'ca-hsm',
      server: {
        kek: { provider: 'pkcs11', module: token.modulePath, tokenLabel: token.tokenLabel, pinFile },
      },
      cards: [
        {
          label: 'hsm CA card',
          pin: '24681357',
          puk: '97531864',
          profile: parseCardProfile({
            ...profileToJson(base),
            name: 'self-service',
            selfServiceEnrollment: true,
          }),
        },
      ],
      pcscd: { cardlink: { slots: 1, friendlyName: 'cardlink CaHsm Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    const { storage, kek } = stack.cardServer.resources;
    assert.equal(kek.kind, 'pkcs11');
    const info = await initEmbeddedCa({
      storage,
      kek,
      crlUrl: crlUrlFor(stack.serverUrl),
      keyInHsm: true,
      actor: 'admin:test',
    });
    assert.equal(info.keyStore, 'pkcs11');
    caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, info.certificatePem);
    await stack.daemon.login('alice');
    await stack.daemon.waitForCards((cs) => cs.length === 1 && cs[0]!.state === 'inserted');
  });

  after(async () => {
    await stack?.stop();
    if (secrets) fs.rmSync(secrets, { recursive: true, force: true });
  });

  it('issues certificates signed in the token that OpenSC reads and OpenSSL verifies', async () => {
    await enroll();
    const verified = openssl(['verify', '-CAfile', caFile, await read9a('first')]);
    assert.equal(verified.status, 0, verified.out);
  });

  it('after a server restart, enrolls again and signs the CRL of the superseded certificates with the same key', async () => {
    const events = await stack.daemon.events();
    try {
      await stack.restartServer();
      const deadline = Date.now() + RECONNECT_TIMEOUT_MS;
      while (!events.seen.some((e) => e.event === 'connected') && Date.now() < deadline)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(
        events.seen.some((e) => e.event === 'connected'),
        `the daemon reconnected: ${JSON.stringify(events.seen)}`,
      );
    } finally {
      await events.close();
    }
    await stack.daemon.waitForCards((cs) => cs.length === 1 && cs[0]!.state === 'inserted');
    await enroll();
    const verified = openssl(['verify', '-CAfile', caFile, await read9a('second')]);
    assert.equal(verified.status, 0, verified.out);

    const ca = await findIssuingCa(stack.cardServer.resources.storage);
    assert.ok(ca?.crl && 'token' in ca.key, 'the restarted server signed a CRL with the token key');
    const crlFile = path.join(dir, 'ca.crl');
    fs.writeFileSync(crlFile, PemConverter.encode(Uint8Array.from(ca.crl), 'X509 CRL'));
    const crl = openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-noout', '-verify', '-text']);
    assert.equal(crl.status, 0, crl.out);
    assert.match(crl.out, /verify OK/);
    const first = new X509Certificate(fs.readFileSync(path.join(dir, 'first.pem')));
    assert.match(crl.out, new RegExp(`Serial Number: ${first.serialNumber}`, 'i'));
  });
});
