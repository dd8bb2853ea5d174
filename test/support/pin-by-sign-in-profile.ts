/**
 * The card profile of the tests that set a PIN after a fresh sign-in (the PIN page's `set` and
 * `cardlink pin set`): the default profile with the first PIN and a forgotten PIN set by sign-in,
 * trivial PINs refused and the last two PINs remembered, so one card exercises every rule the
 * set-PIN path applies.
 */
import {
  loadDefaultProfile,
  parseCardProfile,
  profileToJson,
  type CardProfile,
} from '../../server/admin/index.js';

export async function pinBySignInProfile(): Promise<CardProfile> {
  const base = profileToJson(await loadDefaultProfile());
  return parseCardProfile({
    ...base,
    pin: {
      ...(base.pin as object),
      rejectTrivial: true,
      history: 2,
      firstPinBySignIn: true,
      resetBySignIn: true,
    },
  });
}
