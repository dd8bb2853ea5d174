/**
 * yubico-piv-tool 2.2 (Debian 12) against a real local card through pcscd and the cardlink driver,
 * and against card server cards through the daemon: one made from the 3DES profile README.md gives
 * for this tool, one from the default profile (AES-192, which 2.2 cannot authenticate with).
 *
 * yubico-piv-tool 2.2 speaks only 3DES management keys, and its `selfsign-certificate` fails with
 * OpenSSL 3 before it reaches the card (Yubico/yubico-piv-tool#388), so the self-signed certificate is
 * made with the card's key through OpenSC's PKCS#11 engine and then imported with yubico-piv-tool.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadCardProfile } from '../../server/admin/index.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { random3DesKeyHex, startLocalCard, type LocalCard } from '../support/local-card.js';

describe('yubico-piv-tool with a local card', () => {
  let card: LocalCard;
  const y = (args: string[], allowFailure = false) => {
    const r = card.run('yubico-piv-tool', ['-r', 'cardlink', ...args], { allowFailure });
    return { ...r, out: r.stdout + r.stderr };
  };

  before(async () => {
    card = await startLocalCard({ withKeys: true, pinRetries: 3, pukRetries: 3 });
  });
  after(async () => card?.stop());

  it('-a status shows the version, the CHUID and the provisioned slots', () => {
    const out = y(['-a', 'status']).out;
    assert.match(out, /Version:\s+5\.7\.0/);
    assert.match(out, /CHUID:\s+30/);
    assert.match(out, /Slot 9a:\s+Algorithm:\s+RSA2048/);
    assert.match(out, /Slot 9c:\s+Algorithm:\s+ECCP256/);
    assert.match(out, /PIN tries left:\s+3/);
  });

  it('generates a key, imports a self-signed certificate for it, and test-signature passes', () => {
    const pub = path.join(card.dir, 'pub9a.pem');
    assert.match(
      y([`--key=${card.mgmtKeyHex}`, '-a', 'generate', '-s', '9a', '-A', 'RSA2048', '-o', pub]).out,
      /Successfully generated/,
    );
    // Placeholder certificate carrying the new public key, so OpenSC can address the key pair.
    const tmpKey = path.join(card.dir, 'tmp.key');
    const placeholder = path.join(card.dir, 'placeholder.pem');
    card.run('openssl', [
      'genpkey',
      '-algorithm',
      'EC',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-out',
      tmpKey,
    ]);
    card.run('openssl', [
      'x509',
      '-new',
      '-subj',
      '/CN=placeholder',
      '-key',
      tmpKey,
      '-force_pubkey',
      pub,
      '-days',
      '1',
      '-out',
      placeholder,
    ]);
    y([`--key=${card.mgmtKeyHex}`, '-a', 'import-certificate', '-s', '9a', '-i', placeholder]);
    // The self-signed certificate, signed on the card by the new key.
    const cert = path.join(card.dir, 'cert9a.pem');
    card.run('openssl', [
      'req',
      '-new',
      '-x509',
      '-days',
      '30',
      '-subj',
      '/CN=cardlink yubico-piv-tool test',
      '-engine',
      'pkcs11',
      '-keyform',
      'engine',
      '-key',
      `pkcs11:id=%01;type=private;pin-value=${card.pin}`,
      '-out',
      cert,
    ]);
    assert.match(card.run('openssl', ['verify', '-check_ss_sig', '-CAfile', cert, cert]).stdout, /OK/);
    assert.match(
      y([`--key=${card.mgmtKeyHex}`, '-a', 'import-certificate', '-s', '9a', '-i', cert]).out,
      /Successfully imported/,
    );
    assert.match(y(['-a', 'status']).out, /Subject DN:\s+CN=cardlink yubico-piv-tool test/);
    const test = y(['-a', 'verify-pin', '-P', card.pin, '-a', 'test-signature', '-s', '9a', '-i', cert]);
    assert.match(test.out, /Successful RSA verification/);
  });

  it('changes the PIN: the new one verifies, the old one no longer does', () => {
    const next = '97531864';
    assert.match(
      y(['-a', 'change-pin', '-P', card.pin, '-N', next]).out,
      /Successfully changed the pin code/,
    );
    assert.match(y(['-a', 'verify-pin', '-P', next]).out, /Successfully verified PIN/);
    assert.match(y(['-a', 'verify-pin', '-P', card.pin], true).out, /2 tries left/);
    assert.match(y(['-a', 'change-pin', '-P', next, '-N', card.pin]).out, /Successfully changed/);
  });

  it('blocks the PIN after 3 wrong tries, and the PUK unblocks it', () => {
    for (const left of [2, 1])
      assert.match(y(['-a', 'verify-pin', '-P', '000000'], true).out, new RegExp(`${left} tries left`));
    assert.match(y(['-a', 'verify-pin', '-P', '000000'], true).out, /blocked/i);
    assert.match(y(['-a', 'verify-pin', '-P', card.pin], true).out, /blocked/i);
    assert.match(
      y(['-a', 'unblock-pin', '-P', card.puk, '-N', card.pin]).out,
      /Successfully unblocked the pin code/,
    );
    assert.match(y(['-a', 'verify-pin', '-P', card.pin]).out, /Successfully verified PIN/);
  });

  it('changes the management key: the new one works, the old one is refused', () => {
    const next = random3DesKeyHex();
    assert.match(
      y([`--key=${card.mgmtKeyHex}`, '-a', 'set-mgm-key', '-n', next]).out,
      /Successfully set new management key/,
    );
    assert.match(
      y([`--key=${card.mgmtKeyHex}`, '-a', 'generate', '-s', '9e', '-A', 'ECCP256'], true).out,
      /Failed authentication/i,
    );
    assert.match(
      y([`--key=${next}`, '-a', 'generate', '-s', '9e', '-A', 'ECCP256']).out,
      /Successfully generated/,
    );
  });

  it('a blocked PUK stays blocked', () => {
    for (let i = 0; i < 3; i++) y(['-a', 'unblock-pin', '-P', '11112222', '-N', '123123'], true);
    const r = y(['-a', 'unblock-pin', '-P', card.puk, '-N', '123123'], true);
    assert.notEqual(r.status, 0);
    assert.match(r.out, /blocked/i);
    assert.match(y(['-a', 'status']).out, /PIN tries left:\s+3/);
    fs.rmSync(path.join(card.dir, 'tmp.key'), { force: true });
  });
});

/** The profile README.md gives for cards administered with yubico-piv-tool 2.2, as written there. */
const YUBICO_PIV_TOOL_PROFILE = {
  name: 'yubico-piv-tool-2.2',
  label: 'cardlink PIV card',
  slots: [
    { slot: '9A', algorithm: 'RSA2048', pinPolicy: 'once' },
    { slot: '9C', algorithm: 'ECCP256', pinPolicy: 'always' },
    { slot: '9D', algorithm: 'RSA2048', pinPolicy: 'once' },
    { slot: '9E', algorithm: 'ECCP256', pinPolicy: 'never' },
  ],
  pin: { minLength: 6, maxLength: 8, retries: 3 },
  puk: { minLength: 8, maxLength: 8, retries: 3 },
  managementKey: { algorithm: '3DES' },
  certificateValidityDays: 365,
};

