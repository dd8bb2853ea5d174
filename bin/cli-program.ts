/**
 * `cardlink` command line: one yargs program; each part registers its own subcommands. bin/main.ts
 * runs it for every command line except the daemon's own start.
 *
 * Each command loads only what it needs. The modules imported here hold definitions (options and
 * help) and nothing heavy; a command's handler imports its own module when it runs, so `cardlink
 * server` never loads the PC/SC client (native pcsclite), the daemon never loads the server's
 * database drivers or PKCS#11, and a native module that cannot be loaded stops only the commands
 * that need it, with an error that names it and the fix (protocol/native-module.ts).
 */
import type { Argv, CommandModule } from 'yargs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { daemonCommands } from '../daemon/cli/daemon-commands.js';
import { localCardCommand } from '../daemon/cli/local-card.js';
import { pinCommand } from '../daemon/cli/pin-command.js';
import { CardlinkError } from '../protocol/errors.js';
import { serverCommand } from '../server/cli/server-command.js';
import { demoCommand } from '../demo/demo-command.js';
import { jsonRequested, reportAndExit, usageError } from './cli-errors.js';
import { trayCommand } from '../tray/cli/tray-command.js';

/**
 * `cardlink admin`: its subcommands are defined with their handlers in
 * server/cli/admin-command.ts, which loads the server's storage and key providers; it is imported
 * only when `admin` is the command (yargs waits for an async builder, help included).
 */
const adminCommand: CommandModule = {
  command: 'admin',
  describe: 'Administer the card server on its host: cards, users, sessions, keys, audit log',
  builder: async (y: Argv) => {
    const { adminCommand: admin } = await import('../server/cli/admin-command.js');
    return (admin.builder as (y: Argv) => Argv)(y);
  },
  handler: () => undefined,
};

/** Runs the command `process.argv` names; resolves when its handler is done. */
export async function runCli(): Promise<void> {
  const argv = hideBin(process.argv);
  const json = jsonRequested(argv);
  const fail = (err: unknown): never => reportAndExit(err, { json });
  await yargs(argv)
    .scriptName('cardlink')
    .command(localCardCommand)
    .command(adminCommand)
    .command(serverCommand)
    .command(daemonCommands)
    .command(pinCommand)
    .command(demoCommand)
    .command(trayCommand)
    .demandCommand(1, 'Name a command; see --help.')
    .strict()
    .fail((msg, err) => {
      // yargs passes a message for usage errors (its own and failed checks), none for a handler's error.
      if (err instanceof CardlinkError || !msg) fail(err);
      fail(usageError(msg));
    })
    .help()
    .parseAsync()
    .catch(fail);
}
