/**
 * The card server's settings: defaults, then a JSON config file, then the environment, then flags.
 * Every setting is listed in docs/server-config.md. A bad value fails start-up with
 * `ERR_CONFIG_INVALID` naming the key and where it came from (the file's path, the variable, or the
 * flag), never the value of a secret.
 */
import os from 'node:os';
import path from 'node:path';
import {
  checkUrl,
  ConfigError,
  ConfigSource as Source,
  environmentSources,
  isLoopbackHost,
  lastSetting,
  pickSetting as pick,
  readConfigFile,
  checkSectionKeys,
  type RawSettings as Raw,
} from '../../protocol/config/config-sources.js';
import { MAX_FRAME_BYTES, MAX_IN_FLIGHT_REQUESTS } from '../../protocol/wire/limits.js';
import type { TrustedIssuer } from '../auth/types.js';
import { parseDatabaseUrl } from '../storage/database-url.js';

export { ConfigError, MAX_CONFIG_FILE_BYTES } from '../../protocol/config/config-sources.js';

export type KekSettings =
  | { readonly provider: 'file'; readonly file: string }
  | {
      readonly provider: 'pkcs11';
      readonly module: string;
      readonly tokenLabel: string;
      /** File holding the token's user PIN (0600); the PIN itself is never a setting. */
      readonly pinFile: string;
    };

/** Default of `pin.freshSignInMaxAgeSeconds`: a sign-in older than 5 min cannot set a PIN. */
export const DEFAULT_FRESH_SIGN_IN_MAX_AGE_SECONDS = 300;

export interface ServerConfig {
  /** Where state lives when no other path is given: the SQLite file, key file, TLS pair. */
  readonly dataDir: string;
  readonly listen: { readonly host: string; readonly port: number };
  /** The URL clients connect to; it is the access tokens' audience and part of the device proof. */
  readonly publicUrl: string;
  /** Accepted `aud` of access tokens; default `publicUrl`. */
  readonly audience: string;
  readonly tls: { readonly certFile: string; readonly keyFile: string };
  readonly databaseUrl: string;
  readonly kek: KekSettings;
  readonly issuers: readonly TrustedIssuer[];
  readonly clockToleranceSeconds: number;
  /**
   * `pin.freshSignInMaxAgeSeconds`: how old (auth_time) a sign-in may be to set a PIN without
   * the old one (server/cards/pin-by-sign-in.ts); 1..3600, default 300.
   */
  readonly pin: { readonly freshSignInMaxAgeSeconds: number };
  /**
   * Which new devices may open cards at once: `first-device` (default) the user's first device
   * only, later ones wait for an administrator; `automatic` every device; `approval` none.
   */
  readonly deviceRegistration: 'first-device' | 'automatic' | 'approval';
  /**
   * The issuing CA's CRL: an optional plain-HTTP listener serving `/ca/crl` and `/ca/cert`
   * (Windows fetches CRLs over http only), and how long before its nextUpdate the server
   * re-signs it by itself (server/http/crl-publisher.ts).
   */
  readonly crl: {
    readonly http?: { readonly host: string; readonly port: number } | undefined;
    readonly resignBeforeHours: number;
  };
  readonly limits: {
    readonly maxFrameBytes: number;
    readonly maxInFlight: number;
    /** A connection with no frame for this long is closed (the client pings to stay). */
    readonly idleTimeoutSeconds: number;
    /** How long a dropped session may be resumed with its resume token. */
    readonly resumeGraceSeconds: number;
    /** TOKEN_EXPIRING is pushed this long before the access token expires. */
    readonly tokenWarningSeconds: number;
    /** Open WebSocket connections at once; more are refused at the upgrade with 503. */
    readonly maxConnections: number;
    /** Handshake (HELLO..AUTH_OK) must finish within this. */
    readonly handshakeTimeoutSeconds: number;
    // Below HTTP and WebSocket: TCP and TLS sockets (docs/connection-limits.md).
    /** Open TCP sockets at once, any kind; more are closed at accept. Default maxConnections + 1000. */
    readonly maxSockets: number;
    /** Open TCP sockets at once from one source address (IPv6: one /64); more are closed at accept. */
    readonly maxSocketsPerAddress: number;
    /** The TLS handshake must finish within this after the TCP accept. */
    readonly tlsHandshakeTimeoutSeconds: number;
    /** A request's headers must all arrive within this. */
    readonly headersTimeoutSeconds: number;
    /** A socket that is no WebSocket and has no request in progress for this long is closed. */
    readonly socketIdleTimeoutSeconds: number;
    /** Failed sign-in throttle (per address; per user for device proofs): docs/security-model.md. */
    readonly authFreeFailures: number;
    readonly authThrottleMaxSeconds: number;
    readonly authFailureHalfLifeSeconds: number;
    readonly authThrottleMaxEntries: number;
    /** Lines of one repeated log message per minute; the rest are counted in one summary line. */
    readonly logRepeatsPerMinute: number;
  };
  readonly log: { readonly level: 'error' | 'warn' | 'info' | 'debug'; readonly file?: string | undefined };
  /**
   * Key archival (server/archival/): `recoveryCertificate` is the Key Recovery Agent's RSA
   * certificate (PEM or DER file) that archived key management keys are encrypted to. Checked when
   * a key is archived (a card profile with `archiveKeyManagementKey`), not at start-up.
   */
  readonly keyArchival: { readonly recoveryCertificate?: string | undefined };
}

