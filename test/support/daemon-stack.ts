/**
 * The whole desktop chain for an end-to-end test, every part real: the test IdP, a card server
 * (SQLite) with the user's cards, optionally a TCP proxy between daemon and server, pcscd with the
 * project's reader (or, with `vpcd`, Debian's vpcd reader in reversed mode), optionally a private desktop keyring, and `cardlink daemon`, logged in or not.
 * `stop()` takes it all down again, in reverse, whatever was started.
 */
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import {
  createTestCard,
  startTestCardServer,
  TEST_TENANT,
  type TestCardServer,
  type TestCardSpec,
} from './card-server.js';
import { startTestDaemon, type TestDaemon, type TestDaemonOptions } from './daemon.js';
import { freePort, freePortPair } from './free-port.js';
import { startTestIdp, type StartTestIdpOptions, type TestIdp } from './oidc-provider.js';
import { startPcscd, type PcscdInstance, type StartPcscdOptions } from './pcscd.js';
import { startSecretService, type SecretService } from './secret-service.js';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.js';

export interface DaemonStackOptions {
  /** Names the temporary directory (`cardlink-<name>-…`). */
  name: string;
  idp?: StartTestIdpOptions;
  /** Settings merged into the card server's config file. */
  server?: Record<string, unknown>;
  /** More identity providers the card server trusts besides the stack's own (same tenant). */
  trustIssuers?: readonly string[];
  /** Put a TCP proxy between the daemon and the server (the server's public URL names the proxy). */
  proxy?: boolean;
  /** The cards created for alice, in this order. */
  cards: TestCardSpec[];
  pcscd: StartPcscdOptions;
  /**
   * The daemon serves through vsmartcard's vpcd (reader.transport "vpcd") on a free loopback port
   * pair: it starts before pcscd (whose vpcd reader must find both ports answering), and pcscd gets
   * a vpcd reader on those ports besides `pcscd`'s own settings.
   */
  vpcd?: boolean;
  /**
   * With `vpcd`: `connect` runs vpcd in its normal mode (it listens, the daemon connects; the way
   * Windows' BixVReader works), pcscd first. Default `listen` (reversed mode, the daemon first).
   */
  vpcdMode?: 'listen' | 'connect';
  /** The daemon's options besides those the stack supplies. */
  daemon: Pick<TestDaemonOptions, 'deviceName'> &
    Partial<Pick<TestDaemonOptions, 'settings' | 'nodeArgs' | 'secondReader'>>;
  /** A private desktop keyring for the daemon's device key (else it keeps the key in a file). */
  keyring?: boolean;
  /** Log the daemon in as alice (device code) and wait until every card is in the reader. */
  login?: boolean;
}

export interface DaemonStack {
  readonly dir: string;
  readonly idp: TestIdp;
  /** The server now running (restartServer() replaces it). */
  readonly cardServer: TestCardServer;
  /** What the daemon connects to: the proxy's URL with `proxy`, else the server's. */
  readonly serverUrl: string;
  readonly proxy: TcpProxy | undefined;
  readonly pcscd: PcscdInstance;
  readonly daemon: TestDaemon;
  readonly keyring: SecretService | undefined;
  /** The daemon's directory (config, state, log). */
  readonly daemonDir: string;
  readonly cardIds: readonly string[];
  /** Options for another daemon of alice's on this machine (a takeover test). */
  daemonOptions(dir: string, deviceName: string): TestDaemonOptions;
  /** The daemon's log so far (JSON lines). */
  daemonLog(): string;
  /** Stops the server and starts it again on the same port, with the same data. */
  restartServer(): Promise<void>;
  stop(): Promise<void>;
}

export async function startDaemonStack(options: DaemonStackOptions): Promise<DaemonStack> {
  const stops: (() => Promise<void>)[] = [];
  const stop = async () => {
    for (const s of stops.reverse()) await s().catch(() => undefined);
    stops.length = 0;
  };
  try {
    const dir = await mkdtemp(path.join(tmpdir(), `cardlink-${options.name}-`));
    stops.push(() => rm(dir, { recursive: true, force: true }));
    const idp = await startTestIdp(options.idp);
    stops.push(() => idp.close());

    const serverDir = path.join(dir, 'server');
    fs.mkdirSync(serverDir);
    // A fixed port, so a restart keeps the URL the daemon and the proxy use.
    const serverPort = await freePort();
    const proxy = options.proxy
      ? await startTcpProxy({ targetHost: '127.0.0.1', targetPort: serverPort })
      : undefined;
    if (proxy) stops.push(() => proxy.close());
    // The device proof signs the server's public URL: the one the daemon dials.
    const serverUrl = `https://127.0.0.1:${proxy?.port ?? serverPort}/`;
    let cardServer = await startTestCardServer(serverDir, idp, {
      listen: { host: '127.0.0.1', port: serverPort },
      publicUrl: serverUrl,
      ...(options.trustIssuers
        ? {
            issuers: [idp.issuer, ...options.trustIssuers].map((issuer) => ({ issuer, tenant: TEST_TENANT })),
          }
        : {}),
      ...options.server,
    });
    stops.push(() => cardServer.stop());
    const cardIds: string[] = [];
    for (const card of options.cards) cardIds.push((await createTestCard(cardServer, idp, card)).cardId);

    const connect = options.vpcdMode === 'connect';
    const vpcd = options.vpcd
      ? { port: await freePortPair(), ...(connect ? { mode: 'connect' as const } : {}) }
      : undefined;
    const startTheReader = async () => {
      const started = await startPcscd({
        ...options.pcscd,
        ...(vpcd ? { vpcd: { port: vpcd.port, listen: connect } } : {}),
      });
      stops.push(() => started.stop());
      return started;
    };
    // With vpcd in reversed mode the daemon listens first; pcscd then stops first (stops run in
    // reverse), because Debian 12's vpcd aborts pcscd when the card side goes away. In normal mode
    // (connect) vpcd listens: pcscd first, the daemon connects to it.
    const firstPcscd = vpcd && !connect ? undefined : await startTheReader();
    const keyring = options.keyring ? await startSecretService(dir) : undefined;
    if (keyring) stops.push(() => keyring.close());

    const daemonOptions = (daemonDir: string, deviceName: string): TestDaemonOptions => ({
      dir: daemonDir,
      serverUrl,
      serverCaFile: cardServer.config.tls.certFile,
      idp,
      ...(firstPcscd ? { pcscd: firstPcscd } : {}),
      ...(vpcd ? { vpcd } : {}),
      deviceName,
    });
    const daemonDir = path.join(dir, 'daemon');
    const daemon = await startTestDaemon({
      ...daemonOptions(daemonDir, options.daemon.deviceName),
      ...options.daemon,
      ...(keyring ? { keyringBus: keyring.address } : {}),
    });
    stops.push(() => daemon.stop());
    const pcscd = firstPcscd ?? (await startTheReader());
    if (options.login) {
      await daemon.login('alice');
      const count = options.cards.length;
      const cards = await daemon.waitForCards(
        (cs) => cs.filter((c) => c.state === 'inserted').length === count,
      );
      for (const card of cards) if (card.readerName) await waitForCardPresent(card.readerName);
    }

    return {
      dir,
      idp,
      get cardServer() {
        return cardServer;
      },
      serverUrl,
      proxy,
      pcscd,
      daemon,
      keyring,
      daemonDir,
      cardIds,
      daemonOptions,
      daemonLog: () => fs.readFileSync(path.join(daemonDir, 'daemon.log'), 'utf8'),
      async restartServer() {
        await cardServer.stop();
        cardServer = await startTestCardServer(serverDir, idp);
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
