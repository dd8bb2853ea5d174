/** `cardlink login`: signs in at the identity provider and hands the tokens to the running daemon. */
import { startBrowserLogin } from '../login/authorization-code-login.js';
import { startDeviceCodeLogin } from '../login/device-code-login.js';
import { browserLoginOptionsFor, idpRequestOptionsFor, oidcSettingsFrom } from '../login/login-settings.js';
import type { TokenGrant } from '../login/token-grant.js';
import { configFrom, out, withDaemon } from './cli-common.js';
import { openWithDesktop } from './desktop-open.js';
import type { LoginArgs } from './daemon-commands.js';

export async function runLogin(args: LoginArgs): Promise<void> {
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
      const login = await startBrowserLogin(settings, browserLoginOptionsFor(config, settings));
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
}