describe('yubico-piv-tool 2.2 with card server cards through the daemon', () => {
  let stack: DaemonStack;
  let profileDir: string;
  const cards = {
    tdes: { label: 'for yubico-piv-tool', pin: '24681357', puk: '97531864', key: random3DesKeyHex() },
    aes: { label: 'default profile', pin: '13572468', puk: '86420975', key: randomBytes(24).toString('hex') },
  };
  const readerOf: Record<string, string> = {};

  /**
   * yubico-piv-tool on the card in `reader`, run asynchronously (the card server it reaches through
   * the daemon runs in this process). `input` answers its prompts (`-k`: the management key), so no
   * secret of the test is on a command line.
   */
  const y = (reader: string, args: string[], input = '') =>
    new Promise<{ status: number | null; out: string }>((resolve, reject) => {
      const child = spawn('yubico-piv-tool', ['-r', reader, ...args], { env: stack.pcscd.env });
      let out = '';
      child.stdout.on('data', (d: Buffer) => (out += d.toString()));
      child.stderr.on('data', (d: Buffer) => (out += d.toString()));
      child.once('error', reject);
      child.once('close', (status) => resolve({ status, out }));
      child.stdin.end(input);
    });

  before(async () => {
    profileDir = fs.mkdtempSync(path.join(tmpdir(), 'cardlink-yubico-profile-'));
    const profileFile = path.join(profileDir, 'yubico-piv-tool.json');
    fs.writeFileSync(profileFile, JSON.stringify(YUBICO_PIV_TOOL_PROFILE, null, 2));
    // What `cardlink admin create-card --profile yubico-piv-tool.json` does with the file.
    const profile = await loadCardProfile(profileFile);
    stack = await startDaemonStack({
      name: 'yubico-piv-tool',
      cards: [
        { ...cards.tdes, profile, managementKey: cards.tdes.key },
        { ...cards.aes, managementKey: cards.aes.key },
      ],
      pcscd: { cardlink: { slots: 4, friendlyName: 'cardlink Daemon Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      login: true,
    });
    for (const card of (await stack.daemon.status()).cards) readerOf[card.label] = card.readerName!;
  });

  after(async () => {
    await stack?.stop();
    fs.rmSync(profileDir, { recursive: true, force: true });
  });

  it('a card from a profile with a 3DES management key: status, and generate with the key typed at -k', async () => {
    const reader = readerOf[cards.tdes.label]!;
    const status = await y(reader, ['-a', 'status']);
    assert.equal(status.status, 0, status.out);
    assert.match(status.out, /Slot 9e:\s+Algorithm:\s+ECCP256/);
    const generated = await y(
      reader,
      ['-k', '-a', 'generate', '-s', '9e', '-A', 'ECCP256'],
      `${cards.tdes.key}\n`,
    );
    assert.equal(generated.status, 0, generated.out);
    assert.match(generated.out, /Successfully generated a new private key/);
    const wrong = await y(
      reader,
      ['-k', '-a', 'generate', '-s', '9e', '-A', 'ECCP256'],
      `${random3DesKeyHex()}\n`,
    );
    assert.match(wrong.out, /Failed authentication/);
  });

  it('a card from the default profile (AES-192): status and the PIN work, the management key does not', async () => {
    const reader = readerOf[cards.aes.label]!;
    const status = await y(reader, ['-a', 'status']);
    assert.equal(status.status, 0, status.out);
    assert.match(status.out, /PIN tries left:\s+3/);
    const pin = await y(reader, ['-a', 'verify-pin', '-P', cards.aes.pin]);
    assert.match(pin.out, /Successfully verified PIN/);
    // 2.2 authenticates with 3DES whatever the card has: the right AES key is refused (6A80).
    const generated = await y(
      reader,
      ['-k', '-a', 'generate', '-s', '9e', '-A', 'ECCP256'],
      `${cards.aes.key}\n`,
    );
    assert.notEqual(generated.status, 0, generated.out);
    assert.match(generated.out, /Failed authentication with the application/);
  });
});
