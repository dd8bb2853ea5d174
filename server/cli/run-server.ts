/** `cardlink server` and `cardlink server migrate` once they run (definitions: server-command.ts). */
import { createLogger } from '../../protocol/log.js';
import { loadServerConfig, type ServerFlags } from '../config/server-config.js';
import { openServerResources } from '../config/server-resources.js';
import { startCardServer } from '../http/card-server.js';
import { loadOrCreateTlsPair } from '../tls/tls-pair.js';
import type { ServerArgs } from './server-command.js';

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

export async function runServer(args: ServerArgs): Promise<void> {
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

export async function runMigrate(args: ServerArgs): Promise<void> {
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
