/**
 * The daemon's command line: `cardlink daemon` runs it; `login`, `status`, `cards`, `logout` and
 * `diag` talk to a running one through its control socket (the same API the tray uses).
 */
import type { Argv, CommandModule } from 'yargs';
import { escapeControlCharacters } from '../../protocol/log.js';
import {
  loadDaemonConfig,
  requireServerUrl,
  type DaemonConfig,
  type DaemonFlags,
} from '../config/daemon-config.js';
import { ControlClient } from '../control/control-client.js';
import { controlPaths } from '../control/control-paths.js';
import type { CardStatus, DaemonStatus } from '../control/control-protocol.js';
import { Daemon } from '../daemon.js';
import { writeDiagnostics } from '../diag/diagnostics.js';
import { openWithDesktop } from './desktop-open.js';
import { closeDaemonLogger, createDaemonLogger } from '../log/daemon-logger.js';
import { startBrowserLogin } from '../login/authorization-code-login.js';
import { startDeviceCodeLogin } from '../login/device-code-login.js';
import { idpRequestOptionsFor, oidcSettingsFrom } from '../login/login-settings.js';
import type { TokenGrant } from '../login/token-grant.js';

interface CommonArgs {
  config?: string | undefined;
  'runtime-dir'?: string | undefined;
}

function common<T>(y: Argv<T>) {
  return y
    .option('config', {
      type: 'string',
      describe: 'daemon config file (default ~/.config/cardlink/daemon.json)',
    })
    .option('runtime-dir', {
      type: 'string',
      describe: 'directory of the control socket (default $XDG_RUNTIME_DIR/cardlink)',
    });
}

function configFrom(args: CommonArgs, extra: DaemonFlags = {}): DaemonConfig {
  return loadDaemonConfig({ config: args.config, runtimeDir: args['runtime-dir'], ...extra });
}

