/**
 * `cardlink server`: runs the card server until SIGINT/SIGTERM. `cardlink server migrate` brings
 * the database schema up to date and exits. Settings: docs/server-config.md.
 */
import type { Argv, CommandModule } from 'yargs';
import { createLogger } from '../../protocol/log.js';
import { loadServerConfig, type ServerFlags } from '../config/server-config.js';
import { openServerResources } from '../config/server-resources.js';
import { startCardServer } from '../http/card-server.js';
import { loadOrCreateTlsPair } from '../tls/tls-pair.js';

interface ServerArgs {
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

export function flagsOf(args: ServerArgs): ServerFlags {
  return {
    config: args.config,
    dataDir: args['data-dir'],
    host: args.host,
    port: args.port,
    publicUrl: args['public-url'],
    databaseUrl: args['database-url'],
    logLevel: args['log-level'],
  };
}

async function runServer(args: ServerArgs): Promise<void> {
  const config = loadServerConfig(flagsOf(args));
  const logger = createLogger({
    component: 'server',
    level: config.log.level,
    ...(config.log.file ? { file: config.log.file } : {}),
  });
  const resources = await openServerResources(config);
  const tls = await loadOrCreateTlsPair(config.tls.certFile, config.tls.keyFile, [config.listen.host]);
  if (tls.generated) {
    process.stdout.write(`cardlink server: generated a self-signed TLS certificate ${config.tls.certFile}\n`);
  }
  const server = await startCardServer({
    config,
    storage: resources.storage,
    kek: resources.kek,
    tls,
    logger,
  });
  if (config.issuers.length === 0) {
    process.stdout.write(
      'cardlink server: no trusted issuers configured ("issuers" in the config file): every login is refused\n',
    );
  }
  // Handlers before "ready": whoever waits for that line may stop us at once.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  process.stdout.write(
    `cardlink server: ready on ${server.sessionUrl} (TLS SHA-256 fingerprint ${tls.fingerprint}; database ${config.databaseUrl.split(':')[0]}, KEK ${resources.kek.kind} v${resources.kek.currentVersion})\n`,
  );
  await stopped;
  process.stdout.write('cardlink server: stopping\n');
  await server.close();
  await resources.close();
}

async function runMigrate(args: ServerArgs): Promise<void> {
  const config = loadServerConfig(flagsOf(args));
  const resources = await openServerResources(config);
  try {
    const { applied, current } = resources.migration;
    process.stdout.write(
      applied.length
        ? `cardlink server migrate: applied ${applied.join(', ')}; schema version ${current}\n`
        : `cardlink server migrate: schema is current (version ${current})\n`,
    );
  } finally {
    await resources.close();
  }
}

export const serverCommand: CommandModule<object, ServerArgs> = {
  command: 'server',
  describe: 'Run the card server (subcommand: migrate)',
  builder: (y) =>
    withServerOptions(y).command({
      command: 'migrate',
      describe: 'Bring the database schema up to date and exit',
      handler: (args) => runMigrate(args as ServerArgs),
    }),
  handler: (args) => runServer(args),
};
