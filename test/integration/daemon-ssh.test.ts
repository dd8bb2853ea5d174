/**
 * End to end, all parts real: the test IdP, a card server, pcscd with the cardlink reader,
 * `cardlink daemon` with a scripted login, a private `sshd`, and `ssh` with OpenSC's PKCS#11 module.
 * alice's card's PIV authentication key (9A) is in authorized_keys; ssh logs in with it, the PIN
 * coming from SSH_ASKPASS. A wrong PIN gets no login.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { TestDaemon } from '../support/daemon.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { OPENSC_PKCS11 } from '../support/local-card.js';
import type { PcscdInstance } from '../support/pcscd.js';
import { startSshd, type SshdInstance } from '../support/sshd.js';

const PIN = '246810';
const WRONG_PIN = '999999';
const MARKER = 'logged-in-with-card';
/** How long one ssh login (or ssh-keygen -D) may take: PKCS#11 start-up, a card round trip per APDU. */
const SSH_TIMEOUT_MS = 60000;
/** SELECT the PIV Card Application by its AID (SP 800-73-4 Part 2, 3.1.1; AID in Part 1, 2.2). */
const SELECT_PIV_APDU = '00 A4 04 00 09 A0 00 00 03 08 00 00 10 00';
/** VERIFY the PIV Card Application PIN (80) without data: asks for its status (SP 800-73-4 Part 2, 3.2.1). */
const PIN_STATUS_APDU = '00 20 00 80';

interface Outcome {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command without a shell and without stdin; resolves with its exit code and output. */
function runCommand(cmd: string, args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      { env, cwd, encoding: 'utf8', timeout: SSH_TIMEOUT_MS, killSignal: 'SIGKILL' },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === 'number' ? error.code : null) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end();
  });
}