/** Values from the command line; undefined means "not given". */
export interface ServerFlags {
  readonly config?: string | undefined;
  readonly dataDir?: string | undefined;
  readonly host?: string | undefined;
  readonly port?: number | undefined;
  readonly publicUrl?: string | undefined;
  readonly databaseUrl?: string | undefined;
  readonly logLevel?: string | undefined;
}

/** Environment variables read, each the same as the config key named beside it. */
export const SERVER_ENV: Readonly<Record<string, string>> = {
  CARDLINK_SERVER_CONFIG: 'config',
  CARDLINK_SERVER_DATA_DIR: 'dataDir',
  CARDLINK_SERVER_HOST: 'listen.host',
  CARDLINK_SERVER_PORT: 'listen.port',
  CARDLINK_SERVER_PUBLIC_URL: 'publicUrl',
  CARDLINK_SERVER_DATABASE_URL: 'databaseUrl',
  CARDLINK_SERVER_LOG_LEVEL: 'log.level',
};

export const DEFAULT_PORT = 8443;
export const DEFAULT_LIMITS: ServerConfig['limits'] = Object.freeze({
  maxFrameBytes: MAX_FRAME_BYTES,
  maxInFlight: MAX_IN_FLIGHT_REQUESTS,
  idleTimeoutSeconds: 120,
  resumeGraceSeconds: 120,
  tokenWarningSeconds: 60,
  maxConnections: 10_000,
  handshakeTimeoutSeconds: 10,
  maxSockets: 11_000,
  maxSocketsPerAddress: 256,
  tlsHandshakeTimeoutSeconds: 10,
  headersTimeoutSeconds: 10,
  socketIdleTimeoutSeconds: 20,
  authFreeFailures: 20,
  authThrottleMaxSeconds: 300,
  authFailureHalfLifeSeconds: 600,
  authThrottleMaxEntries: 10_000,
  logRepeatsPerMinute: 20,
});

/** Sockets beyond `maxConnections` that `maxSockets` leaves by default for handshakes and probes. */
const SOCKETS_BEYOND_CONNECTIONS = 1_000;

function defaultDataDir(): string {
  const state = process.env['XDG_STATE_HOME'] || path.join(os.homedir(), '.local', 'state');
  return path.join(state, 'cardlink', 'server');
}

/** Allowed keys inside each section: a typo is an error, never silently ignored. */
const SECTION_KEYS: Readonly<Record<string, readonly string[]>> = {
  listen: ['host', 'port'],
  tls: ['certFile', 'keyFile'],
  kek: ['provider', 'file', 'module', 'tokenLabel', 'pinFile'],
  limits: Object.keys(DEFAULT_LIMITS),
  log: ['level', 'file'],
  crl: ['httpHost', 'httpPort', 'resignBeforeHours'],
  keyArchival: ['recoveryCertificate'],
};

/** Re-sign the CRL when fewer hours than this are left of its 7 days (`crl.resignBeforeHours`). */
export const DEFAULT_CRL_RESIGN_BEFORE_HOURS = 72;

const KNOWN_KEYS = new Set([
  'dataDir',
  'listen',
  'publicUrl',
  'audience',
  'tls',
  'databaseUrl',
  'kek',
  'issuers',
  'clockToleranceSeconds',
  'pin',
  'deviceRegistration',
  'limits',
  'log',
  'crl',
  'keyArchival',
]);

function flagSource(flags: ServerFlags): Source {
  const raw: Raw = {};
  if (flags.dataDir !== undefined) raw['dataDir'] = flags.dataDir;
  if (flags.host !== undefined || flags.port !== undefined) {
    raw['listen'] = { host: flags.host, port: flags.port };
  }
  if (flags.publicUrl !== undefined) raw['publicUrl'] = flags.publicUrl;
  if (flags.databaseUrl !== undefined) raw['databaseUrl'] = flags.databaseUrl;
  if (flags.logLevel !== undefined) raw['log'] = { level: flags.logLevel };
  return new Source('command line', raw);
}

