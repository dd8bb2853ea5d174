/**
 * SoftHSM2 tokens for tests: a private SOFTHSM2_CONF and token directory per test process, and a
 * freshly initialized token with random PINs per call.
 *
 * SoftHSM reads SOFTHSM2_CONF once, at C_Initialize, and pkcs11js initializes a module once per
 * process: so the configuration is per process (set in `process.env` before the first token), and
 * each test gets its own token (label) inside it. Needs Debian's `softhsm2`.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** Debian's SoftHSM2 PKCS#11 module. */
export const SOFTHSM_MODULE = '/usr/lib/softhsm/libsofthsm2.so';

export interface SoftHsmToken {
  readonly modulePath: string;
  readonly tokenLabel: string;
  /** The slot id SoftHSM assigned to the token. */
  readonly slotId: number;
  /** User PIN (random per token). */
  readonly pin: string;
  readonly soPin: string;
  readonly confPath: string;
  readonly tokenDir: string;
}

let setup: Promise<{ dir: string; confPath: string; tokenDir: string }> | undefined;

function processSetup(): Promise<{ dir: string; confPath: string; tokenDir: string }> {
  setup ??= (async () => {
    if (!existsSync(SOFTHSM_MODULE)) {
      throw new Error(`SoftHSM2 is not installed (${SOFTHSM_MODULE} missing): run test/prepare-machine.sh`);
    }
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-softhsm-'));
    const tokenDir = join(dir, 'tokens');
    await mkdir(tokenDir, { mode: 0o700 });
    const confPath = join(dir, 'softhsm2.conf');
    await writeFile(
      confPath,
      `directories.tokendir = ${tokenDir}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n`,
      { mode: 0o600 },
    );
    process.env.SOFTHSM2_CONF = confPath;
    process.once('exit', () => {
      // The directory only holds throwaway test tokens.
      rmSync(dir, { recursive: true, force: true });
    });
    return { dir, confPath, tokenDir };
  })();
  return setup;
}

function randomPin(): string {
  // 16 decimal digits, from 8 random bytes.
  return BigInt(`0x${randomBytes(8).toString('hex')}`)
    .toString()
    .padStart(16, '0')
    .slice(-16);
}

/** Initializes a new token in the next free slot, with random user and SO PINs. */
export async function createSoftHsmToken(
  label = `t${randomBytes(4).toString('hex')}`,
): Promise<SoftHsmToken> {
  const { confPath, tokenDir } = await processSetup();
  const pin = randomPin();
  const soPin = randomPin();
  const { stdout } = await run(
    'softhsm2-util',
    ['--init-token', '--free', '--label', label, '--pin', pin, '--so-pin', soPin],
    { env: { ...process.env, SOFTHSM2_CONF: confPath } },
  );
  const m = /reassigned to slot (\d+)/.exec(stdout);
  if (!m) throw new Error(`softhsm2-util did not report the token's slot: ${stdout.trim()}`);
  return {
    modulePath: SOFTHSM_MODULE,
    tokenLabel: label,
    slotId: Number(m[1]),
    pin,
    soPin,
    confPath,
    tokenDir,
  };
}