describe('ssh logs into sshd with the key on a cardlink card (OpenSC PKCS#11)', () => {
  let stack: DaemonStack;
  let dir: string;
  let pcscd: PcscdInstance;
  let daemon: TestDaemon;
  let sshd: SshdInstance;
  let askpass: string;
  let askpassLog: string;
  /** The public half of 9A for ssh's IdentityFile (no private file next to it: the key is on the card). */
  let identityFile: string;
  /** Reader index of alice's card for opensc-tool (our reader is the only one in this pcscd). */
  let readerIndex: number;
  /** PIN tries left before the first ssh. */
  let triesAtStart: number;

  /** Everything useful when a step fails. */
  const diagnostics = (o?: Outcome) =>
    [
      o ? `exit ${o.code}\nstdout:\n${o.stdout}\nstderr:\n${o.stderr}` : '',
      `sshd log:\n${sshd?.log().slice(-3000) ?? ''}`,
      `daemon output:\n${daemon?.output().slice(-3000) ?? ''}`,
    ].join('\n');

  const ssh = (pin: string) => {
    const env: NodeJS.ProcessEnv = {
      ...pcscd.env,
      SSH_ASKPASS: askpass,
      SSH_ASKPASS_REQUIRE: 'force',
      CARDLINK_TEST_ASKPASS_PIN: pin,
    };
    // No agent: only the card's keys.
    delete env.SSH_AUTH_SOCK;
    return runCommand(
      'ssh',
      [
        '-F',
        '/dev/null',
        '-o',
        `UserKnownHostsFile=${path.join(dir, 'known_hosts')}`,
        '-o',
        'StrictHostKeyChecking=accept-new',
        '-o',
        'BatchMode=no',
        // With IdentitiesOnly, ssh uses a PKCS#11 key only when an IdentityFile's public key matches it.
        '-o',
        'IdentitiesOnly=yes',
        '-o',
        `IdentityFile=${identityFile}`,
        '-o',
        `PKCS11Provider=${OPENSC_PKCS11}`,
        '-o',
        'PreferredAuthentications=publickey',
        '-v',
        '-p',
        String(sshd.port),
        `${sshd.user}@127.0.0.1`,
        'echo',
        MARKER,
      ],
      env,
      dir,
    );
  };

  before(async () => {
    stack = await startDaemonStack({
      name: 'daemon-ssh',
      cards: [{ label: 'alice ssh card', pin: PIN, puk: '97531864' }],
      pcscd: { cardlink: { slots: 4, friendlyName: 'cardlink Daemon Reader' } },
      daemon: { deviceName: 'alice-laptop' },
      login: true,
    });
    ({ dir, pcscd, daemon } = stack);
    const cards = await daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    const slot = cards.find((c) => c.state === 'inserted')?.slot;
    if (slot === undefined) assert.fail(`no slot for the inserted card: ${JSON.stringify(cards)}`);
    readerIndex = slot;

    // The card's public keys as OpenSC labels them: PIV authentication (9A, RSA-2048) first.
    const keys = await runCommand('ssh-keygen', ['-D', OPENSC_PKCS11], pcscd.env, dir);
    assert.equal(keys.code, 0, diagnostics(keys));
    const lines = keys.stdout.split('\n').filter((l) => l.trim() !== '');
    assert.equal(lines.length, 4, `one key per slot 9A, 9C, 9D, 9E:\n${keys.stdout}`);
    const pivAuth = lines[0]!;
    assert.match(pivAuth, /^ssh-rsa \S+ PIV AUTH pubkey$/, keys.stdout);
    fs.mkdirSync(path.join(dir, 'id'), { mode: 0o700 });
    identityFile = path.join(dir, 'id', 'card-9a');
    fs.writeFileSync(`${identityFile}.pub`, `${pivAuth}\n`);

    // The PIN comes from the environment, so one script serves the right and the wrong PIN.
    askpass = path.join(dir, 'askpass.sh');
    askpassLog = path.join(dir, 'askpass.log');
    fs.writeFileSync(
      askpass,
      `#!/bin/sh\nprintf '%s\\n' "$1" >> '${askpassLog}'\nprintf '%s\\n' "$CARDLINK_TEST_ASKPASS_PIN"\n`,
      { mode: 0o700 },
    );

    fs.mkdirSync(path.join(dir, 'sshd'));
    sshd = await startSshd({ dir: path.join(dir, 'sshd'), authorizedKeys: `${pivAuth}\n` });

    // A fresh card: PIN not verified, its tries left (a wrong PIN must leave at least one).
    const { verified, tries } = await pinStatus();
    if (verified || tries === undefined || tries < 2)
      assert.fail(`PIN status at start: ${verified}, ${tries}`);
    triesAtStart = tries;
  });

  after(async () => {
    await sshd?.stop();
    await stack?.stop();
  });

  /** The prompts ssh passed to SSH_ASKPASS, one a line. */
  const askpassPrompts = () =>
    (fs.existsSync(askpassLog) ? fs.readFileSync(askpassLog, 'utf8') : '')
      .split('\n')
      .filter((l) => l !== '');

  /** The card's PIN status, asked with a VERIFY without data (uses no try). */
  const pinStatus = async (): Promise<{ verified: boolean; tries?: number }> => {
    const o = await runCommand(
      'opensc-tool',
      ['-r', String(readerIndex), '-s', SELECT_PIV_APDU, '-s', PIN_STATUS_APDU],
      pcscd.env,
      dir,
    );
    assert.equal(o.code, 0, diagnostics(o));
    const sws = [...o.stdout.matchAll(/SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})/gi)];
    assert.equal(sws.length, 2, o.stdout);
    const [, sw1, sw2] = sws[1]!;
    if (sw1 === '90' && sw2 === '00') return { verified: true };
    assert.ok(sw1 === '63' && /^C[0-9A-F]$/i.test(sw2!), o.stdout);
    return { verified: false, tries: parseInt(sw2!.slice(1), 16) };
  };

  // The wrong PIN first: it uses up one of the card's PIN tries, and the right PIN after resets them.
  it('a wrong PIN from SSH_ASKPASS gets no login', async () => {
    const o = await ssh(WRONG_PIN);
    assert.notEqual(o.code, 0, diagnostics(o));
    assert.ok(!o.stdout.includes(MARKER), diagnostics(o));
    // Asked once, refused by the card, so no signature: sshd accepted nothing.
    const prompts = askpassPrompts();
    assert.equal(prompts.length, 1, `${JSON.stringify(prompts)}\n${diagnostics(o)}`);
    assert.match(prompts[0]!, /PIN/, diagnostics(o));
    assert.match(o.stderr, /PIN incorrect/, diagnostics(o));
    assert.match(o.stderr, /Permission denied \(publickey\)/, diagnostics(o));
    assert.doesNotMatch(sshd.log(), /Accepted publickey/, diagnostics(o));
    assert.deepEqual(await pinStatus(), { verified: false, tries: triesAtStart - 1 });
  });

  it('the right PIN from SSH_ASKPASS logs in; sshd accepts the public key', async () => {
    fs.rmSync(askpassLog, { force: true });
    const o = await ssh(PIN);
    assert.equal(o.code, 0, diagnostics(o));
    assert.ok(o.stdout.includes(MARKER), diagnostics(o));
    const prompts = askpassPrompts();
    assert.equal(prompts.length, 1, `${JSON.stringify(prompts)}\n${diagnostics(o)}`);
    assert.match(prompts[0]!, /PIN/, diagnostics(o));
    assert.match(
      sshd.log(),
      new RegExp(`Accepted publickey for ${sshd.user} from 127\\.0\\.0\\.1 .* RSA `),
      diagnostics(o),
    );
    // The right PIN reset the counter (the card may still hold the PIN as verified: nothing reset it).
    const status = await pinStatus();
    assert.ok(status.verified || status.tries === triesAtStart, JSON.stringify(status));
  });
});
