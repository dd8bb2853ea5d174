/**
 * `cardlink` as a whole: each command loads only what it needs, and errors are reported the same
 * way whatever the command (plain, or JSON with --json).
 *
 * Missing native modules are simulated without touching node_modules: the CLI runs under
 * test/support/hide-packages.ts, whose module hooks make a package fail to load as an uninstalled
 * package (`missing`) or an installed but unbuilt one (`unbuilt`) fails.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../support/cli-run.js';
import { HIDE_PACKAGES_ENV, hidePackagesValue, type HideMode } from '../support/hide-packages.js';

/** The hiding hooks' entry, from dist/test/bin/. */
const HIDE = fileURLToPath(new URL('../support/hide-packages.js', import.meta.url));
const MODES: readonly HideMode[] = ['missing', 'unbuilt'];

type Run = CliRun;

const show = (r: Run) => `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

describe('cardlink command line', () => {
  let dir: string;
  let home: string;

  /** Runs the CLI with no CARDLINK_* settings of the machine, a private HOME, `hidden` packages. */
  function cli(args: string[], hidden: Record<string, HideMode> = {}): Promise<Run> {
    const env = Object.assign(envWithoutCardlinkSettings(), {
      HOME: home,
      XDG_CONFIG_HOME: path.join(home, '.config'),
      XDG_STATE_HOME: path.join(home, '.state'),
      [HIDE_PACKAGES_ENV]: hidePackagesValue(hidden),
    });
    return runCardlink(args, env, ['--import', HIDE]);
  }

  /** The one JSON error line a failed run wrote to stderr (nothing to stdout). */
  function jsonError(r: Run): { code: string; message: string; context?: Record<string, unknown> } {
    assert.equal(r.stdout, '', show(r));
    const lines = r.stderr.trimEnd().split('\n');
    assert.equal(lines.length, 1, show(r));
    const parsed = JSON.parse(lines[0]!) as { error: { code: string; message: string } };
    assert.deepEqual(Object.keys(parsed), ['error'], show(r));
    return parsed.error;
  }

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-main-'));
    home = path.join(dir, 'home');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  describe('each command loads only what it needs', () => {
    for (const mode of MODES) {
      it(`server --help and admin list-cards run with pcsclite ${mode}`, async () => {
        const help = await cli(['server', '--help'], { pcsclite: mode });
        assert.equal(help.status, 0, show(help));
        assert.match(help.stdout, /cardlink server migrate/);

        const dataDir = path.join(dir, `server-${mode}`);
        const list = await cli(['admin', 'list-cards', '--data-dir', dataDir], { pcsclite: mode });
        assert.equal(list.status, 0, show(list));
        assert.equal(list.stdout, 'no cards\n');
        const json = await cli(['admin', 'list-cards', '--json', '--data-dir', dataDir], { pcsclite: mode });
        assert.equal(json.status, 0, show(json));
        assert.deepEqual(JSON.parse(json.stdout), []);
      });
    }

    it("the desktop's commands need none of the server's native modules, nor pcsclite", async () => {
      const hidden: Record<string, HideMode> = {
        pcsclite: 'missing',
        pkcs11js: 'missing',
        'better-sqlite3': 'unbuilt',
      };
      const help = await cli(['--help'], hidden);
      assert.equal(help.status, 0, show(help));
      assert.match(help.stdout, /local-card/);
      const check = await cli(['daemon', '--check', '--server-url', 'https://cards.example.test/'], hidden);
      assert.equal(check.status, 0, show(check));
      assert.equal(
        (JSON.parse(check.stdout) as { server: { url: string } }).server.url,
        'https://cards.example.test/',
      );
      const status = await cli(['status', '--runtime-dir', path.join(dir, 'no-daemon')], hidden);
      assert.equal(status.status, 69, show(status));
      assert.match(
        status.stderr,
        /^cardlink: the cardlink daemon is not running .*\[ERR_CONTROL_UNAVAILABLE\]\n$/,
      );
    });

    it("the daemon's start loads neither yargs nor the card's key, certificate or refresh code", async () => {
      // What the daemon process would otherwise keep for hours (docs/performance.md, daemon RSS).
      const hidden: Record<string, HideMode> = {
        yargs: 'missing',
        '@noble/curves': 'missing',
        '@peculiar/x509': 'missing',
        'openid-client': 'missing',
      };
      const check = await cli(['daemon', '--check', '--server-url', 'https://cards.example.test/'], hidden);
      assert.equal(check.status, 0, show(check));
      assert.equal(
        (JSON.parse(check.stdout) as { server: { url: string } }).server.url,
        'https://cards.example.test/',
      );
      // Whatever that reader leaves to yargs gets yargs' answers, help and usage errors alike.
      const help = await cli(['daemon', '--help']);
      assert.equal(help.status, 0, show(help));
      assert.match(help.stdout, /--log-level +\[choices: "error", "warn", "info", "debug"\]/);
      const bad = await cli(['daemon', '--log-level', 'loud']);
      assert.equal(bad.status, 64, show(bad));
      assert.match(bad.stderr, /Invalid values:.*Argument: log-level, Given: "loud"/s);
    });

    for (const mode of MODES) {
      it(`local-card with pcsclite ${mode} names the package and the fix, without a stack trace`, async () => {
        const r = await cli(['local-card'], { pcsclite: mode });
        assert.equal(r.status, 69, show(r));
        assert.equal(r.stdout, '');
        assert.match(
          r.stderr,
          /^cardlink: the native module "pcsclite", needed for talking to pcscd \(cardlink local-card\), cannot be loaded \(.+\)\. To fix it, run "npm rebuild pcsclite" .*install-scripts\/debian\/setup\.sh.*\[ERR_NATIVE_MODULE_UNAVAILABLE\]\n$/,
        );
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      });
    }

    it('the server with pkcs11js unbuilt says so, as JSON with --json', async () => {
      const r = await cli(['admin', 'list-cards', '--json', '--data-dir', path.join(dir, 'p11')], {
        pkcs11js: 'unbuilt',
      });
      assert.equal(r.status, 69, show(r));
      const error = jsonError(r);
      assert.equal(error.code, 'ERR_NATIVE_MODULE_UNAVAILABLE');
      assert.deepEqual(error.context, { package: 'pkcs11js' });
      assert.match(error.message, /npm rebuild pkcs11js/);
    });
  });

  describe('errors with --json', () => {
    it('a command error is one JSON line on stderr with its code; without --json the plain line', async () => {
      const runtime = path.join(dir, 'no-daemon');
      const json = await cli(['status', '--json', '--runtime-dir', runtime]);
      assert.equal(json.status, 69, show(json));
      const error = jsonError(json);
      assert.equal(error.code, 'ERR_CONTROL_UNAVAILABLE');
      assert.match(error.message, /the cardlink daemon is not running/);

      const cards = await cli(['cards', '--runtime-dir', runtime, '--json']);
      assert.equal(jsonError(cards).code, 'ERR_CONTROL_UNAVAILABLE');

      // The last of --json / --no-json counts, as yargs reads it.
      const plain = await cli(['status', '--json', '--runtime-dir', runtime, '--no-json']);
      assert.equal(plain.status, 69, show(plain));
      assert.match(
        plain.stderr,
        /^cardlink: the cardlink daemon is not running .*\[ERR_CONTROL_UNAVAILABLE\]\n$/,
      );
    });

    it('a bad setting of an admin command: the key and the file, exit 78', async () => {
      const file = path.join(dir, 'bad-server.json');
      await writeFile(file, JSON.stringify({ listen: { port: 'eighty' } }));
      const r = await cli(['admin', 'list-cards', '--json', '--config', file]);
      assert.equal(r.status, 78, show(r));
      const error = jsonError(r);
      assert.equal(error.code, 'ERR_CONFIG_INVALID');
      assert.ok(error.message.includes(file), error.message);
      assert.match(error.message, /listen\.port/);
    });

    it('usage errors are ERR_USAGE, exit 64, in both forms', async () => {
      const unknown = await cli(['admin', 'list-cards', '--json', '--bogus']);
      assert.equal(unknown.status, 64, show(unknown));
      assert.deepEqual(jsonError(unknown), { code: 'ERR_USAGE', message: 'Unknown argument: bogus' });

      const none = await cli(['--json']);
      assert.equal(none.status, 64, show(none));
      assert.equal(jsonError(none).code, 'ERR_USAGE');

      // A failed option check is a usage error too, not an unexpected one.
      const check = await cli(['local-card', '--pin-retries', '0']);
      assert.equal(check.status, 64, show(check));
      assert.equal(
        check.stderr,
        "cardlink: --pin-retries must be a whole number from 1 to 15\nRun 'cardlink --help' for usage.\n",
      );
      const checkJson = await cli(['local-card', '--pin-retries', '0', '--json']);
      assert.equal(checkJson.status, 64, show(checkJson));
      assert.equal(jsonError(checkJson).code, 'ERR_USAGE');
    });
  });
});
