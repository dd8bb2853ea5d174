/**
 * `cardlink` command line: one yargs program; each part registers its own subcommands.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { CardlinkError, exitCodeFor } from '../protocol/errors.js';
import { escapeControlCharacters } from '../protocol/log.js';
import { daemonCommands } from '../daemon/cli/daemon-commands.js';
import { localCardCommand } from '../daemon/cli/local-card.js';
import { adminCommand } from '../server/cli/admin-command.js';
import { serverCommand } from '../server/cli/server-command.js';
import { trayCommand } from '../tray/cli/tray-command.js';

function reportAndExit(err: unknown): never {
  if (err instanceof CardlinkError) {
    process.stderr.write(`cardlink: ${escapeControlCharacters(err.message)} [${err.code}]\n`);
    process.exit(exitCodeFor(err.code));
  }
  // Unexpected: say so without a stack trace unless asked for one.
  const message = err instanceof Error ? err.message : String(err);
  process.stderr.write(`cardlink: unexpected error: ${escapeControlCharacters(message)}\n`);
  if (process.env['CARDLINK_DEBUG'] === '1' && err instanceof Error && err.stack)
    process.stderr.write(`${err.stack}\n`);
  process.exit(1);
}

await yargs(hideBin(process.argv))
  .scriptName('cardlink')
  .command(localCardCommand)
  .command(adminCommand)
  .command(serverCommand)
  .command(daemonCommands)
  .command(trayCommand)
  .demandCommand(1, 'Name a command; see --help.')
  .strict()
  .fail((msg, err) => {
    if (err) reportAndExit(err);
    process.stderr.write(`cardlink: ${msg}\nRun 'cardlink --help' for usage.\n`);
    process.exit(64); // EX_USAGE
  })
  .help()
  .parseAsync()
  .catch(reportAndExit);

// npm pcsclite keeps a native monitoring thread referenced even after its context is closed;
// a finished command must not hang on it.
process.exit(process.exitCode ?? 0);
