/**
 * A real local card for middleware tests: a private pcscd (test/support/pcscd.ts) and
 * `bin/cardlink local-card` serving into it, exactly as a user runs it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { REPO_ROOT, startPcscd, type PcscdInstance } from './pcscd.js';

export const OPENSC_PKCS11 = '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so';
export const CARDLINK_BIN = path.join(REPO_ROOT, 'bin', 'cardlink');
/** How long the CLI may take to report the card present. */
const READY_TIMEOUT_MS = 30000;

export interface LocalCardOptions {
  pin?: string;
  puk?: string;
  /** Default: a fresh random 3DES key (yubico-piv-tool 2.2 speaks only 3DES). */
  mgmtKeyHex?: string;
  mgmtKeyAlgorithm?: '3DES' | 'AES128' | 'AES192' | 'AES256';
  withKeys?: boolean;
  /** `--slot-algorithm` values, e.g. `['9a=RSA3072']`. */
  slotAlgorithms?: string[];
  pinRetries?: number;
  pukRetries?: number;
}

export interface LocalCard {
  readonly pcscd: PcscdInstance;
  readonly pin: string;
  readonly puk: string;
  readonly mgmtKeyHex: string;
  readonly readerName: string;
  /** Environment for middleware processes (points libpcsclite at the private pcscd). */
  readonly env: NodeJS.ProcessEnv;
  /** A scratch directory removed by stop(). */
  readonly dir: string;
  /** Runs a command with the card's environment; returns its output, throws on a non-zero exit. */
  run(
    cmd: string,
    args: string[],
    options?: { input?: Buffer | string; allowFailure?: boolean; env?: NodeJS.ProcessEnv },
  ): { status: number; stdout: string; stderr: string };
  stop(): Promise<void>;
}

/** A random 3DES key whose three DES keys differ (cardlink refuses degenerate 3DES keys). */
export function random3DesKeyHex(): string {
  return randomBytes(24).toString('hex');
}

export async function startLocalCard(options: LocalCardOptions = {}): Promise<LocalCard> {
  const pcscd = await startPcscd({ cardlink: { slots: 2, friendlyName: 'cardlink Test Reader' } });
  const pin = options.pin ?? '246810';
  const puk = options.puk ?? '13572468';
  const mgmtKeyHex = options.mgmtKeyHex ?? random3DesKeyHex();
  const dir = fs.mkdtempSync(path.join(pcscd.dir, 'work-'));
  const args = [
    'local-card',
    '--bridge-socket',
    pcscd.socketPath,
    '--reader-name',
    'cardlink Test Reader',
    '--mgmt-key-algorithm',
    options.mgmtKeyAlgorithm ?? '3DES',
    ...(options.withKeys ? ['--with-keys'] : []),
    ...(options.slotAlgorithms ?? []).flatMap((s) => ['--slot-algorithm', s]),
    ...(options.pinRetries ? ['--pin-retries', String(options.pinRetries)] : []),
    ...(options.pukRetries ? ['--puk-retries', String(options.pukRetries)] : []),
  ];
  // Secrets go through the environment, as the README recommends, not the command line.
  const env = { ...pcscd.env, CARDLINK_PIN: pin, CARDLINK_PUK: puk, CARDLINK_MGMT_KEY: mgmtKeyHex };
  const child: ChildProcess = spawn(CARDLINK_BIN, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  const readerName = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`local-card not ready in time:\n${output}`)),
      READY_TIMEOUT_MS,
    );
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      const m = /ready: PIV card present in reader "([^"]+)"/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`local-card exited with ${code} before it was ready:\n${output}`));
    });
  });
  const middlewareEnv = { ...pcscd.env };
  return {
    pcscd,
    pin,
    puk,
    mgmtKeyHex,
    readerName,
    env: middlewareEnv,
    dir,
    run(cmd, cmdArgs, runOptions = {}) {
      const r = spawnSync(cmd, cmdArgs, {
        env: { ...middlewareEnv, ...runOptions.env },
        cwd: dir,
        input: runOptions.input,
        encoding: 'utf8',
        timeout: 120000,
      });
      const result = { status: r.status ?? -1, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
      if (result.status !== 0 && !runOptions.allowFailure) {
        throw new Error(
          `${cmd} ${cmdArgs.join(' ')} exited ${result.status}\n${result.stdout}\n${result.stderr}`,
        );
      }
      return result;
    },
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      await pcscd.stop();
    },
  };
}

/** True when `tool` is on PATH (the test set-up installs every tool the tests use). */
export function haveTool(tool: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
}
