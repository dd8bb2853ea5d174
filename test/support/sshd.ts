/**
 * A private OpenSSH server for a test: Debian's `/usr/sbin/sshd -D -e` with its own config file,
 * host key, authorized_keys and pid file in the test's directory, listening on 127.0.0.1 and a free
 * port. Public-key login only, for the user running the tests (root on the test machine).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.js';

/** Debian's sshd (openssh-server). It re-executes itself, so it must be started by absolute path. */
export const SSHD_BINARY = '/usr/sbin/sshd';
/** sshd's privilege separation directory (Debian's build); sshd refuses to start without it. */
const PRIVSEP_DIR = '/run/sshd';
/** How long startSshd waits for sshd to accept connections. */
export const SSHD_READY_TIMEOUT_MS = 10000;
/** How long stop() waits after SIGTERM before SIGKILL. */
const SSHD_STOP_GRACE_MS = 3000;
/** Start attempts when another process takes the free port between probing and sshd's bind. */
const SSHD_START_ATTEMPTS = 3;
/** Poll interval while waiting for the port. */
const POLL_MS = 20;
/** With `UsePAM no`, sshd refuses accounts whose password field starts with this (auth.c, Linux). */
const LOCKED_PASSWD_PREFIX = '!';

export interface StartSshdOptions {
  /** Directory for the config, host key, authorized_keys, pid file and log (must exist). */
  dir: string;
  /** Contents of the authorized_keys file (one OpenSSH public key a line). */
  authorizedKeys: string;
}

export interface SshdInstance {
  readonly port: number;
  /** The user to log in as: the one running the tests. */
  readonly user: string;
  /** sshd's log (stderr, `-e`) so far. */
  log(): string;
  /** Stops sshd (SIGTERM, then SIGKILL). Safe to call twice. */
  stop(): Promise<void>;
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Fails early, with the reason, where sshd would only refuse the login later. */
function checkAccount(user: string): void {
  let shadow: string;
  try {
    shadow = fs.readFileSync('/etc/shadow', 'utf8');
  } catch {
    return; // not readable: let sshd decide
  }
  const entry = shadow.split('\n').find((l) => l.startsWith(`${user}:`));
  const passwd = entry?.split(':')[1] ?? '';
  if (passwd.startsWith(LOCKED_PASSWD_PREFIX)) {
    throw new Error(
      `test/support/sshd: account ${user} is locked (password field starts with "!"); sshd with UsePAM no ` +
        `refuses it even for public keys. Unlock it, e.g. usermod -p '*' ${user}`,
    );
  }
}

export async function startSshd(options: StartSshdOptions): Promise<SshdInstance> {
  if (!fs.existsSync(SSHD_BINARY)) throw new Error('sshd is not installed: apt-get install openssh-server');
  const user = os.userInfo().username;
  checkAccount(user);
  fs.mkdirSync(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
  const dir = path.resolve(options.dir);
  const hostKey = path.join(dir, 'ssh_host_ed25519_key');
  if (!fs.existsSync(hostKey)) {
    const keygen = ['-q', '-t', 'ed25519', '-N', '', '-C', 'cardlink-test-host', '-f', hostKey];
    await promisify(execFile)('ssh-keygen', keygen);
  }
  const authorizedKeys = path.join(dir, 'authorized_keys');
  const keys = options.authorizedKeys;
  fs.writeFileSync(authorizedKeys, keys.endsWith('\n') ? keys : `${keys}\n`, { mode: 0o600 });

  let lastError: Error | undefined;
  for (let attempt = 0; attempt < SSHD_START_ATTEMPTS; attempt++) {
    const port = await freePort();
    const configFile = path.join(dir, 'sshd_config');
    fs.writeFileSync(
      configFile,
      [
        `ListenAddress 127.0.0.1:${port}`,
        `HostKey ${hostKey}`,
        `PidFile ${path.join(dir, 'sshd.pid')}`,
        `AuthorizedKeysFile ${authorizedKeys}`,
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'PermitRootLogin prohibit-password',
        // authorized_keys and its directories live in a temp dir, not in a home directory.
        'StrictModes no',
        'LogLevel VERBOSE',
        '',
      ].join('\n'),
    );
    try {
      return await launch(configFile, port, user);
    } catch (error) {
      lastError = error as Error;
      if (!/Address already in use/.test(lastError.message)) throw lastError;
    }
  }
  throw lastError!;
}

async function launch(configFile: string, port: number, user: string): Promise<SshdInstance> {
  // setpriv --pdeathsig: sshd dies with this process even when it is killed without cleaning up.
  const child: ChildProcess = spawn(
    'setpriv',
    ['--pdeathsig', 'KILL', '--', SSHD_BINARY, '-D', '-e', '-f', configFile],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let text = '';
  child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('exit', () => {
      exited = true;
      resolve();
    });
  });
  const onExit = () => child.kill('SIGKILL');
  process.once('exit', onExit);

  const instance: SshdInstance = {
    port,
    user,
    log: () => text,
    async stop() {
      process.removeListener('exit', onExit);
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), SSHD_STOP_GRACE_MS);
      await exitPromise;
      clearTimeout(timer);
    },
  };

  const deadline = Date.now() + SSHD_READY_TIMEOUT_MS;
  for (;;) {
    if (exited) {
      await instance.stop();
      throw new Error(`sshd exited during start-up:\n${text.slice(-4000)}`);
    }
    // sshd logs "Server listening on ..." once it has bound the port.
    if (/Server listening on/.test(text) && (await canConnect(port))) return instance;
    if (Date.now() > deadline) {
      await instance.stop();
      throw new Error(`sshd not ready in time:\n${text.slice(-4000)}`);
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}
