/**
 * A private desktop keyring for a test: a D-Bus session bus of its own (`dbus-daemon --session`)
 * and GNOME Keyring's Secret Service on it, started with `--unlock` so its login collection exists
 * and is open, the way it is after a desktop login. Its files live in the test's directory; the
 * user's own keyring (if any) is never touched.
 */
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { firstLine, stopChild } from './child-process.js';

const run = promisify(execFile);
const READY_TIMEOUT_MS = 10_000;
const POLL_MS = 25;
/** The collection gnome-keyring's `--unlock` creates and makes the default. */
const LOGIN_COLLECTION = '/org/freedesktop/secrets/collection/login';

export interface SecretService {
  /** The bus address: put it into DBUS_SESSION_BUS_ADDRESS of whoever should use this keyring. */
  readonly address: string;
  /** Locks the login collection, as a screen lock or the user would; reading then needs a prompt. */
  lock(): Promise<void>;
  /** Stops the keyring and the bus. Safe to call twice. */
  close(): Promise<void>;
}

function gdbus(address: string, ...args: string[]): Promise<{ stdout: string }> {
  return run('gdbus', ['call', '--session', ...args], {
    env: { ...process.env, DBUS_SESSION_BUS_ADDRESS: address },
  });
}

/** Starts the bus and the keyring in `dir` (which must exist). */
export async function startSecretService(dir: string): Promise<SecretService> {
  const home = path.join(dir, 'keyring-home');
  const runtime = path.join(home, 'run');
  fs.mkdirSync(runtime, { recursive: true, mode: 0o700 });
  const bus = spawn('dbus-daemon', ['--session', '--nofork', '--nopidfile', '--print-address=1'], {
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let keyring: ChildProcess | undefined;
  try {
    const address = await firstLine(bus, 'dbus-daemon', READY_TIMEOUT_MS);
    keyring = spawn('gnome-keyring-daemon', ['--foreground', '--unlock', '--components=secrets'], {
      env: {
        PATH: process.env['PATH'],
        HOME: home,
        XDG_DATA_HOME: path.join(home, 'data'),
        XDG_RUNTIME_DIR: runtime,
        DBUS_SESSION_BUS_ADDRESS: address,
      },
      stdio: ['pipe', 'pipe', 'ignore'],
    });
    // The login keyring's password, read from stdin by --unlock: a throwaway for a throwaway keyring.
    keyring.stdin!.end('cardlink-test-keyring');
    keyring.stdout!.resume();
    // Nobody uses the bus before our keyring owns the name: a call earlier would make the bus
    // activate a keyring of its own (from /usr/share/dbus-1/services), one with no login collection.
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      const owned = await gdbus(
        address,
        '--dest=org.freedesktop.DBus',
        '--object-path=/org/freedesktop/DBus',
        '--method=org.freedesktop.DBus.NameHasOwner',
        'org.freedesktop.secrets',
      ).then((r) => r.stdout.includes('true'));
      if (owned) break;
      if (keyring.exitCode !== null || Date.now() > deadline)
        throw new Error('gnome-keyring-daemon did not take org.freedesktop.secrets');
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
    const started = { bus, keyring };
    return {
      address,
      lock: async () => {
        await gdbus(
          address,
          '--dest=org.freedesktop.secrets',
          '--object-path=/org/freedesktop/secrets',
          '--method=org.freedesktop.Secret.Service.Lock',
          `['${LOGIN_COLLECTION}']`,
        );
      },
      close: async () => {
        await stopChild(started.keyring);
        await stopChild(started.bus);
      },
    };
  } catch (error) {
    if (keyring) await stopChild(keyring);
    await stopChild(bus);
    throw error;
  }
}

/**
 * For a test file whose own process uses the keyring (the library the daemon and the tray load):
 * a temporary directory and a keyring in it, set as this process's session bus before the tests,
 * stopped and removed after them. No display: a locked keyring's unlock prompt then fails at once
 * instead of waiting for a person. Read `dir()` and `keyring()` inside tests (they exist from
 * `before` on).
 */
export function keyringForThisProcess(prefix: string): { dir(): string; keyring(): SecretService } {
  let dir: string | undefined;
  let keyring: SecretService | undefined;
  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
    keyring = await startSecretService(dir);
    process.env['DBUS_SESSION_BUS_ADDRESS'] = keyring.address;
    delete process.env['DISPLAY'];
    delete process.env['WAYLAND_DISPLAY'];
  });
  after(async () => {
    await keyring?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });
  return {
    dir: () => dir ?? assert.fail('keyringForThisProcess: used before its before() hook'),
    keyring: () => keyring ?? assert.fail('keyringForThisProcess: used before its before() hook'),
  };
}
