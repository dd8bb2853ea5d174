/**
 * The sign-in entries of the tray's menu (tray/sign-in-menu.ts placed by tray-state.ts): one entry
 * per configured identity provider when there are several, the code sign-in, and the code while
 * it waits.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { DaemonStatus } from '../../daemon/control/control-protocol.js';
import { issuerIndexOf, OTHER_ISSUER_KEYS } from '../../tray/sign-in-menu.js';
import {
  INITIAL_TRAY_MODEL,
  TRAY_MENU_LAYOUT,
  trayView,
  withBusy,
  withDeviceCode,
  withSignInChoices,
  withSigningIn,
  withStatus,
  type TrayModel,
} from '../../tray/tray-state.js';

const SERVER = 'https://cards.example.org:8443/';
const signedOut: DaemonStatus = { state: 'logged-out', serverUrl: SERVER, cards: [] };
const connected: DaemonStatus = { state: 'connected', serverUrl: SERVER, user: 'alice', cards: [] };

const model = (status: DaemonStatus, names: string[]): TrayModel =>
  withSignInChoices(withStatus(INITIAL_TRAY_MODEL, status, 0).model, names);

const visible = (m: TrayModel) => {
  const items = trayView(m).items;
  return TRAY_MENU_LAYOUT.filter((k) => k !== '-')
    .map((k) => items[k as Exclude<(typeof TRAY_MENU_LAYOUT)[number], '-'>])
    .filter((i) => !i.hidden);
};

describe('the sign-in entries', () => {
  it('one identity provider: "Sign in…" and "Sign in with a code…"', () => {
    const v = trayView(model(signedOut, ['login.example']));
    assert.equal(v.items.sign.title, 'Sign in…');
    assert.equal(v.items.sign.action, 'sign-in');
    assert.deepEqual(v.items['sign-in-code'], {
      title: 'Sign in with a code…',
      enabled: true,
      hidden: false,
      action: 'sign-in-code',
    });
    for (const key of OTHER_ISSUER_KEYS) assert.equal(v.items[key].hidden, true);
    assert.equal(v.items['device-code'].hidden, true);
  });

  it('several: one entry each, the admin’s default first, each signing in at its own', () => {
    const m = model(signedOut, ['Example staff', 'partners.example', 'Guests']);
    const titles = visible(m).map((i) => i.title);
    const first = titles.indexOf('Sign in with Example staff…');
    assert.ok(first >= 0, titles.join('\n'));
    assert.deepEqual(titles.slice(first, first + 4), [
      'Sign in with Example staff…',
      'Sign in with partners.example…',
      'Sign in with Guests…',
      'Sign in with a code…',
    ]);
    const v = trayView(m);
    assert.equal(v.items['sign-in-2'].action, 'sign-in-2');
    assert.equal(issuerIndexOf('sign-in'), 0);
    assert.equal(issuerIndexOf(v.items['sign-in-3'].action as 'sign-in-3'), 2);
    assert.equal(issuerIndexOf('sign-in-code'), 0);
    // One running: disabled meanwhile.
    assert.equal(trayView(withBusy(m, 'sign-in-2', true)).items['sign-in-2'].enabled, false);
  });

  it('hidden while signed in, while a sign-in runs, and without any identity provider', () => {
    const names = ['Example staff', 'partners.example'];
    for (const m of [model(connected, names), withSigningIn(model(signedOut, names), true)]) {
      const v = trayView(m);
      assert.equal(v.items['sign-in-2'].hidden, true);
      assert.equal(v.items['sign-in-code'].hidden, true);
    }
    assert.equal(trayView(model(signedOut, [])).items['sign-in-code'].hidden, true);
    assert.equal(trayView(model(signedOut, [])).items.sign.title, 'Sign in…');
  });

  it('a code sign-in under way: the code and the address in the menu, Cancel sign-in offered; gone after', () => {
    const waiting = withDeviceCode(withSigningIn(model(signedOut, ['login.example']), true), {
      userCode: 'WDJB-MJHT',
      verificationUri: 'https://login.example/device',
    });
    const v = trayView(waiting);
    assert.deepEqual(v.items['device-code'], {
      title: 'Code WDJB-MJHT at https://login.example/device',
      enabled: false,
      hidden: false,
    });
    assert.equal(v.items.sign.action, 'cancel-sign-in');
    const done = withDeviceCode(withSigningIn(waiting, false), undefined);
    assert.equal(done.deviceCode, undefined);
    assert.equal(trayView(done).items['device-code'].hidden, true);
  });
});
