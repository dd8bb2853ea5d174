/**
 * Running the real PC/SC and PKCS#11 tools (pkcs11-tool, openssl, yubico-piv-tool, ssh-keygen)
 * against a test's private pcscd, the one way every full-chain test does it: pcscd's environment
 * with OpenSC as the PKCS#11 module, the test's directory as the working directory, a timeout, and
 * a failure that shows the tool's output (and whatever else the test says helps, e.g. the daemon's
 * last lines).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { OPENSC_PKCS11 } from './local-card.js';

/** The longest a tool may run before the test fails (OpenSC's slowest steps take a few seconds). */
export const TOOL_TIMEOUT_MS = 60_000;

export interface ToolRunOptions {
  /** pcscd's environment (PCSCLITE_CSOCK_NAME), or any other the tools need. */
  readonly env: NodeJS.ProcessEnv;
  /** The working directory: where the tools' files go. */
  readonly cwd: string;
  /** `stdout` alone (for tests that parse it), or stdout then stderr (the default). */
  readonly output?: 'stdout' | 'both';
  /** More text for the failure message, read when a tool fails. */
  readonly context?: () => string;
}

export interface ToolRunner {
  /** Runs the tool with `input` on its stdin; its output, or the test fails with it. */
  run(cmd: string, args: readonly string[], input?: string): Promise<string>;
  /** Runs the tool; its exit code (-1 when it did not run or was killed) and stdout+stderr. */
  status(cmd: string, args: readonly string[]): Promise<{ code: number; out: string }>;
  /** `pkcs11-tool --module <OpenSC> ...args`, as `run`. */
  p11(args: readonly string[]): Promise<string>;
}

/**
 * The runner. `settings` may be a function, read at each run: a test declares its runner before
 * its `before` hook has started pcscd.
 */
export function toolRunner(settings: ToolRunOptions | (() => ToolRunOptions)): ToolRunner {
  const current = typeof settings === 'function' ? settings : () => settings;
  const exec = (cmd: string, args: readonly string[], input: string) => {
    const options = current();
    const pending = promisify(execFile)(cmd, [...args], {
      env: { ...options.env, PKCS11_MODULE_PATH: OPENSC_PKCS11 },
      cwd: options.cwd,
      encoding: 'utf8',
      timeout: TOOL_TIMEOUT_MS,
    });
    // A tool that exits without reading its stdin (most do) must not fail the test with EPIPE.
    pending.child.stdin?.on('error', () => undefined);
    pending.child.stdin?.end(input);
    return pending;
  };
  const run = async (cmd: string, args: readonly string[], input = ''): Promise<string> => {
    const options = current();
    try {
      const { stdout, stderr } = await exec(cmd, args, input);
      return options.output === 'stdout' ? stdout : `${stdout}${stderr}`;
    } catch (error) {
      const e = error as { stdout?: string; stderr?: string };
      const more = options.context ? `\n${options.context()}` : '';
      return assert.fail(`${cmd} ${args.join(' ')} failed\n${e.stdout ?? ''}\n${e.stderr ?? ''}${more}`);
    }
  };
  return {
    run,
    async status(cmd, args) {
      try {
        const { stdout, stderr } = await exec(cmd, args, '');
        return { code: 0, out: stdout + stderr };
      } catch (error) {
        const e = error as { code?: number; stdout?: string; stderr?: string };
        return { code: typeof e.code === 'number' ? e.code : -1, out: (e.stdout ?? '') + (e.stderr ?? '') };
      }
    },
    p11: (args) => run('pkcs11-tool', ['--module', OPENSC_PKCS11, ...args]),
  };
}
