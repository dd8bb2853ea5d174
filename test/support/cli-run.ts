/**
 * Runs the built `cardlink` command line (dist/bin/main.js) as a child process for tests that check
 * what a user sees: its exit status and everything it wrote to stdout and stderr.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** dist/bin/main.js, from dist/test/support/. */
export const CARDLINK_MAIN = fileURLToPath(new URL('../../bin/main.js', import.meta.url));

/** Milliseconds one CLI run may take on a loaded machine (create-card generates RSA keys). */
export const CLI_RUN_TIMEOUT_MS = 60_000;

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `process.env` without any CARDLINK_* setting of the machine, so only the test's own apply. */
export function envWithoutCardlinkSettings(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CARDLINK_')) env[k] = v;
  return env;
}

/**
 * `node [nodeArgs] main.js [args]` with `env`; rejects (after killing it) when it runs past
 * CLI_RUN_TIMEOUT_MS, naming the command and what it printed. `input`, when given, is written to
 * its stdin (a pipe, not a terminal); otherwise stdin is closed.
 */
export function runCardlink(
  args: readonly string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: readonly string[] = [],
  input?: string,
): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...nodeArgs, CARDLINK_MAIN, ...args], {
      env,
      stdio: [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`cardlink ${args.join(' ')} timed out:\n${stdout}${stderr}`));
    }, CLI_RUN_TIMEOUT_MS);
    child.once('error', reject);
    child.once('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}
