/**
 * A clean Debian 12 root for install tests: debootstrap's (test/install-scripts/debian-root.sh,
 * cached) unpacked into /var/tmp, /proc mounted in it, this machine's node copied to its
 * /usr/local/bin (Node.js 20 is the install's one prerequisite Debian 12 lacks), and a user.
 * Commands run in it with chroot and a clean environment. remove() kills the root's pcscd,
 * unmounts /proc and deletes the root, never through a mount point.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from './pcscd.js';

const execFileP = promisify(execFile);

/** PATH inside the root (Debian's default for root, /usr/local first as there). */
export const CHROOT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Paths of the root that listPaths() leaves out: kernel file systems, scratch space, homes. */
export const NOT_LISTED = ['/proc', '/dev', '/tmp', '/run', '/home'];

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and returns its exit code and output (a non-zero exit does not throw). */
export async function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Ran> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, {
      env: env ?? process.env,
      maxBuffer: 64 * 1024 * 1024,
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number | string; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw error;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

/** Throws with the output unless `r` exited 0. */
export function succeeded(r: Ran, what: string): Ran {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

/** Whether `p` exists, a link counted as itself (a root's absolute links point into the root). */
export function inRootExists(p: string): boolean {
  try {
    fs.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

export async function waitFor<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined>,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

export interface DebianRoot {
  readonly dir: string;
  /** `args` in the root as `user` (root unless given), with a clean environment. */
  run(args: string[], user?: string): Promise<Ran>;
  /** The environment run() gives `user`'s commands (for spawning long-running ones). */
  env(user?: string): NodeJS.ProcessEnv;
  /** Every path in the root but NOT_LISTED, relative to it. */
  listPaths(): Promise<Set<string>>;
  /** The pid of the root's own pcscd (its pid file, checked to be a process in this root). */
  pcscdPid(): number | undefined;
  remove(): Promise<void>;
}

export async function makeDebianRoot(user: string): Promise<DebianRoot> {
  const tarball = succeeded(
    await run('bash', [path.join(REPO_ROOT, 'test/install-scripts/debian-root.sh')]),
    'debian-root.sh',
  ).stdout.trim();
  const dir = fs.mkdtempSync('/var/tmp/cardlink-install-test-');
  let procMounted = false;
  const env = (who?: string): NodeJS.ProcessEnv => ({
    PATH: CHROOT_PATH,
    LANG: 'C.UTF-8',
    ...(who ? { HOME: `/home/${who}`, USER: who } : {}),
  });
  const pcscdPid = (): number | undefined => {
    const pidFile = path.join(dir, 'run/pcscd/pcscd.pid');
    if (!fs.existsSync(pidFile)) return undefined;
    const pid = Number(fs.readFileSync(pidFile, 'utf8').replace(/\D/g, ''));
    try {
      if (pid > 0 && fs.realpathSync(`/proc/${pid}/root`) === fs.realpathSync(dir)) return pid;
    } catch {
      // The process is gone.
    }
    return undefined;
  };
  const root: DebianRoot = {
    dir,
    run: (args, who) => run('chroot', [...(who ? [`--userspec=${who}:${who}`] : []), dir, ...args], env(who)),
    env,
    async listPaths() {
      const prune = NOT_LISTED.flatMap((p, i) => [...(i ? ['-o'] : []), '-path', dir + p]);
      const r = succeeded(
        await run('find', [dir, '-xdev', '(', ...prune, ')', '-prune', '-o', '-print']),
        'find',
      );
      return new Set(
        r.stdout
          .split('\n')
          .filter(Boolean)
          .map((p) => p.slice(dir.length) || '/'),
      );
    },
    pcscdPid,
    async remove() {
      const pid = pcscdPid();
      if (pid) process.kill(pid, 'SIGKILL');
      if (procMounted) await run('umount', [path.join(dir, 'proc')]);
      // Never delete through a mount point: only when nothing is mounted below the root any more.
      if (!fs.readFileSync('/proc/mounts', 'utf8').includes(` ${dir}/`)) {
        await run('rm', ['-rf', '--one-file-system', dir]);
      }
    },
  };
  try {
    succeeded(await run('tar', ['-C', dir, '-xf', tarball]), 'tar');
    succeeded(await run('mount', ['-t', 'proc', 'proc', path.join(dir, 'proc')]), 'mount proc');
    procMounted = true;
    fs.copyFileSync(process.execPath, path.join(dir, 'usr/local/bin/node'));
    fs.chmodSync(path.join(dir, 'usr/local/bin/node'), 0o755);
    succeeded(await root.run(['useradd', '--create-home', user]), 'useradd');
    return root;
  } catch (error) {
    await root.remove();
    throw error;
  }
}
