/**
 * `cardlink demo`: the whole product on one machine in one command (docs/demo.md).
 *
 *   [1/6] the demo identity provider (in this process, 127.0.0.1)
 *   [2/6] the card server on its embedded defaults (in this process, 127.0.0.1)
 *   [3/6] the demo user's card (created on the first run, reused after)
 *   [4/6] `cardlink daemon` (a child process) with a config for the two above
 *   [5/6] the sign-in (browser, device code, or --yes: done by the demo)
 *   [6/6] the card in the reader, as pcscd reports it
 *   [7/7] where there is a display, the tray (demo-tray.ts; kept when its icon shows)
 *
 * Then it prints what to try and waits for Ctrl-C (SIGINT) or SIGTERM, and stops every part in the
 * reverse order: the tray and the daemon first (it takes the card out of the reader), then the server and the IdP.
 * A first run that fails or is interrupted removes the state directory it began, so no half-written
 * state is left behind; a later run that fails leaves the state as it was.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitForCardAbsent, waitForCardPresent } from '../daemon/reader/pcsc-presence.js';
import { DEFAULT_BRIDGE_SOCKET, DEFAULT_READER_NAME } from '../daemon/reader/serve-card.js';
import { CardlinkError } from '../protocol/errors.js';
import { escapeControlCharacters } from '../protocol/log.js';
import {
  checkCardlinkReader,
  checkPcscd,
  checkPortFree,
  pickFreePort,
  portInUseError,
} from './demo-checks.js';
import {
  spawnDemoDaemon,
  waitForCardInserted,
  writeDemoDaemonConfig,
  type DemoDaemon,
  demoChildEnvironment,
} from './demo-daemon.js';
import { DEMO_CLIENT_ID, DEMO_SCOPE, DEMO_USER, generateDemoPassword } from './demo-idp.js';
import type { DemoServer } from './demo-server.js';
import {
  createDemoStateDir,
  defaultDemoStateDir,
  DEMO_STATE_VERSION,
  demoPaths,
  ensureDemoDirectories,
  inspectDemoState,
  readSecretFile,
  removeDemoState,
  resetCommand,
  writeDemoState,
  writeSecretFile,
  type DemoPaths,
  type DemoStateFile,
} from './demo-state.js';
import { startDemoTray, trayWanted } from './demo-tray.js';
import { demoIssuer, demoServerUrl } from './demo-urls.js';
import type { LocalIdp } from './idp/local-idp.js';
import { openscModule, tryCommands, writeTryMessage } from './try-commands.js';

/** Port of the demo IdP on a first run unless --idp-port says otherwise. */
export const DEFAULT_DEMO_IDP_PORT = 18180;
/** Port of the demo card server on a first run unless --server-port says otherwise. */
export const DEFAULT_DEMO_SERVER_PORT = 18443;
/** How long the card may take from the sign-in to pcscd, unless --ready-timeout says otherwise. */
export const DEFAULT_READY_TIMEOUT_SECONDS = 60;
/** What the demo prints once the card is in the reader (tests and benchmarks wait for it). */
export const DEMO_READY_PREFIX = 'ready: the demo card is in reader';
/** bin/cardlink, from dist/demo/. */
const CARDLINK_BIN = fileURLToPath(new URL('../../bin/cardlink', import.meta.url));

export interface DemoOptions {
  yes: boolean;
  browser: boolean;
  reset: boolean;
  stateDir: string | undefined;
  idpPort: number | undefined;
  serverPort: number | undefined;
  readerSocket: string | undefined;
  readerName: string | undefined;
  readyTimeoutSeconds: number;
}

/** The user pressed Ctrl-C (or the demo got SIGTERM) before it was ready. */
class DemoStopped extends Error {
  constructor(readonly signal: string) {
    super(`stopped (${signal})`);
  }
}

/** Writes to stdout; text from outside (paths, reader names) cannot forge a line. */
const write = (text: string) =>
  process.stdout.write(text.split('\n').map(escapeControlCharacters).join('\n'));

