/**
 * The daemon's settings: defaults, then a JSON config file, then the environment, then flags.
 * Every setting is listed in docs/daemon-config.md. A bad value fails start-up with
 * `ERR_CONFIG_INVALID` naming the key and its source (the file's path, the variable, the flag).
 *
 * The config file is `--config`, else `$CARDLINK_DAEMON_CONFIG`: one complete file. Without
 * either, the machine's `/etc/cardlink/daemon.json` (what an admin pushes to every user) and the
 * user's `$XDG_CONFIG_HOME/cardlink/daemon.json` are both read when they exist, the user's
 * settings over the admin's, key by key; with neither, the daemon has no server and
 * `cardlink daemon` says which key is missing.
 *
 * The same settings serve the daemon, `cardlink login` and the tray (`login.*`, `tray.*`): one home.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  checkUrl,
  ConfigError,
  ConfigSource,
  environmentSources,
  isLoopbackHost,
  lastSetting,
  pickSetting,
  readConfigFile,
  checkSectionKeys,
  setSetting,
  type RawSettings,
} from '../../protocol/config/config-sources.js';
import type { LogLevel } from '../../protocol/log.js';
import { sessionUrlFor } from '../../protocol/wire/session-url.js';
import { DEFAULT_OIDC_SCOPE } from '../login/oidc-client-settings.js';
import { controlRuntimeDirectory } from '../control/control-paths.js';
import {
  DEFAULT_BRIDGE_SOCKET,
  DEFAULT_READER_NAME,
  DEFAULT_VPCD_HOST,
  DEFAULT_VPCD_PORT,
  DEFAULT_VPCD_READER_NAME,
  isVpcdLoopbackHost,
} from '../reader/reader-names.js';
import { DEVICE_KEY_STORES, type DeviceKeyStoreSetting } from '../device/device-key.js';

/** Where the tray keeps its refresh token (`tray.signInStore`, tray/refresh-token-store.ts). */
export const REFRESH_TOKEN_STORES = ['auto', 'keyring', 'file'] as const;
export type RefreshTokenStoreSetting = (typeof REFRESH_TOKEN_STORES)[number];

/** One identity provider the user can sign in at (`login.issuers`). */
export interface LoginIssuer {
  readonly issuer: string;
  readonly clientId: string | undefined;
  /** RFC 8707 resource indicator: the card server's audience. */
  readonly resource: string | undefined;
  readonly scope: string;
  /** Shown in the tray's menu ("Sign in with <name>…"); the issuer's host unless set. */
  readonly name: string;
}

/** Most identity providers `login.issuers` may list (a menu entry each). */
export const MAX_LOGIN_ISSUERS = 8;
/** Keys of one entry of `login.issuers`. */
const ISSUER_KEYS: readonly string[] = ['issuer', 'clientId', 'resource', 'scope', 'name'];

/** The daemon's reader transports (`reader.transport`). */
export const READER_TRANSPORTS = ['bridge', 'vpcd'] as const;
export type ReaderTransportSetting = (typeof READER_TRANSPORTS)[number];
/** Who listens on the vpcd transport (`reader.vpcdMode`): the daemon, or vpcd / BixVReader. */
export const VPCD_MODES = ['listen', 'connect'] as const;
export type VpcdModeSetting = (typeof VPCD_MODES)[number];

