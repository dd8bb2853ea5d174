/**
 * `cardlink`: runs the command the command line names.
 *
 * The daemon's own start (`cardlink daemon ...`) is read without yargs (daemon/cli/daemon-argv.ts):
 * the daemon idles for hours, and yargs and the other commands' definitions would stay in its
 * memory (docs/performance.md, daemon RSS). Every other command line, the daemon's `--help` and
 * every daemon command line that reader does not take, goes to the yargs program (cli-program.ts).
 */
import { daemonArgsWithoutYargs } from '../daemon/cli/daemon-argv.js';
import { jsonRequested, reportAndExit } from './cli-errors.js';

const argv = process.argv.slice(2);
const daemonArgs = daemonArgsWithoutYargs(argv);
if (daemonArgs) {
  const json = jsonRequested(argv);
  try {
    await (await import('../daemon/cli/run-daemon.js')).runDaemon(daemonArgs);
  } catch (err) {
    reportAndExit(err, { json });
  }
} else {
  await (await import('./cli-program.js')).runCli();
}

// npm pcsclite keeps a native monitoring thread referenced even after its context is closed;
// a finished command must not hang on it.
process.exit(process.exitCode ?? 0);