/** Step lines: "[i/n] what ... ok (0.4 s)"; a note in between ends the open line first. */
class Progress {
  private index = 0;
  private open = false;
  constructor(private total: number) {}

  addStep(): void {
    this.total++;
  }

  async step<T>(title: string, work: () => Promise<T>, done: (result: T) => string = () => 'ok'): Promise<T> {
    this.index++;
    const label = `[${this.index}/${this.total}] ${title}`;
    write(`${label} ... `);
    this.open = true;
    const started = performance.now();
    try {
      const result = await work();
      const seconds = ((performance.now() - started) / 1000).toFixed(1);
      if (!this.open) write(`${label} ... `);
      write(`${done(result)} (${seconds} s)\n`);
      this.open = false;
      return result;
    } catch (error) {
      if (!this.open) write(`${label} ... `);
      write(error instanceof DemoStopped ? 'stopped\n' : 'failed\n');
      this.open = false;
      throw error;
    }
  }

  note(line: string): void {
    if (this.open) write('\n');
    this.open = false;
    write(`      ${line}\n`);
  }
}

/** Ports of this run: those of the state, or (first run) the options' or the defaults (0: any free one). */
async function choosePorts(options: DemoOptions, state: DemoStateFile | undefined, paths: DemoPaths) {
  if (state) {
    for (const [given, kept, option] of [
      [options.idpPort, state.idpPort, '--idp-port'],
      [options.serverPort, state.serverPort, '--server-port'],
    ] as const) {
      // 0 ("any free port") is no preference: the kept port stays.
      if (given !== undefined && given !== 0 && given !== kept)
        throw new CardlinkError(
          'ERR_DEMO_STATE',
          `the demo in ${paths.root} uses port ${kept} (it is part of the demo's URLs and identities): ` +
            `leave out ${option}, or start over on port ${given} with '${resetCommand(paths, `${option} ${given}`)}'`,
          { stateDir: paths.root },
        );
    }
    return { idpPort: state.idpPort, serverPort: state.serverPort };
  }
  const pick = async (given: number | undefined, fallback: number) =>
    given === 0 ? pickFreePort() : (given ?? fallback);
  const idpPort = await pick(options.idpPort, DEFAULT_DEMO_IDP_PORT);
  let serverPort = await pick(options.serverPort, DEFAULT_DEMO_SERVER_PORT);
  while (serverPort === idpPort) serverPort = await pickFreePort();
  return { idpPort, serverPort };
}

const isAddressInUse = (error: unknown) => (error as NodeJS.ErrnoException)?.code === 'EADDRINUSE';