function parseIssuers(file: Source | undefined): TrustedIssuer[] {
  if (!file || !file.has('issuers')) return [];
  const list = pick(file.values, 'issuers');
  if (!Array.isArray(list)) throw new ConfigError('issuers', file.name, 'must be a list');
  return list.map((entry: unknown, i: number) => {
    const key = `issuers[${i}]`;
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry))
      throw new ConfigError(key, file.name, 'must be an object');
    const item = new Source(file.name, entry as Raw);
    const issuer = item.string('issuer');
    const tenant = item.string('tenant');
    if (!issuer) throw new ConfigError(`${key}.issuer`, file.name, 'is required');
    if (!tenant) throw new ConfigError(`${key}.tenant`, file.name, 'is required');
    let parsed: URL;
    try {
      parsed = new URL(issuer);
    } catch {
      throw new ConfigError(`${key}.issuer`, file.name, 'must be an absolute URL');
    }
    if (parsed.protocol !== 'https:' && !(parsed.protocol === 'http:' && isLoopbackHost(parsed.hostname))) {
      throw new ConfigError(`${key}.issuer`, file.name, 'must be an https URL (http only on loopback)');
    }
    const jwksUri = item.string('jwksUri');
    const typ = pick(entry as Raw, 'requireAtJwtType');
    if (typ !== undefined && typeof typ !== 'boolean')
      throw new ConfigError(`${key}.requireAtJwtType`, file.name, 'must be true or false');
    return { issuer, tenant, jwksUri, requireAtJwtType: typ };
  });
}

/**
 * The effective configuration. `env` defaults to `process.env`. Throws `ConfigError`.
 */