export interface DaemonConfig {
  /** The most specific file the settings came from, if any (for `diag`). */
  readonly configFile: string | undefined;
  /** Every file read, the admin's (system) first, the user's over it. */
  readonly configFiles: readonly string[];
  /** That file, or where one would have been read from (for error messages). */
  readonly configFileLocation: string;
  readonly server: {
    /** The card server's URL as its admin publishes it (`https://cards.example.com/`). */
    readonly url: string;
    /** The WebSocket endpoint derived from `url`. */
    readonly sessionUrl: string;
    /** PEM file of the CA (or the self-signed certificate) to trust instead of the system's CAs. */
    readonly caFile: string | undefined;
    /** SHA-256 of the server certificate (hex), checked in addition to the chain. */
    readonly certificateSha256: string | undefined;
  };
  /** The identity provider(s) for `cardlink login` and the tray. */
  readonly login: {
    /** The default identity provider's (the first of `issuers`). */
    readonly issuer: string | undefined;
    readonly clientId: string | undefined;
    /** RFC 8707 resource indicator: the card server's audience. */
    readonly resource: string | undefined;
    readonly scope: string;
    /** Every identity provider, the admin's default first (`login.issuers`, else `login.issuer`). */
    readonly issuers: readonly LoginIssuer[];
    /** A fixed loopback port for the browser sign-in's redirect; undefined: a random free port. */
    readonly redirectPort: number | undefined;
  };
  readonly tray: {
    /** Where the tray keeps its refresh token: the keyring when it can (auto), only there, or a file. */
    readonly signInStore: RefreshTokenStoreSetting;
  };
  readonly reader: {
    /** Our pcsc-lite driver over a Unix socket (Linux), or vsmartcard's vpcd over loopback TCP. */
    readonly transport: ReaderTransportSetting;
    readonly bridgeSocket: string;
    /** `listen`: vpcd in reversed mode connects to the daemon; `connect`: the daemon connects to vpcd. */
    readonly vpcdMode: VpcdModeSetting;
    /** Loopback address the vpcd transport listens on, or connects to in connect mode. */
    readonly vpcdHost: string;
    /** Port of vpcd's slot 0; slot i is vpcdPort + i. */
    readonly vpcdPort: number;
    readonly name: string;
    /** Slots the daemon fills, from 0; a user with more cards sees the first ones. */
    readonly slots: number;
  };
  readonly timeouts: {
    /** TCP + TLS + WebSocket upgrade + handshake. */
    readonly connectSeconds: number;
    /** A command waiting for the server longer than this gets 6F00. */
    readonly commandSeconds: number;
    /** How long cards stay inserted while the server cannot be reached. */
    readonly graceSeconds: number;
  };
  readonly reconnect: {
    readonly initialDelayMs: number;
    readonly maxDelayMs: number;
  };
  /** Shown to the user's other devices in "taken over by". */
  readonly deviceName: string;
  /** Device key and other state that outlives a run (0700). */
  readonly stateDir: string;
  /** Where a new device key goes: the desktop keyring when it can (auto), only there, or a file. */
  readonly deviceKeyStore: DeviceKeyStoreSetting;
  /** Control socket and its secret (0700, per user). */
  readonly runtimeDir: string;
  readonly log: {
    readonly level: LogLevel;
    readonly file: string | undefined;
    readonly maxSizeBytes: number;
    readonly maxFiles: number;
  };
}

/** Values from the command line; undefined means "not given". */
export interface DaemonFlags {
  readonly config?: string | undefined;
  readonly serverUrl?: string | undefined;
  readonly serverCa?: string | undefined;
  readonly serverCertSha256?: string | undefined;
  readonly stateDir?: string | undefined;
  readonly runtimeDir?: string | undefined;
  readonly readerSocket?: string | undefined;
  readonly logLevel?: string | undefined;
  readonly logFile?: string | undefined;
}

/** Environment variables read, each the same as the config key beside it. */
export const DAEMON_ENV: Readonly<Record<string, string>> = {
  CARDLINK_DAEMON_CONFIG: 'config',
  CARDLINK_SERVER_URL: 'server.url',
  CARDLINK_SERVER_CA: 'server.caFile',
  CARDLINK_SERVER_CERT_SHA256: 'server.certificateSha256',
  CARDLINK_ISSUER: 'login.issuer',
  CARDLINK_CLIENT_ID: 'login.clientId',
  CARDLINK_DAEMON_STATE_DIR: 'stateDir',
  CARDLINK_DEVICE_KEY_STORE: 'deviceKeyStore',
  CARDLINK_DAEMON_RUNTIME_DIR: 'runtimeDir',
  CARDLINK_READER_SOCKET: 'reader.bridgeSocket',
  CARDLINK_READER_TRANSPORT: 'reader.transport',
  CARDLINK_DAEMON_LOG_LEVEL: 'log.level',
};

const KNOWN_KEYS = new Set([
  'server',
  'login',
  'reader',
  'timeouts',
  'reconnect',
  'deviceName',
  'stateDir',
  'deviceKeyStore',
  'runtimeDir',
  'log',
  'tray',
]);

export const DEFAULT_TIMEOUTS: DaemonConfig['timeouts'] = Object.freeze({
  connectSeconds: 10,
  commandSeconds: 30,
  graceSeconds: 120,
});
export const DEFAULT_RECONNECT: DaemonConfig['reconnect'] = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
});

function xdg(env: NodeJS.ProcessEnv, variable: string, fallback: string[]): string {
  return env[variable] || path.join(env['HOME'] || os.homedir(), ...fallback);
}

