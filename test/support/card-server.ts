/**
 * A real card server in this process for tests and benchmarks: a config file in `dataDir` that
 * trusts the test IdP, then the same start-up as `cardlink server` (config, migrated storage, KEK,
 * TLS pair, listener on a free loopback port).
 */
import fs from 'node:fs';
import path from 'node:path';
import { createLogger, type Logger } from '../../protocol/log.js';
import { loadServerConfig, type ServerConfig } from '../../server/config/server-config.js';
import { openServerResources, type ServerResources } from '../../server/config/server-resources.js';
import { startCardServer, type RunningCardServer } from '../../server/http/card-server.js';
import { loadOrCreateTlsPair, type TlsPair } from '../../server/tls/tls-pair.js';
import {
  createCard,
  loadDefaultProfile,
  type CardProfile,
  type CreatedCard,
} from '../../server/admin/index.js';
import type { TestIdpClient } from './oidc-provider.js';

export const TEST_TENANT = 'acme';

export interface TestCardServer {
  readonly config: ServerConfig;
  readonly resources: ServerResources;
  readonly server: RunningCardServer;
  readonly tls: TlsPair;
  stop(): Promise<void>;
}

/**
 * Starts a server whose data lives in `dataDir`. `settings` are merged into the config file on its
 * first write; a later start in the same directory reuses the file (a restart).
 */
export async function startTestCardServer(
  dataDir: string,
  idp: Pick<TestIdpClient, 'issuer' | 'resource'>,
  settings: Record<string, unknown> = {},
  /** Where the server logs (default: stderr at the config's level, `error` unless settings say). */
  logger?: Logger,
): Promise<TestCardServer> {
  const configFile = path.join(dataDir, 'server.json');
  if (!fs.existsSync(configFile)) {
    fs.writeFileSync(
      configFile,
      JSON.stringify({
        dataDir,
        listen: { host: '127.0.0.1', port: 0 },
        publicUrl: 'https://127.0.0.1:0/',
        audience: idp.resource,
        issuers: [{ issuer: idp.issuer, tenant: TEST_TENANT }],
        log: { level: 'error' },
        ...settings,
      }),
    );
  }
  const config = loadServerConfig({ config: configFile }, {});
  const resources = await openServerResources(config);
  const tls = await loadOrCreateTlsPair(config.tls.certFile, config.tls.keyFile, ['127.0.0.1']);
  const server = await startCardServer({
    config,
    storage: resources.storage,
    kek: resources.kek,
    tls,
    logger: logger ?? createLogger({ component: 'test-server', level: config.log.level }),
  });
  return {
    config,
    resources,
    server,
    tls,
    async stop() {
      await server.close();
      await resources.close();
    },
  };
}

/** What createTestCard makes: known PIN and PUK; the default profile and a generated key unless given. */
export interface TestCardSpec {
  pin: string;
  puk: string;
  label?: string;
  subject?: string;
  profile?: CardProfile;
  /** Management key (hex) of the profile's algorithm. */
  managementKey?: string;
}

/** A card for `subject` (default alice) of the test IdP, as `cardlink admin create-card` makes it. */
export async function createTestCard(
  cardServer: TestCardServer,
  idp: Pick<TestIdpClient, 'issuer' | 'resource'>,
  card: TestCardSpec,
): Promise<CreatedCard> {
  return createCard({
    storage: cardServer.resources.storage,
    kek: cardServer.resources.kek,
    user: { issuer: idp.issuer, subject: card.subject ?? 'alice', tenant: TEST_TENANT },
    profile: card.profile ?? (await loadDefaultProfile()),
    // An empty PIN: none (a profile with pin.firstPinBySignIn makes the card without one).
    ...(card.pin ? { pin: card.pin } : {}),
    puk: card.puk,
    ...(card.label !== undefined ? { label: card.label } : {}),
    ...(card.managementKey !== undefined ? { managementKey: card.managementKey } : {}),
    // As `cardlink admin create-card` does: the server's recovery certificate, for archival profiles.
    recoveryCertificate: cardServer.config.keyArchival.recoveryCertificate,
  });
}