export async function runDemo(options: DemoOptions): Promise<void> {
  const paths = demoPaths(options.stateDir ?? defaultDemoStateDir());
  const readerSocket = path.resolve(
    options.readerSocket ?? (process.env['CARDLINK_READER_SOCKET'] || DEFAULT_BRIDGE_SOCKET),
  );
  const readerName = options.readerName ?? DEFAULT_READER_NAME;

  if (options.reset) {
    removeDemoState(paths);
    write(`cardlink demo: --reset: removed ${paths.root}\n`);
  }
  const status = inspectDemoState(paths);
  const first = status.kind === 'fresh';
  const kept = status.kind === 'ready' ? status.state : undefined;

  // Ctrl-C and SIGTERM: abort whatever step runs, then stop what was started, in reverse.
  const stop = new AbortController();
  const onSignal = (name: string) => () => {
    if (!stop.signal.aborted) stop.abort(new DemoStopped(name));
  };
  const onInt = onSignal('SIGINT');
  const onTerm = onSignal('SIGTERM');
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  const stopped = new Promise<void>((resolve) => stop.signal.addEventListener('abort', () => resolve()));
  const untilStopped = <T>(work: Promise<T>): Promise<T> =>
    Promise.race([
      work,
      stopped.then(() => {
        throw stop.signal.reason as Error;
      }),
    ]);

  const cleanups: { what: string; run: () => Promise<void> }[] = [];
  let complete = !first;
  let daemon: DemoDaemon | undefined;
  let cardReader: string | undefined;
  try {
    // Before anything starts: pcscd, the reader, the ports; each failure names its fix.
    const idpReset = resetCommand(paths, '--idp-port <port>');
    const serverReset = resetCommand(paths, '--server-port <port>');
    checkPcscd();
    await untilStopped(checkCardlinkReader(readerSocket));
    const { idpPort, serverPort } = await choosePorts(options, kept, paths);
    await checkPortFree('demo identity provider', idpPort, idpReset);
    await checkPortFree('demo card server', serverPort, serverReset);

    if (first) createDemoStateDir(paths);
    ensureDemoDirectories(paths);
    write(
      `cardlink demo: an identity provider, a card server, the daemon and a card, all on this machine\n` +
        `      state: ${paths.root}${first ? ' (new)' : ''}\n`,
    );
    const progress = new Progress(6);
    const serverUrl = demoServerUrl(serverPort);
    const issuer = demoIssuer(idpPort);
    const password = first ? generateDemoPassword() : readSecretFile(paths.passwordFile);
    if (first) writeSecretFile(paths.passwordFile, password);

    // The daemon boots in the background from here (node and its modules take the longest of all
    // parts) while the IdP and the server start; [4/6] waits for it. It needs the server's
    // certificate at start: on a first run that exists only after [2/6].
    const certFile = path.join(paths.serverDir, 'tls', 'server.crt');
    const spawnDaemon = () => {
      writeDemoDaemonConfig(paths, {
        serverUrl,
        serverCaFile: certFile,
        issuer,
        clientId: DEMO_CLIENT_ID,
        resource: serverUrl,
        readerSocket,
        readerName,
      });
      const spawned = spawnDemoDaemon(paths);
      cleanups.push({ what: 'daemon', run: () => spawned.stop() });
      return spawned;
    };
    if (fs.existsSync(certFile)) daemon = spawnDaemon();
    // Loaded while the daemon boots: the sign-in code is needed at [5/6].
    const loginModule = import('./demo-login.js');
    loginModule.catch(() => undefined);

    // [1] The demo IdP.
    const idp = await progress.step<LocalIdp>(`demo identity provider on ${issuer}`, async () => {
      const { loadOrCreateDemoIdpKeys, startDemoIdp } = await import('./demo-idp.js');
      const keys = await loadOrCreateDemoIdpKeys(paths.idpKeysFile);
      try {
        return await startDemoIdp({ port: idpPort, resource: serverUrl, keys, password });
      } catch (error) {
        throw isAddressInUse(error) ? portInUseError('demo identity provider', idpPort, idpReset) : error;
      }
    });
    cleanups.push({ what: 'identity provider', run: () => idp.close() });
    if (idp.issuer !== issuer) throw new CardlinkError('ERR_INTERNAL', `the demo IdP is at ${idp.issuer}`);
    stop.signal.throwIfAborted();

    // [2] The card server.
    const server = await progress.step<DemoServer>(
      `card server on ${serverUrl} (SQLite, key-file KEK, self-signed TLS)`,
      async () => {
        const { startDemoServer, writeDemoServerConfig } = await import('./demo-server.js');
        writeDemoServerConfig(paths, serverPort, issuer);
        try {
          return await startDemoServer(paths);
        } catch (error) {
          throw isAddressInUse(error) ? portInUseError('demo card server', serverPort, serverReset) : error;
        }
      },
    );
    cleanups.push({ what: 'card server', run: () => server.close() });
    if (server.certFile !== certFile)
      throw new CardlinkError('ERR_INTERNAL', `the demo server's certificate is ${server.certFile}`);
    stop.signal.throwIfAborted();

    // [3] The demo user's card.
    const user = { issuer, subject: DEMO_USER };
    const cardId = await progress.step(
      `card for user "${DEMO_USER}" (keys and certificates in 9A, 9C, 9D, 9E)`,
      async () => {
        if (kept) {
          const ids = await server.cardIdsOf(user);
          if (!ids.includes(kept.cardId))
            throw new CardlinkError(
              'ERR_DEMO_STATE',
              `the demo card ${kept.cardId} is no longer on the demo card server: start over with '${resetCommand(paths)}'`,
              { stateDir: paths.root, cardId: kept.cardId },
            );
          return kept.cardId;
        }
        const card = await server.createCard(user);
        writeSecretFile(paths.pinFile, card.pin);
        writeSecretFile(paths.pukFile, card.puk);
        writeSecretFile(
          paths.managementKeyFile,
          `${card.managementKey.key} (${card.managementKey.algorithm})`,
        );
        return card.cardId;
      },
      (id) => `${first ? 'created' : 'reused'} ${id}`,
    );
    if (first) {
      // Last write of a first run: from here on the state is complete and a later run reuses it.
      writeDemoState(paths, {
        version: DEMO_STATE_VERSION,
        idpPort,
        serverPort,
        user: DEMO_USER,
        cardId,
        createdAt: new Date().toISOString(),
      });
      complete = true;
    }
    writeTryMessage(paths.tryDir);
    stop.signal.throwIfAborted();

    // [4] The daemon.
    daemon ??= spawnDaemon();
    const runningDaemon = daemon;
    await progress.step(`cardlink daemon for reader "${readerName}"`, () => runningDaemon.ready(stop.signal));

    // [5] Sign-in.
    const mode = (await loginModule).chooseLoginMode(options.yes, options.browser);
    // The person signing in needs the password now; with --yes it is shown with the rest at the end.
    const passwordShownAtSignIn = mode !== 'yes';
    await progress.step(
      `sign in as "${DEMO_USER}" at the demo identity provider${mode === 'yes' ? ' (--yes: done by the demo)' : ''}`,
      async () => {
        if (passwordShownAtSignIn) {
          progress.note(
            first
              ? `user ${DEMO_USER}, password ${password} (shown once; kept in ${paths.passwordFile})`
              : `user ${DEMO_USER}, password in ${paths.passwordFile}`,
          );
        }
        const { signIn } = await loginModule;
        await untilStopped(
          signIn({
            mode,
            settings: {
              issuer,
              clientId: DEMO_CLIENT_ID,
              resource: serverUrl,
              scope: `openid offline_access ${DEMO_SCOPE}`,
            },
            credentials: { id: DEMO_USER, password },
            daemon: runningDaemon,
            signal: stop.signal,
            say: (line) => progress.note(line),
          }),
        );
      },
    );

    // [6] The card in the reader, as the daemon and then pcscd itself report it.
    const timeoutMs = options.readyTimeoutSeconds * 1000;
    const card = await progress.step(
      'card in the reader',
      async () => {
        const inserted = await untilStopped(
          waitForCardInserted(runningDaemon, cardId, timeoutMs, stop.signal),
        );
        await untilStopped(waitForCardPresent(inserted.readerName!, timeoutMs));
        return inserted;
      },
      (c) => `ok, "${c.readerName}"`,
    );
    cardReader = card.readerName!;

    // [7] The tray, where there is a display; it stays when its icon shows (demo-tray.ts).
    const trayStep = trayWanted();
    let trayShown = trayStep.wanted ? '' : `not started: ${trayStep.reason}`;
    if (trayStep.wanted) {
      progress.addStep();
      const started = await progress.step(
        'tray',
        () => startDemoTray(paths.daemonConfigFile, demoChildEnvironment(), stop.signal),
        (t) => (t.running ? `ok, icon shown (tray pid ${t.tray.pid})` : `not kept: ${t.reason}`),
      );
      if (started.running) {
        cleanups.push({ what: 'tray', run: () => started.tray.stop() });
        trayShown = `running (pid ${started.tray.pid}); its menu shows the card and signs in or out`;
      } else trayShown = `not started: ${started.reason}`;
    }

    printReady(paths, {
      first,
      password: first && !passwordShownAtSignIn ? password : undefined,
      cardId,
      readerName: cardReader,
      tray: trayShown,
    });

    // Until Ctrl-C / SIGTERM, or until the daemon stops by itself.
    const daemonGone = runningDaemon.exited.then((how) => {
      if (stop.signal.aborted) return;
      throw new CardlinkError(
        'ERR_INTERNAL',
        `the daemon stopped (${how}):\n${runningDaemon.output().trim()}\nsee ${runningDaemon.logFile}`,
      );
    });
    await Promise.race([stopped, daemonGone]);
  } catch (error) {
    if (!(error instanceof DemoStopped)) {
      await shutDown(cleanups, undefined, false);
      if (first && !complete) removeDemoState(paths);
      throw error;
    }
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
  }
  // Stopped by a signal (before or after ready).
  write(`\ncardlink demo: stopping (${(stop.signal.reason as DemoStopped).signal})\n`);
  // The handlers are gone: a second Ctrl-C ends the demo at once, and the daemon with it (setpriv).
  // Parts that hang are killed by their grace timers.
  await shutDown(cleanups, cardReader, true);
  if (first && !complete) {
    removeDemoState(paths);
    write(`cardlink demo: the first run did not finish; removed ${paths.root}\n`);
  }
}