export function loadServerConfig(
  flags: ServerFlags = {},
  env: NodeJS.ProcessEnv = process.env,
): ServerConfig {
  const configFile = flags.config ?? (env['CARDLINK_SERVER_CONFIG'] || undefined);
  const file = configFile
    ? readConfigFile(path.resolve(configFile), KNOWN_KEYS, 'docs/server-config.md')
    : undefined;
  if (file) checkSectionKeys(file, SECTION_KEYS, 'docs/server-config.md');
  // Later sources win: file < environment < flags.
  const sources: Source[] = [
    ...(file ? [file] : []),
    ...environmentSources(env, SERVER_ENV),
    flagSource(flags),
  ];
  const last = <T>(get: (s: Source) => T | undefined) => lastSetting(sources, get);

  const dataDir = path.resolve(last((s) => s.string('dataDir'))?.value ?? defaultDataDir());
  const host = last((s) => s.string('listen.host'));
  const port = last((s) => s.int('listen.port', 0, 65535))?.value ?? DEFAULT_PORT;
  const publicUrlSetting = last((s) => s.string('publicUrl'));
  const listenHost = host?.value ?? '127.0.0.1';
  const publicUrl = publicUrlSetting
    ? checkUrl(publicUrlSetting.value, 'publicUrl', publicUrlSetting.source, ['https:'])
    : `https://${listenHost.includes(':') ? `[${listenHost}]` : listenHost}:${port}/`;
  const audienceSetting = last((s) => s.string('audience'));
  const audience = audienceSetting?.value ?? publicUrl;

  const databaseSetting = last((s) => s.string('databaseUrl'));
  const databaseUrl = databaseSetting?.value ?? `sqlite:${path.join(dataDir, 'cardlink.db')}`;
  try {
    parseDatabaseUrl(databaseUrl); // the parser the storage itself uses
  } catch {
    throw new ConfigError(
      'databaseUrl',
      databaseSetting?.source ?? 'default',
      'must be sqlite:<file> or postgres://…',
    );
  }

  const certFile = last((s) => s.string('tls.certFile'))?.value ?? path.join(dataDir, 'tls', 'server.crt');
  const keyFile = last((s) => s.string('tls.keyFile'))?.value ?? path.join(dataDir, 'tls', 'server.key');

  const provider = last((s) => s.oneOf('kek.provider', ['file', 'pkcs11'] as const));
  let kek: KekSettings;
  if (provider?.value === 'pkcs11') {
    const need = (key: string): string => {
      const v = last((s) => s.string(key));
      if (!v) throw new ConfigError(key, provider.source, 'is required when kek.provider is pkcs11');
      return v.value;
    };
    kek = {
      provider: 'pkcs11',
      module: need('kek.module'),
      tokenLabel: need('kek.tokenLabel'),
      pinFile: need('kek.pinFile'),
    };
  } else {
    kek = {
      provider: 'file',
      file: last((s) => s.string('kek.file'))?.value ?? path.join(dataDir, 'kek.json'),
    };
  }

  const limits = { ...DEFAULT_LIMITS };
  const limitRanges: Record<keyof ServerConfig['limits'], [number, number]> = {
    maxFrameBytes: [1024, MAX_FRAME_BYTES],
    maxInFlight: [1, MAX_IN_FLIGHT_REQUESTS],
    idleTimeoutSeconds: [5, 86_400],
    resumeGraceSeconds: [0, 3_600],
    tokenWarningSeconds: [0, 3_600],
    maxConnections: [1, 1_000_000],
    handshakeTimeoutSeconds: [1, 300],
    maxSockets: [1, 1_000_000],
    maxSocketsPerAddress: [1, 1_000_000],
    tlsHandshakeTimeoutSeconds: [1, 120],
    headersTimeoutSeconds: [1, 300],
    socketIdleTimeoutSeconds: [1, 3_600],
    authFreeFailures: [1, 1_000],
    authThrottleMaxSeconds: [1, 86_400],
    authFailureHalfLifeSeconds: [10, 86_400],
    authThrottleMaxEntries: [100, 1_000_000],
    logRepeatsPerMinute: [1, 10_000],
  };
  const limitSources: Partial<Record<keyof ServerConfig['limits'], string>> = {};
  for (const [name, [min, max]] of Object.entries(limitRanges) as [
    keyof ServerConfig['limits'],
    [number, number],
  ][]) {
    const v = last((s) => s.int(`limits.${name}`, min, max));
    if (v) {
      (limits as Record<string, number>)[name] = v.value;
      limitSources[name] = v.source;
    }
  }
  // Every WebSocket is a socket: fewer sockets than connections would quietly lower maxConnections.
  if (limitSources.maxSockets === undefined) {
    limits.maxSockets = Math.min(
      limits.maxConnections + SOCKETS_BEYOND_CONNECTIONS,
      limitRanges.maxSockets[1],
    );
  } else if (limits.maxSockets < limits.maxConnections) {
    throw new ConfigError(
      'limits.maxSockets',
      limitSources.maxSockets,
      `must be at least limits.maxConnections (${limits.maxConnections})`,
    );
  }

  const crlPort = last((s) => s.int('crl.httpPort', 0, 65535))?.value;
  const recoveryCertificate = last((s) => s.string('keyArchival.recoveryCertificate'))?.value;
  return Object.freeze({
    dataDir,
    listen: { host: listenHost, port },
    publicUrl,
    audience,
    tls: { certFile: path.resolve(dataDir, certFile), keyFile: path.resolve(dataDir, keyFile) },
    databaseUrl,
    kek: kek.provider === 'file' ? { provider: 'file' as const, file: path.resolve(dataDir, kek.file) } : kek,
    issuers: parseIssuers(file),
    clockToleranceSeconds: last((s) => s.int('clockToleranceSeconds', 0, 300))?.value ?? 30,
    pin: {
      freshSignInMaxAgeSeconds:
        last((s) => s.int('pin.freshSignInMaxAgeSeconds', 1, 3600))?.value ??
        DEFAULT_FRESH_SIGN_IN_MAX_AGE_SECONDS,
    },
    deviceRegistration:
      last((s) => s.oneOf('deviceRegistration', ['first-device', 'automatic', 'approval'] as const))?.value ??
      'first-device',
    limits: Object.freeze(limits),
    crl: Object.freeze({
      // The plain-HTTP listener only when crl.httpPort is set; loopback unless crl.httpHost says otherwise.
      ...(crlPort === undefined
        ? {}
        : { http: { host: last((s) => s.string('crl.httpHost'))?.value ?? '127.0.0.1', port: crlPort } }),
      resignBeforeHours:
        last((s) => s.int('crl.resignBeforeHours', 1, 167))?.value ?? DEFAULT_CRL_RESIGN_BEFORE_HOURS,
    }),
    log: {
      level: last((s) => s.oneOf('log.level', ['error', 'warn', 'info', 'debug'] as const))?.value ?? 'info',
      file: last((s) => s.string('log.file'))?.value,
    },
    keyArchival: Object.freeze(
      recoveryCertificate === undefined
        ? {}
        : { recoveryCertificate: path.resolve(dataDir, recoveryCertificate) },
    ),
  });
}
