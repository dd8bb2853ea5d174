/**
 * The demo's card server: `cardlink server` on its embedded defaults (SQLite file, key-file KEK,
 * self-signed TLS pair, all in the state directory), in the demo's own process, listening on
 * 127.0.0.1 and trusting the demo IdP alone. In-process because the demo also creates the demo card
 * in its storage (SQLite is one process's file) and because stopping it is then a plain close().
 */
import fs from 'node:fs';
import type { Logger } from '../protocol/log.js';
import { createLogger } from '../protocol/log.js';
import { createCard, listCards, loadDefaultProfile, type CreatedCard } from '../server/admin/index.js';
import { loadServerConfig, type ServerConfig } from '../server/config/server-config.js';
import { openServerResources, type ServerResources } from '../server/config/server-resources.js';
import { startCardServer, type RunningCardServer } from '../server/http/card-server.js';
import { loadOrCreateTlsPair } from '../server/tls/tls-pair.js';
import { writeFileAtomic, type DemoPaths } from './demo-state.js';
import { demoServerUrl } from './demo-urls.js';

/** The tenant of the demo user. */
export const DEMO_TENANT = 'demo';
/** Audit actor of what the demo does in the server's storage. */
const DEMO_ACTOR = 'admin:cardlink-demo';

export interface DemoServer {
  readonly config: ServerConfig;
  readonly url: string;
  readonly certFile: string;
  readonly fingerprint: string;
  /** The demo user's cards (ids). */
  cardIdsOf(user: { issuer: string; subject: string }): Promise<string[]>;
  /** A card for the user from the default profile (keys and certificates in 9A, 9C, 9D, 9E). */
  createCard(user: { issuer: string; subject: string }): Promise<CreatedCard>;
  close(): Promise<void>;
}

/** Writes server.json (every run: it follows demo.json) so `cardlink server --config` could run it too. */
export function writeDemoServerConfig(paths: DemoPaths, port: number, issuer: string): void {
  const config = {
    dataDir: paths.serverDir,
    listen: { host: '127.0.0.1', port },
    publicUrl: demoServerUrl(port),
    issuers: [{ issuer, tenant: DEMO_TENANT }],
    log: { level: 'info', file: paths.serverLogFile },
  };
  writeFileAtomic(paths.serverConfigFile, `${JSON.stringify(config, null, 2)}\n`, 0o600);
}

function closeLogger(logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    logger.once('finish', () => resolve());
    logger.end();
  });
}

/**
 * Opens the storage and the KEK, loads (or makes) the TLS pair and starts listening. Rejects with
 * the listen error (EADDRINUSE) when the port is taken, having closed what it opened.
 */
export async function startDemoServer(paths: DemoPaths): Promise<DemoServer> {
  // The file alone: the CARDLINK_SERVER_* environment is for `cardlink server`, not for the demo.
  const config = loadServerConfig({ config: paths.serverConfigFile }, {});
  fs.mkdirSync(paths.serverDir, { recursive: true, mode: 0o700 });
  const logger = createLogger({ component: 'server', level: config.log.level, file: paths.serverLogFile });
  let resources: ServerResources | undefined;
  let server: RunningCardServer | undefined;
  try {
    resources = await openServerResources(config);
    const tls = await loadOrCreateTlsPair(config.tls.certFile, config.tls.keyFile, ['127.0.0.1']);
    server = await startCardServer({ config, storage: resources.storage, kek: resources.kek, tls, logger });
    const { storage, kek } = resources;
    const running = server;
    const opened = resources;
    return {
      config,
      url: config.publicUrl,
      certFile: config.tls.certFile,
      fingerprint: tls.fingerprint,
      async cardIdsOf(user) {
        const cards = await listCards({ storage, user, actor: DEMO_ACTOR });
        return cards.map((c) => c.id);
      },
      async createCard(user) {
        return createCard({
          storage,
          kek,
          user: { ...user, tenant: DEMO_TENANT },
          profile: await loadDefaultProfile(),
          label: 'cardlink demo card',
          actor: DEMO_ACTOR,
        });
      },
      async close() {
        await running.close();
        await opened.close();
        await closeLogger(logger);
      },
    };
  } catch (error) {
    await server?.close().catch(() => undefined);
    await resources?.close().catch(() => undefined);
    await closeLogger(logger).catch(() => undefined);
    throw error;
  }
}