/** Allowed keys inside each section of the file: a typo is an error, never silently ignored. */
const SECTION_KEYS: Readonly<Record<string, readonly string[]>> = {
  server: ['url', 'caFile', 'certificateSha256'],
  login: ['issuer', 'clientId', 'resource', 'scope', 'issuers', 'redirectPort'],
  reader: ['transport', 'bridgeSocket', 'vpcdMode', 'vpcdHost', 'vpcdPort', 'name', 'slots'],
  timeouts: ['connectSeconds', 'commandSeconds', 'graceSeconds'],
  reconnect: ['initialDelayMs', 'maxDelayMs'],
  log: ['level', 'file', 'maxSizeBytes', 'maxFiles'],
  tray: ['signInStore'],
};

/** The machine-wide config file an admin's install script writes (Linux, macOS). */
export const SYSTEM_DAEMON_CONFIG_FILE = '/etc/cardlink/daemon.json';
/** Windows: the same file under `%ProgramData%` (install-scripts/windows/install.ps1 writes it). */
export const WINDOWS_SYSTEM_DAEMON_CONFIG = ['cardlink', 'daemon.json'] as const;
/** Where Windows keeps ProgramData when the variable is missing (a service's bare environment). */
const WINDOWS_PROGRAM_DATA = 'C:\\ProgramData';

/**
 * The machine-wide file: `/etc/cardlink/daemon.json`, on Windows `%ProgramData%\cardlink\daemon.json`
 * (`CARDLINK_SYSTEM_CONFIG` overrides it, for tests).
 */
export function systemDaemonConfigFile(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
): string {
  if (env['CARDLINK_SYSTEM_CONFIG']) return env['CARDLINK_SYSTEM_CONFIG'];
  if (platform === 'win32')
    return path.win32.join(env['ProgramData'] || WINDOWS_PROGRAM_DATA, ...WINDOWS_SYSTEM_DAEMON_CONFIG);
  return SYSTEM_DAEMON_CONFIG_FILE;
}

export function defaultDaemonConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(
    env['XDG_CONFIG_HOME'] || path.join(env['HOME'] || os.homedir(), '.config'),
    'cardlink',
    'daemon.json',
  );
}

function flagSource(flags: DaemonFlags): ConfigSource {
  const raw: RawSettings = {};
  const put = (key: string, v: string | undefined) => v !== undefined && setSetting(raw, key, v);
  put('server.url', flags.serverUrl);
  put('server.caFile', flags.serverCa);
  put('server.certificateSha256', flags.serverCertSha256);
  put('stateDir', flags.stateDir);
  put('runtimeDir', flags.runtimeDir);
  put('reader.bridgeSocket', flags.readerSocket);
  put('log.level', flags.logLevel);
  put('log.file', flags.logFile);
  return new ConfigSource('command line', raw);
}

/** The configured server URL: the server speaks TLS only, so https: (or wss:). */
function serverUrlOf(value: string, source: string): string {
  return checkUrl(value, 'server.url', source, ['https:', 'wss:']);
}

/**
 * The effective configuration. Throws ConfigError. `server.url` may be missing here (commands such
 * as `status` need no server); `requireServer` checks it.
 */
