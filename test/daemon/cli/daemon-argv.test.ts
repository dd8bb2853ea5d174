/**
 * `cardlink daemon ...` read without yargs (daemon/cli/daemon-argv.ts): every command line it takes
 * gives exactly the arguments yargs gives with the daemon command's own definition, and every line
 * where the two could differ is left to yargs.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import yargs from 'yargs';
import { daemonArgsWithoutYargs } from '../../../daemon/cli/daemon-argv.js';
import { daemonCommand } from '../../../daemon/cli/daemon-commands.js';
import { COMMON_OPTIONS, DAEMON_OPTIONS } from '../../../daemon/cli/daemon-options.js';

const NAMES = [...Object.keys(COMMON_OPTIONS), ...Object.keys(DAEMON_OPTIONS)];

/** The daemon's arguments as the yargs program reads `argv` (only the options' own names). */
async function byYargs(argv: string[]): Promise<Record<string, unknown>> {
  let seen: Record<string, unknown> | undefined;
  await yargs(argv)
    .command({ ...daemonCommand, handler: (args) => void (seen = args as Record<string, unknown>) })
    .strict()
    .fail((msg, err) => {
      throw err ?? new Error(msg);
    })
    .parseAsync();
  assert.ok(seen, 'the daemon command ran');
  return Object.fromEntries(NAMES.map((n) => [n, seen![n]]));
}

describe('the daemon command line without yargs', () => {
  const taken: string[][] = [
    ['daemon'],
    ['daemon', '--config', '/etc/cardlink/daemon.json'],
    ['daemon', '--config=/x.json', '--runtime-dir', '/run/user/1000/cardlink'],
    ['daemon', '--check', '--server-url', 'https://cards.example.test/'],
    [
      'daemon',
      '--server-url=https://cards.example.test:8443/',
      '--server-ca',
      'ca.pem',
      '--server-cert-sha256',
      'AB:CD',
      '--state-dir',
      's',
      '--reader-socket',
      '/run/pcscd/cardlink.sock',
      '--log-level',
      'debug',
      '--log-file',
      'daemon.log',
    ],
    ['daemon', '--config', ''],
    ['daemon', '--log-level=warn', '--check'],
  ];
  for (const argv of taken) {
    it(`takes ${argv.join(' ')} as yargs does`, async () => {
      const ours = daemonArgsWithoutYargs(argv);
      assert.ok(ours, 'taken');
      const picked = Object.fromEntries(
        NAMES.map((n) => [n, (ours as unknown as Record<string, unknown>)[n]]),
      );
      assert.deepEqual(picked, await byYargs(argv));
    });
  }

  const leftToYargs: string[][] = [
    ['status'],
    ['daemonx'],
    ['daemon', '--help'],
    ['daemon', '--version'],
    ['daemon', 'extra'],
    ['daemon', '--config', 'a.json', '--config', 'b.json'],
    ['daemon', '--no-check'],
    ['daemon', '--check=false'],
    ['daemon', '--serverUrl', 'https://cards.example.test/'],
    ['daemon', '--log-level', 'loud'],
    ['daemon', '--config'],
    ['daemon', '--config', '--check'],
    ['daemon', '-c', 'x'],
    ['daemon', '--json'],
    ['daemon', '--', '--config', 'x'],
  ];
  for (const argv of leftToYargs) {
    it(`leaves ${argv.join(' ')} to yargs`, () => {
      assert.equal(daemonArgsWithoutYargs(argv), undefined);
    });
  }
});
