/**
 * `cardlink pin set`, run: a new PIN without the old one or the PUK, after a fresh sign-in at the
 * identity provider (docs/personalization.md, "Set the PIN after a fresh sign-in"). The order:
 *
 *   1. the card (chooseCard, as `pin change`), while nothing is asked of the person yet;
 *   2. the new PIN, twice on a terminal without echo, or one line from stdin (never argv);
 *   3. the sign-in of `cardlink login`, made fresh (`prompt=login`, `max_age=0`, no refresh
 *      token): in the browser, or with a code on another device (`--device-code`);
 *   4. one `set-pin` control request with the sign-in's access token, sent as soon as the sign-in
 *      is done: the card server accepts a sign-in only `pin.freshSignInMaxAgeSeconds` old.
 *
 * The PIN is asked for before the sign-in so that a typo (the two entries differ) costs no sign-in,
 * and the sign-in's age is as small as it can be when the server checks it. The access token is
 * used once and forgotten; it is not handed to the daemon's session.
 */
import { CardlinkError } from '../../protocol/errors.js';
import type { SetPinResult } from '../control/control-protocol.js';
import { configFrom, out, withDaemon } from './cli-common.js';
import { openWithDesktop } from './desktop-open.js';
import type { PinSetArgs } from './pin-command.js';
import { describeSetPinResult, setPinExitStatus } from './pin-words.js';
import { chooseCard } from './run-pin.js';
import { readSecrets } from './secret-input.js';

export async function runPinSet(args: PinSetArgs): Promise<void> {
  const config = configFrom(args);
  const terminal = process.stdin.isTTY === true;
  const result = await withDaemon(config, async (c): Promise<SetPinResult> => {
    const card = chooseCard(await c.request('cards'), args.card);
    if (terminal) out(`Setting a new PIN for "${card.label}".`);
    const [newPin, again] = await readSecrets(terminal ? ['New PIN: ', 'New PIN again: '] : ['New PIN: '], {
      input: process.stdin,
      prompts: process.stderr,
    });
    if (!newPin) throw new CardlinkError('ERR_USAGE', 'an empty line: nothing was sent to the card');
    if (terminal && newPin !== again)
      throw new CardlinkError('ERR_USAGE', 'the two new PINs differ: nothing was sent to the card');
    const freshAccessToken = await freshSignIn(config, args);
    return c.request('set-pin', { cardId: card.cardId, newPin, freshAccessToken });
  });
  const answer = describeSetPinResult(result);
  out(answer.text);
  process.exitCode = setPinExitStatus(result);
}

/** The fresh sign-in at the daemon's identity provider; resolves with its access token. */
async function freshSignIn(config: ReturnType<typeof configFrom>, args: PinSetArgs): Promise<string> {
  const { browserLoginOptionsFor, idpRequestOptionsFor, oidcSettingsFrom } =
    await import('../login/login-settings.js');
  const settings = oidcSettingsFrom(config);
  if (args['device-code']) {
    const { startDeviceCodeLogin } = await import('../login/device-code-login.js');
    const login = await startDeviceCodeLogin(settings, { ...idpRequestOptionsFor(settings), fresh: true });
    out(`To set the PIN, sign in again: open ${login.verificationUri} and enter the code ${login.userCode}`);
    if (login.verificationUriComplete) out(`(or open ${login.verificationUriComplete})`);
    out('Sign in with your password even if you are signed in there already.');
    return (await login.complete()).accessToken;
  }
  const { startBrowserLogin } = await import('../login/authorization-code-login.js');
  const login = await startBrowserLogin(settings, {
    ...browserLoginOptionsFor(config, settings),
    fresh: true,
  });
  out(`To set the PIN, sign in again in your browser: ${login.authorizationUrl}`);
  if (args.browser) void openWithDesktop(login.authorizationUrl);
  return (await login.complete()).accessToken;
}
