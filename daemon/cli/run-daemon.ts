/** `cardlink daemon`: runs the daemon until SIGINT/SIGTERM (`--check`: prints the settings and exits). */
import { requireServerUrl } from '../config/daemon-config.js';
import { Daemon } from '../daemon.js';
import { closeDaemonLogger, createDaemonLogger } from '../log/daemon-logger.js';
import { configFrom, out } from './cli-common.js';
import type { DaemonArgs } from './daemon-commands.js';

export async function runDaemon(args: DaemonArgs): Promise<void> {
  const config = configFrom(args, {
    serverUrl: args['server-url'],
    serverCa: args['server-ca'],
    serverCertSha256: args['server-cert-sha256'],
    stateDir: args['state-dir'],
    readerSocket: args['reader-socket'],
    logLevel: args['log-level'],
    logFile: args['log-file'],
  });
  if (args.check) {
    requireServerUrl(config);
    process.stdout.write(`${JSON.stringify(config, null, 2)}\n`);
    return;
  }
  const logger = createDaemonLogger({
    level: config.log.level,
    ...(config.log.file ? { file: config.log.file } : {}),
    maxSizeBytes: config.log.maxSizeBytes,
    maxFiles: config.log.maxFiles,
  });
  const daemon = await Daemon.start(config, logger);
  // Handlers before "ready": whoever waits for that line may stop us at once.
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  out(`cardlink daemon: ready (server ${config.server.url}, control ${daemon.controlSocket})`);
  await stopped;
  await daemon.close();
  await closeDaemonLogger(logger);
}
