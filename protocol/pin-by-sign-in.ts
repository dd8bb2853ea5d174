/**
 * The set-PIN after a fresh sign-in, as the daemon and the card server both see it
 * (docs/personalization.md, "First PIN and forgotten PIN"): `POST <server>/v1/pin` with the fresh
 * access token as `Authorization: Bearer` and `{cardId, newPin}` as JSON. Shared through
 * protocol/ because the daemon and the server share code only here and in apdu/.
 */
import type { PinPolicyRefusal } from '../apdu/piv/index.js';

/** Path of the request on the card server's HTTPS listener. */
export const PIN_BY_SIGN_IN_PATH = '/v1/pin';

/** The server's answer on success. */
export interface PinBySignInDone {
  /** `first`: the card had no PIN; `reset`: a forgotten PIN was replaced. */
  readonly kind: 'first' | 'reset';
}

/** What the daemon reports to the tray and the CLI (`set-pin`'s result). */
export type SetPinResult =
  | { readonly outcome: 'done'; readonly kind: 'first' | 'reset' }
  /** The sign-in is older than the server's `pin.freshSignInMaxAgeSeconds`: sign in again. */
  | { readonly outcome: 'sign-in-not-fresh' }
  /** The PIN is set and the profile lets no sign-in replace it: PUK or administrator. */
  | { readonly outcome: 'not-allowed' }
  /** The PIN policy refused the new PIN; `refusal` names the rule. */
  | { readonly outcome: 'policy'; readonly refusal: PinPolicyRefusal };
