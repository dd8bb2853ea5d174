/**
 * The OpenID Connect client settings of a sign-in from the daemon's settings (`login.*`), for
 * `cardlink login` and the tray's "Sign in…": both sign in in their own process and hand the
 * tokens to the daemon.
 */
import { ConfigError, isLoopbackHost } from '../../protocol/config/config-sources.js';
import type { DaemonConfig } from '../config/daemon-config.js';
import type { BrowserLoginOptions } from './authorization-code-login.js';
import type { IdpRequestOptions, OidcClientSettings } from './oidc-client-settings.js';

/** Throws a ConfigError naming `login.issuer` or `login.clientId` and the file when one is missing. */
export function oidcSettingsFrom(config: DaemonConfig): OidcClientSettings {
  const where = config.configFile ?? 'the daemon config';
  if (!config.login.issuer) throw new ConfigError('login.issuer', where, 'is required to sign in');
  if (!config.login.clientId) throw new ConfigError('login.clientId', where, 'is required to sign in');
  return {
    issuer: config.login.issuer,
    clientId: config.login.clientId,
    scope: config.login.scope,
    ...(config.login.resource ? { resource: config.login.resource } : {}),
  };
}

/**
 * The settings of the `index`th configured identity provider (`login.issuers`, 0 the default);
 * throws a ConfigError naming the entry when there is none or it has no client id.
 */
export function oidcSettingsAt(config: DaemonConfig, index: number): OidcClientSettings {
  if (index === 0) return oidcSettingsFrom(config);
  const where = config.configFile ?? 'the daemon config';
  const entry = config.login.issuers[index];
  if (!entry) throw new ConfigError(`login.issuers[${index}]`, where, 'is not configured');
  if (!entry.clientId)
    throw new ConfigError(`login.issuers[${index}].clientId`, where, 'is required to sign in');
  return {
    issuer: entry.issuer,
    clientId: entry.clientId,
    scope: entry.scope,
    ...(entry.resource ? { resource: entry.resource } : {}),
  };
}

/** An `http://` issuer is accepted only on the loopback interface (tests, local development). */
export function idpRequestOptionsFor(settings: OidcClientSettings): IdpRequestOptions {
  return { allowInsecureHttpIssuer: isLoopbackHost(new URL(settings.issuer).hostname) };
}

/** The browser sign-in's options from the settings: the issuer's, and the fixed redirect port if one is set. */
export function browserLoginOptionsFor(
  config: DaemonConfig,
  settings: OidcClientSettings,
): BrowserLoginOptions {
  const port = config.login.redirectPort;
  return { ...idpRequestOptionsFor(settings), ...(port !== undefined ? { redirectPort: port } : {}) };
}
