/**
 * The card profile's renewal policy (server/admin/profile.ts): `renewal.atSignIn` is off unless a
 * profile says `true`, is refused when it is not a boolean (naming the field), survives the round
 * trip through the JSON stored with the card, and a profile stored before the option existed
 * (renewal without it) still parses, with renewal at sign-in off.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../../server/admin/profile.js';

const configError = (field: string) => (e: Error & { code?: string; context?: Record<string, unknown> }) => {
  assert.equal(e.code, 'ERR_CONFIG_INVALID');
  assert.equal(e.context?.field, field, e.message);
  return true;
};

describe('card profile: renewal at sign-in', () => {
  it('is off by default and off in the shipped profile', async () => {
    const base = await loadDefaultProfile();
    assert.equal(base.renewal.atSignIn, false);
    const json = profileToJson(base);
    delete json.renewal;
    assert.deepEqual(parseCardProfile(json).renewal, { key: 'new', windowDays: 30, atSignIn: false });
  });

  it('a profile stored before the option existed parses with it off', async () => {
    const json = { ...profileToJson(await loadDefaultProfile()), renewal: { key: 'same', windowDays: 14 } };
    assert.deepEqual(parseCardProfile(json).renewal, { key: 'same', windowDays: 14, atSignIn: false });
  });

  it('is taken when true and kept through the stored JSON', async () => {
    const json = {
      ...profileToJson(await loadDefaultProfile()),
      renewal: { key: 'new', windowDays: 20, atSignIn: true },
    };
    const profile = parseCardProfile(json);
    assert.deepEqual(profile.renewal, { key: 'new', windowDays: 20, atSignIn: true });
    assert.deepEqual(parseCardProfile(profileToJson(profile)), profile, 'round trip');
    // Only atSignIn given: the others take their defaults.
    assert.deepEqual(parseCardProfile({ ...json, renewal: { atSignIn: true } }).renewal, {
      key: 'new',
      windowDays: 30,
      atSignIn: true,
    });
  });

  it('refuses anything but a boolean, and unknown renewal members, naming the field', async () => {
    const base = profileToJson(await loadDefaultProfile());
    for (const value of ['true', 1, null, {}, []])
      assert.throws(
        () => parseCardProfile({ ...base, renewal: { atSignIn: value } }),
        configError('renewal.atSignIn'),
        JSON.stringify(value),
      );
    assert.throws(
      () => parseCardProfile({ ...base, renewal: { atSignon: true } }),
      configError('renewal.atSignon'),
    );
    assert.throws(
      () => parseCardProfile({ ...base, renewal: { atSignIn: true, windowDays: 0 } }),
      configError('renewal.windowDays'),
    );
  });
});
