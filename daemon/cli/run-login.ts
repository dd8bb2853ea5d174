/** `cardlink login`: signs in at the identity provider and hands the tokens to the running daemon. */
import { spawn } from 'node:child_process';
import { ConfigError, isLoopbackHost } from '../../protocol/config/config-sources.js';
import type { DaemonConfig } from '../config/daemon-config.js';
import { startBrowserLogin } from '../login/authorization-code-login.js';
import { startDeviceCodeLogin } from '../login/device-code-login.js';
import type { OidcClientSettings } from '../login/oidc-client-settings.js';
import type { TokenGrant } from '../login/token-grant.js';
import { configFrom, out, withDaemon } from './cli-common.js';
import type { LoginArgs } from './daemon-commands.js';

function oidcSettings(config: DaemonConfig): OidcClientSettings {
  const where = config.configFile ?? 'the daemon config';
  if (!config.login.issuer) throw new ConfigError('login.issuer', where, 'is required for cardlink login');
  if (!config.login.clientId)
    throw new ConfigError('login.clientId', where, 'is required for cardlink login');
  return {
    issuer: config.login.issuer,
    clientId: config.login.clientId,
    scope: config.login.scope,
    ...(config.login.resource ? { resource: config.login.resource } : {}),
  };
}

/** Opens `url` in the desktop's browser when there is one; the URL is printed either way. */
function openInBrowser(url: string): void {
  try {
    const child = spawn('xdg-open', [url], { stdio: 'ignore', detached: true });
    child.on('error', () => undefined);
    child.unref();
  } catch {
    // No opener: the printed URL is the way.
  }
}

export async function runLogin(args: LoginArgs): Promise<void> {
  const config = configFrom(args);
  const settings = oidcSettings(config);
  const allowInsecureHttpIssuer = isLoopbackHost(new URL(settings.issuer).hostname);
  await withDaemon(config, async (client) => {
    let grant: TokenGrant;
    if (args['device-code']) {
      const login = await startDeviceCodeLogin(settings, { allowInsecureHttpIssuer });
      out(`To sign in, open ${login.verificationUri} and enter the code ${login.userCode}`);
      if (login.verificationUriComplete) out(`(or open ${login.verificationUriComplete})`);
      grant = await login.complete();
    } else {
      const login = await startBrowserLogin(settings, { allowInsecureHttpIssuer });
      out(`Sign in in your browser: ${login.authorizationUrl}`);
      if (args.browser) openInBrowser(login.authorizationUrl);
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
}