export function loadDaemonConfig(
  flags: DaemonFlags = {},
  env: NodeJS.ProcessEnv = process.env,
): DaemonConfig {
  const named = flags.config ?? (env['CARDLINK_DAEMON_CONFIG'] || undefined);
  const implicit = defaultDaemonConfigFile(env);
  const system = systemDaemonConfigFile(env);
  // A named file is complete; else the admin's file with the user's over it.
  const configFiles = named ? [path.resolve(named)] : [system, implicit].filter((f) => fs.existsSync(f));
  const configFile = configFiles[configFiles.length - 1];
  const files = configFiles.map((f) => readConfigFile(f, KNOWN_KEYS, 'docs/daemon-config.md'));
  for (const file of files) checkSectionKeys(file, SECTION_KEYS, 'docs/daemon-config.md');
  const sources = [...files, ...environmentSources(env, DAEMON_ENV), flagSource(flags)];
  const last = <T>(get: (s: ConfigSource) => T | undefined) => lastSetting(sources, get);
  const fileNames = new Set(configFiles);
  // A path from a file is relative to that file; from the environment or a flag, to the cwd.
  const pathOf = (setting: { value: string; source: string }) =>
    fileNames.has(setting.source)
      ? path.resolve(path.dirname(setting.source), setting.value)
      : path.resolve(setting.value);
  const pathSetting = (key: string) => {
    const setting = last((s) => s.string(key));
    return setting ? pathOf(setting) : undefined;
  };

  const urlSetting = last((s) => s.string('server.url'));
  const url = urlSetting ? serverUrlOf(urlSetting.value, urlSetting.source) : '';
  const pin = last((s) => s.string('server.certificateSha256'));
  let certificateSha256: string | undefined;
  if (pin) {
    certificateSha256 = pin.value.replace(/:/g, '').toLowerCase();
    if (!/^[0-9a-f]{64}$/.test(certificateSha256))
      throw new ConfigError('server.certificateSha256', pin.source, 'must be 64 hex digits (colons allowed)');
  }
  const caFile = last((s) => s.string('server.caFile'));
  if (caFile && !fs.existsSync(pathOf(caFile)))
    throw new ConfigError('server.caFile', caFile.source, `names a file that does not exist`);

  const issuer = last((s) => s.string('login.issuer'));
  if (issuer) checkIssuerUrl(issuer.value, 'login.issuer', issuer.source);
  const clientId = last((s) => s.string('login.clientId'))?.value;
  const resource = last((s) => s.string('login.resource'))?.value;
  const scope = last((s) => s.string('login.scope'))?.value ?? DEFAULT_OIDC_SCOPE;
  const listed = last((s) => issuerList(s, { clientId, resource, scope }));
  // The later source wins: CARDLINK_ISSUER over a file's list, a user's list over the admin's issuer.
  const sourceIndex = (name: string) => sources.findIndex((s) => s.name === name);
  const issuers: readonly LoginIssuer[] =
    listed && (!issuer || sourceIndex(listed.source) > sourceIndex(issuer.source))
      ? listed.value
      : issuer
        ? [{ issuer: issuer.value, clientId, resource, scope, name: hostName(issuer.value) }]
        : [];
  const defaultIssuer = issuers[0];

  const timeouts = {
    connectSeconds:
      last((s) => s.int('timeouts.connectSeconds', 1, 300))?.value ?? DEFAULT_TIMEOUTS.connectSeconds,
    commandSeconds:
      last((s) => s.int('timeouts.commandSeconds', 1, 600))?.value ?? DEFAULT_TIMEOUTS.commandSeconds,
    graceSeconds:
      last((s) => s.int('timeouts.graceSeconds', 0, 86_400))?.value ?? DEFAULT_TIMEOUTS.graceSeconds,
  };
  const initialDelay = last((s) => s.int('reconnect.initialDelayMs', 10, 60_000));
  const maxDelay = last((s) => s.int('reconnect.maxDelayMs', 100, 3_600_000));
  const reconnect = {
    initialDelayMs: initialDelay?.value ?? DEFAULT_RECONNECT.initialDelayMs,
    maxDelayMs: maxDelay?.value ?? DEFAULT_RECONNECT.maxDelayMs,
  };
  if (reconnect.maxDelayMs < reconnect.initialDelayMs) {
    // Blame the setting that was given (both may be).
    throw maxDelay
      ? new ConfigError('reconnect.maxDelayMs', maxDelay.source, 'must not be below reconnect.initialDelayMs')
      : new ConfigError(
          'reconnect.initialDelayMs',
          initialDelay!.source,
          `must not exceed reconnect.maxDelayMs (default ${DEFAULT_RECONNECT.maxDelayMs}); set both`,
        );
  }

  const transport = last((s) => s.oneOf('reader.transport', READER_TRANSPORTS))?.value ?? 'bridge';
  const vpcdHost = last((s) => s.string('reader.vpcdHost'));
  if (vpcdHost && !isVpcdLoopbackHost(vpcdHost.value))
    throw new ConfigError(
      'reader.vpcdHost',
      vpcdHost.source,
      'must be a loopback address, 127.0.0.1 (or another 127.x.x.x) or localhost: whoever reaches the port uses the cards, and vpcd speaks IPv4 only',
    );

  const stateDir =
    pathSetting('stateDir') ??
    path.join(xdg(env, 'XDG_STATE_HOME', ['.local', 'state']), 'cardlink', 'daemon');
  return Object.freeze({
    configFile,
    configFiles,
    configFileLocation: configFile ?? implicit,
    server: {
      url,
      sessionUrl: url ? sessionUrlFor(url) : '',
      caFile: caFile ? pathOf(caFile) : undefined,
      certificateSha256,
    },
    login: {
      issuer: defaultIssuer?.issuer,
      clientId: defaultIssuer?.clientId,
      resource: defaultIssuer?.resource,
      scope: defaultIssuer?.scope ?? scope,
      issuers,
      // 0 (the default) is a random free port; below 1024 needs privileges a user's tray lacks.
      redirectPort: last((s) => s.int('login.redirectPort', 0, 65_535))?.value || undefined,
    },
    tray: {
      signInStore: last((s) => s.oneOf('tray.signInStore', REFRESH_TOKEN_STORES))?.value ?? 'auto',
    },
    reader: {
      transport,
      bridgeSocket: pathSetting('reader.bridgeSocket') ?? DEFAULT_BRIDGE_SOCKET,
      vpcdMode: last((s) => s.oneOf('reader.vpcdMode', VPCD_MODES))?.value ?? 'listen',
      vpcdHost: vpcdHost?.value ?? DEFAULT_VPCD_HOST,
      // Slot 1 listens on vpcdPort + 1: the last port must exist too.
      vpcdPort: last((s) => s.int('reader.vpcdPort', 1, 65534))?.value ?? DEFAULT_VPCD_PORT,
      name:
        last((s) => s.string('reader.name'))?.value ??
        (transport === 'vpcd' ? DEFAULT_VPCD_READER_NAME : DEFAULT_READER_NAME),
      slots: last((s) => s.int('reader.slots', 1, 16))?.value ?? 4,
    },
    timeouts,
    reconnect,
    deviceName: last((s) => s.string('deviceName'))?.value ?? os.hostname(),
    stateDir,
    deviceKeyStore: last((s) => s.oneOf('deviceKeyStore', DEVICE_KEY_STORES))?.value ?? 'auto',
    runtimeDir: pathSetting('runtimeDir') ?? controlRuntimeDirectory(env),
    log: {
      level: last((s) => s.oneOf('log.level', ['error', 'warn', 'info', 'debug'] as const))?.value ?? 'info',
      file: pathSetting('log.file') ?? path.join(stateDir, 'daemon.log'),
      maxSizeBytes: last((s) => s.int('log.maxSizeBytes', 64 * 1024, 1024 ** 3))?.value ?? 5 * 1024 * 1024,
      maxFiles: last((s) => s.int('log.maxFiles', 2, 100))?.value ?? 3,
    },
  });
}

