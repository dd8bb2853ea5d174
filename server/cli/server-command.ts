/**
 * `cardlink server`: runs the card server until SIGINT/SIGTERM. `cardlink server migrate` brings
 * the database schema up to date and exits. Settings: docs/server-config.md.
 *
 * Only the definitions live here (options, help); the handlers import run-server.ts, and with it
 * the server, the database drivers and the key providers, when the command runs.
 */
import type { Argv, CommandModule } from 'yargs';

export interface ServerArgs {
  config?: string;
  'data-dir'?: string;
  host?: string;
  port?: number;
  'public-url'?: string;
  'database-url'?: string;
  'log-level'?: string;
}

function withServerOptions<T>(y: Argv<T>): Argv<T & ServerArgs> {
  return y
    .option('config', { type: 'string', describe: 'JSON config file (env CARDLINK_SERVER_CONFIG)' })
    .option('data-dir', { type: 'string', describe: 'where the SQLite file, key file and TLS pair live' })
    .option('host', { type: 'string', describe: 'listen address (default 127.0.0.1)' })
    .option('port', { type: 'number', describe: 'listen port (default 8443)' })
    .option('public-url', { type: 'string', describe: "https URL clients use; the tokens' audience" })
    .option('database-url', { type: 'string', describe: 'sqlite:<file> or postgres://…' })
    .option('log-level', { type: 'string', choices: ['error', 'warn', 'info', 'debug'] }) as Argv<
    T & ServerArgs
  >;
}

export const serverCommand: CommandModule<object, ServerArgs> = {
  command: 'server',
  describe: 'Run the card server (subcommand: migrate)',
  builder: (y) =>
    withServerOptions(y).command({
      command: 'migrate',
      describe: 'Bring the database schema up to date and exit',
      handler: async (args) => (await import('./run-server.js')).runMigrate(args as ServerArgs),
    }),
  handler: async (args) => (await import('./run-server.js')).runServer(args),
};