/** Stops the parts in reverse order; after the daemon, checks that the reader is empty. */
async function shutDown(
  cleanups: { what: string; run: () => Promise<void> }[],
  readerName: string | undefined,
  verbose: boolean,
): Promise<void> {
  // The tray and the daemon first, whenever they were started: the daemon takes the card out of the
  // reader and closes it at the server, which must still be there. Then the rest in reverse.
  const first = ['tray', 'daemon'];
  const order = [
    ...first.flatMap((what) => cleanups.filter((c) => c.what === what)),
    ...cleanups.filter((c) => !first.includes(c.what)).reverse(),
  ];
  for (const { what, run } of order) {
    try {
      await run();
      if (what === 'daemon' && readerName) {
        await waitForCardAbsent(readerName, 10_000);
        if (verbose) write(`      daemon stopped; reader "${readerName}" is empty\n`);
      } else if (verbose) write(`      ${what} stopped\n`);
    } catch (error) {
      write(`      ${what}: ${error instanceof Error ? error.message : String(error)}\n`);
    }
  }
  cleanups.length = 0;
  if (verbose) write('cardlink demo: stopped\n');
}

function printReady(
  paths: DemoPaths,
  info: {
    first: boolean;
    /** Shown when it was not shown at the sign-in (first run only). */
    password: string | undefined;
    cardId: string;
    readerName: string;
    tray: string;
  },
): void {
  const module = openscModule();
  const commands = tryCommands({
    readerName: info.readerName,
    tryDir: paths.tryDir,
    cardlinkBin: CARDLINK_BIN,
    daemonConfigFile: paths.daemonConfigFile,
    module: module.path,
  });
  const password =
    info.password !== undefined
      ? `password ${info.password}   (shown once; kept in ${paths.passwordFile})`
      : `password in ${paths.passwordFile}`;
  const pin = info.first
    ? `${readSecretFile(paths.pinFile)}   (shown once; kept in ${paths.pinFile})`
    : `in ${paths.pinFile}`;
  const lines = [
    '',
    `${DEMO_READY_PREFIX} "${info.readerName}" (card ${info.cardId}, user ${DEMO_USER})`,
    '',
    `  demo user:  ${DEMO_USER}, ${password}`,
    `  card PIN:   ${pin}`,
    `  PUK and management key: in ${paths.secretsDir}`,
    `  tray:       ${info.tray}`,
    '',
    'Try it, in another terminal:',
    ...commands.flatMap((c) => [`  $ ${c.line}`, `      ${c.note}`]),
    ...(module.installed ? [] : [`  (OpenSC is not installed: apt-get install opensc)`]),
    '',
    'Press Ctrl-C to stop the demo; the card leaves the reader.',
    '',
  ];
  write(`${lines.join('\n')}`);
}