/** An issuer must be https, or http on the loopback interface (tests, local development). */
function checkIssuerUrl(value: string, key: string, source: string): string {
  const u = new URL(checkUrl(value, key, source, ['https:', 'http:']));
  if (u.protocol === 'http:' && !isLoopbackHost(u.hostname))
    throw new ConfigError(key, source, 'must be an https URL (http only on loopback)');
  return value;
}

function hostName(url: string): string {
  return new URL(url).host;
}

/**
 * `login.issuers` of one source, checked: 1 to MAX_LOGIN_ISSUERS objects, each with an `issuer`,
 * and `clientId`, `resource`, `scope` defaulting to the `login.*` ones. Errors name the entry
 * (`login.issuers[1].issuer`) and the source.
 */
function issuerList(
  source: ConfigSource,
  defaults: { clientId: string | undefined; resource: string | undefined; scope: string },
): LoginIssuer[] | undefined {
  const raw = pickSetting(source.values, 'login.issuers');
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw) || raw.length < 1 || raw.length > MAX_LOGIN_ISSUERS)
    throw new ConfigError(
      'login.issuers',
      source.name,
      `must be a list of 1 to ${MAX_LOGIN_ISSUERS} identity providers, the default first`,
    );
  const seen = new Set<string>();
  return raw.map((entry: unknown, i) => {
    const key = `login.issuers[${i}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      throw new ConfigError(key, source.name, 'must be an object with an "issuer"');
    for (const k of Object.keys(entry))
      if (!ISSUER_KEYS.includes(k))
        throw new ConfigError(
          `${key}.${k}`,
          source.name,
          'is not a known setting (see docs/daemon-config.md)',
        );
    const one = new ConfigSource(source.name, entry as RawSettings);
    const text = (k: string) => {
      try {
        return one.string(k);
      } catch {
        throw new ConfigError(`${key}.${k}`, source.name, 'must be a non-empty string');
      }
    };
    const issuer = text('issuer');
    if (issuer === undefined) throw new ConfigError(`${key}.issuer`, source.name, 'is required');
    checkIssuerUrl(issuer, `${key}.issuer`, source.name);
    const clientId = text('clientId') ?? defaults.clientId;
    if (seen.has(`${issuer} ${clientId}`))
      throw new ConfigError(`${key}.issuer`, source.name, 'lists the same issuer and client twice');
    seen.add(`${issuer} ${clientId}`);
    return {
      issuer,
      clientId,
      resource: text('resource') ?? defaults.resource,
      scope: text('scope') ?? defaults.scope,
      name: text('name') ?? hostName(issuer),
    };
  });
}

/** Throws naming the missing key when no server is configured. */
export function requireServerUrl(config: DaemonConfig): string {
  if (!config.server.url) {
    throw new ConfigError(
      'server.url',
      config.configFileLocation,
      'is required: set it in the config file, CARDLINK_SERVER_URL or --server-url',
    );
  }
  return config.server.url;
}