async function withDaemon<T>(config: DaemonConfig, work: (c: ControlClient) => Promise<T>): Promise<T> {
  const client = await ControlClient.connect({
    ...controlPaths({ runtimeDir: config.runtimeDir }),
    clientName: 'cardlink-cli',
  });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

const out = (line: string) => process.stdout.write(`${escapeControlCharacters(line)}\n`);

interface DaemonArgs extends CommonArgs {
  'server-url'?: string | undefined;
  'server-ca'?: string | undefined;
  'server-cert-sha256'?: string | undefined;
  'state-dir'?: string | undefined;
  'reader-socket'?: string | undefined;
  'log-level'?: string | undefined;
  'log-file'?: string | undefined;
  check: boolean;
}

export const daemonCommand: CommandModule<object, DaemonArgs> = {
  command: 'daemon',
  describe: "Run the daemon: the user's cards from the card server in the local PC/SC reader",
  builder: (y) =>
    common(y)
      .option('server-url', { type: 'string', describe: 'card server URL (https://...)' })
      .option('server-ca', { type: 'string', describe: "PEM file to trust for the server's certificate" })
      .option('server-cert-sha256', { type: 'string', describe: "SHA-256 pin of the server's certificate" })
      .option('state-dir', { type: 'string', describe: 'where the device key lives (0700)' })
      .option('reader-socket', { type: 'string', describe: "the cardlink reader driver's socket" })
      .option('log-level', { choices: ['error', 'warn', 'info', 'debug'] })
      .option('log-file', { type: 'string', describe: 'log file (rotated)' })
      .option('check', {
        type: 'boolean',
        default: false,
        describe: 'check the settings, print them and exit (for install scripts)',
      }) as Argv<DaemonArgs>,
  handler: async (args) => {
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
  },
};

interface LoginArgs extends CommonArgs {
  'device-code': boolean;
  browser: boolean;
}

export const loginCommand: CommandModule<object, LoginArgs> = {
  command: 'login',
  describe: 'Sign in at the identity provider and hand the token to the running daemon',
  builder: (y) =>
    common(y)
      .option('device-code', {
        type: 'boolean',
        default: false,
        describe: 'sign in on another device (prints a URL and a code); for machines without a browser',
      })
      .option('browser', {
        type: 'boolean',
        default: true,
        describe: 'open the browser (--no-browser: only print the URL)',
      }) as Argv<LoginArgs>,
  handler: async (args) => {
    const config = configFrom(args);
    const settings = oidcSettingsFrom(config);
    const idpOptions = idpRequestOptionsFor(settings);
    await withDaemon(config, async (client) => {
      let grant: TokenGrant;
      if (args['device-code']) {
        const login = await startDeviceCodeLogin(settings, idpOptions);
        out(`To sign in, open ${login.verificationUri} and enter the code ${login.userCode}`);
        if (login.verificationUriComplete) out(`(or open ${login.verificationUriComplete})`);
        grant = await login.complete();
      } else {
        const login = await startBrowserLogin(settings, idpOptions);
        out(`Sign in in your browser: ${login.authorizationUrl}`);
        if (args.browser) void openWithDesktop(login.authorizationUrl);
        grant = await login.complete();
      }
      await client.request('hand-over-token', {
        accessToken: grant.accessToken,
        ...(grant.refreshToken ? { refreshToken: grant.refreshToken } : {}),
        expiresAt: grant.expiresAt,
        issuer: settings.issuer,
        clientId: settings.clientId,
      });
      out('Signed in; the daemon is loading your cards (see "cardlink status").');
    });
  },
};

function describeCard(c: CardStatus): string {
  const where =
    c.state === 'inserted'
      ? `in "${c.readerName ?? `slot ${c.slot}`}"`
      : c.state === 'taken-over'
        ? `taken over by ${c.takenOverBy ?? 'another device'}`
        : 'not in the reader';
  const blocked = [c.pinBlocked && 'PIN blocked', c.pukBlocked && 'PUK blocked'].filter(Boolean).join(', ');
  return `${c.label} (${c.cardId}): ${where}${blocked ? ` (${blocked})` : ''}`;
}

function describeStatus(s: DaemonStatus): string[] {
  const lines = [`state: ${s.state}`, `server: ${s.serverUrl}`];
  if (s.user) lines.push(`user: ${s.user}`);
  if (s.deviceId)
    lines.push(`device: ${s.deviceId}${s.deviceStatus === 'pending' ? ' (waiting for approval)' : ''}`);
  if (s.tokenExpiresAt) lines.push(`token expires: ${new Date(s.tokenExpiresAt * 1000).toISOString()}`);
  if (s.lastError) lines.push(`last error: ${s.lastError.message} [${s.lastError.code}]`);
  lines.push(s.cards.length ? 'cards:' : 'cards: none');
  for (const c of s.cards) lines.push(`  ${describeCard(c)}`);
  return lines;
}

interface JsonArgs extends CommonArgs {
  json: boolean;
}

export const statusCommand: CommandModule<object, JsonArgs> = {
  command: 'status',
  describe: "The daemon's state: session, user, device, cards",
  builder: (y) => common(y).option('json', { type: 'boolean', default: false }) as Argv<JsonArgs>,
  handler: async (args) => {
    const status = await withDaemon(configFrom(args), (c) => c.request('status'));
    if (args.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
    else for (const line of describeStatus(status)) out(line);
  },
};

export const cardsCommand: CommandModule<object, JsonArgs> = {
  command: 'cards',
  describe: "The user's cards and the reader slots they are in",
  builder: (y) => common(y).option('json', { type: 'boolean', default: false }) as Argv<JsonArgs>,
  handler: async (args) => {
    const cards = await withDaemon(configFrom(args), (c) => c.request('cards'));
    if (args.json) process.stdout.write(`${JSON.stringify(cards, null, 2)}\n`);
    else if (cards.length === 0) out('no cards');
    else for (const c of cards) out(describeCard(c));
  },
};

export const logoutCommand: CommandModule<object, CommonArgs> = {
  command: 'logout',
  describe: 'Take the cards out of the reader and end the session',
  builder: (y) => common(y) as Argv<CommonArgs>,
  handler: async (args) => {
    await withDaemon(configFrom(args), (c) => c.request('logout'));
    out('Logged out.');
  },
};

interface DiagArgs extends CommonArgs {
  output?: string | undefined;
}

export const diagCommand: CommandModule<object, DiagArgs> = {
  command: 'diag',
  describe: 'Write a diagnostics bundle (no secrets) for a support request',
  builder: (y) =>
    common(y).option('output', {
      type: 'string',
      describe: 'file to write (default ./cardlink-diag-<time>.json)',
    }) as Argv<DiagArgs>,
  handler: async (args) => {
    const config = configFrom(args);
    const file = args.output ?? `cardlink-diag-${new Date().toISOString().replace(/[:.]/g, '-')}.json`;
    const written = await writeDiagnostics(config, file);
    out(`Diagnostics written to ${written} (no tokens, PINs or keys; review before sending).`);
  },
};

// Each module types its own arguments; yargs takes them as a list of any-argument modules.
export const daemonCommands = [
  daemonCommand,
  loginCommand,
  statusCommand,
  cardsCommand,
  logoutCommand,
  diagCommand,
] as unknown as CommandModule[];
