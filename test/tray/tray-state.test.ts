/**
 * The tray's view model: which icon, tooltip, menu entries and notifications follow from the
 * daemon's status and events. Each case is a situation a user can be in (docs/tray.md).
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CardStatus, ControlEvent, DaemonStatus } from '../../daemon/control/control-protocol.js';
import {
  displayName,
  formatMs,
  iconState,
  INITIAL_TRAY_MODEL,
  MAX_CARD_ENTRIES,
  MAX_LINE_CHARS,
  MAX_TOOLTIP_CHARS,
  nextClockCheck,
  TRAY_MENU_LAYOUT,
  trayView,
  UNREACHABLE_NOTICE_MS,
  withBusy,
  withClock,
  withDaemonUnreachable,
  withDiagnostics,
  withEvent,
  withSigningIn,
  withStatus,
  type TrayModel,
} from '../../tray/tray-state.js';

const T0 = 1_900_000_000_000;
const SERVER = 'https://cards.example.org:8443/';

const card = (i: number, extra: Partial<CardStatus> = {}): CardStatus => ({
  cardId: `c${i}`,
  label: `Card ${i}`,
  slot: i,
  readerName: `cardlink Virtual Reader 00 0${i}`,
  state: 'inserted',
  ...extra,
});

function status(extra: Partial<DaemonStatus> = {}): DaemonStatus {
  return {
    state: 'connected',
    serverUrl: SERVER,
    user: 'alice',
    deviceId: 'd1',
    deviceStatus: 'approved',
    serverRoundTripMs: 1.26,
    cards: [card(0), card(1)],
    ...extra,
  };
}

const signedOut = (): DaemonStatus => ({ state: 'logged-out', serverUrl: SERVER, cards: [] });

function modelWith(s: DaemonStatus, base: TrayModel = INITIAL_TRAY_MODEL): TrayModel {
  return withStatus(base, s, T0).model;
}

const visibleTitles = (m: TrayModel) =>
  TRAY_MENU_LAYOUT.filter((k) => k !== '-')
    .map((k) => trayView(m).items[k as Exclude<(typeof TRAY_MENU_LAYOUT)[number], '-'>])
    .filter((i) => !i.hidden)
    .map((i) => i.title);

describe('tray view: icon and tooltip per state', () => {
  it('before the daemon answers, and when it is not running: error icon, and the reason', () => {
    assert.equal(iconState(INITIAL_TRAY_MODEL), 'error');
    const m = withDaemonUnreachable(INITIAL_TRAY_MODEL, {
      code: 'ERR_CONTROL_UNAVAILABLE',
      message:
        "the cardlink daemon is not running (no control socket at /run/x); start it with 'cardlink daemon'",
    });
    const v = trayView(m);
    assert.equal(v.icon, 'error');
    assert.equal(v.tooltip, 'cardlink: daemon not running');
    assert.equal(v.items.state.title, 'cardlink: daemon not running');
    assert.equal(
      v.items.account.title,
      "start it: 'cardlink daemon' or 'systemctl --user start cardlink-daemon'",
    );
    // Nothing that needs the daemon can be clicked.
    for (const key of ['sign', 'connect', 'disconnect', 'change-pin', 'unblock-pin', 'set-pin'] as const)
      assert.equal(v.items[key].enabled, false, key);
    for (const key of ['open-logs', 'save-diagnostics', 'about', 'quit'] as const)
      assert.equal(v.items[key].enabled, true, key);
  });

  it('a daemon that refuses the tray is named differently from one that is not there', () => {
    const m = withDaemonUnreachable(INITIAL_TRAY_MODEL, {
      code: 'ERR_CONTROL_AUTH',
      message: `what answers on /run/user/1000/cardlink/control.sock cannot prove it knows the secret ${'x'.repeat(80)}`,
    });
    assert.equal(trayView(m).items.state.title, 'cardlink: cannot talk to the daemon');
    assert.equal(trayView(m).items.account.title.length, MAX_LINE_CHARS);
    assert.match(trayView(m).items.account.title, /^what answers on .*…$/);
  });

  it('signed out: grey icon, "Sign in…" offered, no cards', () => {
    const v = trayView(modelWith(signedOut()));
    assert.equal(v.icon, 'signed-out');
    assert.equal(v.tooltip, 'cardlink: signed out');
    assert.deepEqual(v.items.sign, { title: 'Sign in…', enabled: true, hidden: false, action: 'sign-in' });
    assert.equal(v.items.connect.enabled, false);
    assert.equal(v.items.disconnect.enabled, false);
    assert.equal(v.items['change-pin'].enabled, false);
    assert.equal(v.items.account.title, 'not signed in · cards.example.org:8443');
    assert.equal(v.items['cards-more'].hidden, false);
    assert.equal(v.items['cards-more'].title, 'No cards: sign in to get yours');
    assert.ok(v.items['card-0'].hidden);
  });

  it('signed out after the token expired: the daemon’s last error is shown', () => {
    const v = trayView(
      modelWith({
        ...signedOut(),
        lastError: { code: 'ERR_AUTH_TOKEN_INVALID', message: 'the access token expired' },
      }),
    );
    assert.equal(v.icon, 'signed-out');
    assert.equal(v.items.problem.hidden, false);
    assert.equal(v.items.problem.title, 'the access token expired');
  });

  it('connecting and reconnecting have their own icons; Disconnect stops them', () => {
    const connecting = trayView(modelWith(status({ state: 'connecting', serverRoundTripMs: undefined })));
    assert.equal(connecting.icon, 'connecting');
    assert.equal(connecting.items.state.title, 'cardlink: connecting…');
    assert.equal(connecting.items.disconnect.enabled, true);
    assert.equal(connecting.items.connect.enabled, false);
    const reconnecting = trayView(modelWith(status({ state: 'reconnecting' })));
    assert.equal(reconnecting.icon, 'reconnecting');
    assert.equal(reconnecting.items.state.title, 'cardlink: connection lost, reconnecting…');
    assert.equal(reconnecting.items.disconnect.enabled, true);
  });

  it('connected: green icon; status line with user, server and round trip; one entry per card', () => {
    const v = trayView(modelWith(status()));
    assert.equal(v.icon, 'connected');
    assert.equal(v.items.state.title, 'cardlink: connected');
    assert.equal(v.items.account.title, 'alice · cards.example.org:8443 · 1.3 ms round trip');
    assert.equal(v.tooltip, 'cardlink: connected; signed in as alice; 2 cards in the reader');
    assert.equal(v.items['card-0'].title, 'Card 0: in the reader (slot 0)');
    assert.equal(v.items['card-1'].title, 'Card 1: in the reader (slot 1)');
    assert.ok(v.items['card-2'].hidden);
    assert.ok(v.items['cards-more'].hidden);
    assert.ok(v.items.problem.hidden);
    assert.deepEqual(v.items.sign, {
      title: 'Sign out (alice)',
      enabled: true,
      hidden: false,
      action: 'sign-out',
    });
    assert.equal(v.items.disconnect.enabled, true);
    assert.equal(v.items.connect.enabled, false, 'nothing to connect');
    assert.equal(v.items['change-pin'].enabled, true);
    assert.equal(v.items['unblock-pin'].enabled, true);
    // Set a new PIN… is offered with a card in the reader: whether the profile allows it is the server's answer.
    assert.deepEqual(v.items['set-pin'], {
      title: 'Set a new PIN…',
      enabled: true,
      hidden: false,
      action: 'set-pin',
    });
    assert.equal(
      TRAY_MENU_LAYOUT.indexOf('set-pin'),
      TRAY_MENU_LAYOUT.indexOf('unblock-pin') + 1,
      'next to Change PIN… and Unblock PIN…',
    );
    // Get certificates names no card: with two in the reader it is `cardlink enroll --card`'s job.
    assert.equal(v.items.enroll.enabled, false);
    assert.deepEqual(trayView(modelWith(status({ cards: [card(0)] }))).items.enroll, {
      title: 'Get certificates',
      enabled: true,
      hidden: false,
      action: 'enroll',
    });
    assert.ok(v.items['diagnostics-saved'].hidden);
  });

  it('connected without cards says so', () => {
    const v = trayView(modelWith(status({ cards: [] })));
    assert.equal(v.items['cards-more'].title, 'No cards for this account');
    assert.equal(v.items['change-pin'].enabled, false);
    assert.equal(v.items['set-pin'].enabled, false);
    assert.equal(v.tooltip, 'cardlink: connected; signed in as alice; 0 cards in the reader');
  });

  it('a card taken over: its own icon, the other device named, Connect takes it back', () => {
    const v = trayView(
      modelWith(status({ cards: [card(0, { state: 'taken-over', takenOverBy: 'alice-desktop' }), card(1)] })),
    );
    assert.equal(v.icon, 'taken-over');
    assert.equal(v.items.state.title, 'cardlink: connected, 1 card taken over');
    assert.equal(v.items['card-0'].title, 'Card 0: taken over by alice-desktop');
    assert.deepEqual(v.items.connect, {
      title: 'Connect (take the cards back)',
      enabled: true,
      hidden: false,
      action: 'connect',
    });
  });

  it('a device waiting for approval, or a card the daemon could not insert, shows the error icon', () => {
    const pending = trayView(
      modelWith(status({ deviceStatus: 'pending', cards: [card(0, { state: 'removed' })] })),
    );
    assert.equal(pending.icon, 'error');
    assert.equal(pending.items.state.title, 'cardlink: waiting for approval');
    assert.match(pending.items.problem.title, /waits for an administrator/);
    assert.equal(pending.items['card-0'].title, 'Card 0: not in the reader');
    const broken = trayView(
      modelWith(
        status({ lastError: { code: 'ERR_SNAPSHOT_INVALID', message: 'not signed by the card server' } }),
      ),
    );
    assert.equal(broken.icon, 'error');
    assert.equal(broken.items.problem.title, 'not signed by the card server');
  });

  it('offline after Disconnect: quiet icon, Connect offered, Disconnect not', () => {
    const v = trayView(
      modelWith(
        status({
          state: 'offline',
          serverRoundTripMs: undefined,
          cards: [card(0, { state: 'removed', slot: undefined })],
        }),
      ),
    );
    assert.equal(v.icon, 'signed-out');
    assert.equal(v.items.state.title, 'cardlink: disconnected');
    assert.equal(v.items.connect.enabled, true);
    assert.equal(v.items.connect.title, 'Connect');
    assert.equal(v.items.disconnect.enabled, false);
    assert.equal(v.items.account.title, 'alice · cards.example.org:8443', 'no round trip while offline');
  });

  it('offline because the server stayed away: reconnecting icon, and Disconnect stops the retries', () => {
    let m = modelWith(status());
    m = withEvent(
      m,
      {
        event: 'disconnected',
        data: {
          willReconnect: true,
          error: { code: 'ERR_SESSION_LOST', message: 'connection closed (1006)' },
        },
      },
      T0,
    ).model;
    m = withStatus(m, status({ state: 'offline', cards: [] }), T0 + 130_000).model;
    const v = trayView(m);
    assert.equal(v.icon, 'reconnecting');
    assert.equal(v.items.state.title, 'cardlink: card server unreachable');
    assert.equal(v.items.problem.title, 'connection closed (1006)');
    assert.equal(v.items.disconnect.enabled, true);
    assert.equal(v.items.connect.enabled, true);
  });

  it('more cards than entries: the first ones and "… and N more"', () => {
    const cards = Array.from({ length: MAX_CARD_ENTRIES + 3 }, (_, i) => card(i));
    const v = trayView(modelWith(status({ cards })));
    assert.equal(v.items[`card-${MAX_CARD_ENTRIES - 1}` as 'card-0'].hidden, false);
    assert.equal(v.items['cards-more'].title, '… and 3 more cards (see "cardlink cards")');
    const one = trayView(modelWith(status({ cards: cards.slice(0, MAX_CARD_ENTRIES + 1) })));
    assert.equal(one.items['cards-more'].title, '… and 1 more card (see "cardlink cards")');
  });

  it('names from the server cannot break the menu: control characters go, long names are cut', () => {
    const v = trayView(
      modelWith(
        status({
          user: 'alice\nroot',
          cards: [card(0, { label: `Work\r\n${'x'.repeat(100)}` })],
        }),
      ),
    );
    assert.ok(!/[\r\n]/.test(v.items['card-0'].title));
    assert.ok(!/[\r\n]/.test(v.items.account.title));
    assert.match(v.items.account.title, /^alice root ·/);
    assert.equal(displayName('x'.repeat(100)).length, 40);
    assert.ok(displayName('x'.repeat(100)).endsWith('…'));
    assert.equal(displayName('\u0007\u0000'), '(unnamed)');
    assert.ok(v.tooltip.length <= MAX_TOOLTIP_CHARS);
  });

  it('the tooltip never exceeds what Windows shows', () => {
    const v = trayView(modelWith(status({ user: 'u'.repeat(300) })));
    assert.ok(v.tooltip.length <= MAX_TOOLTIP_CHARS, `${v.tooltip.length}`);
  });

  it('round trips read well', () => {
    assert.equal(formatMs(0.44), '0.4 ms');
    assert.equal(formatMs(9.94), '9.9 ms');
    assert.equal(formatMs(12.6), '13 ms');
  });

  it('every layout key has an entry, and the layout names each key once', () => {
    const v = trayView(modelWith(status()));
    const keys = TRAY_MENU_LAYOUT.filter((k) => k !== '-');
    assert.equal(new Set(keys).size, keys.length);
    assert.deepEqual(new Set(Object.keys(v.items)), new Set(keys));
  });
});

describe("tray view: the tray's own doings", () => {
  it('a sign-in waiting for the browser can be cancelled', () => {
    const v = trayView(withSigningIn(modelWith(signedOut()), true));
    assert.deepEqual(v.items.sign, {
      title: 'Cancel sign-in',
      enabled: true,
      hidden: false,
      action: 'cancel-sign-in',
    });
  });

  it('an action in flight disables its entry until it ends', () => {
    let m = withBusy(modelWith(status()), 'disconnect', true);
    assert.deepEqual(trayView(m).items.disconnect, {
      title: 'Disconnecting…',
      enabled: false,
      hidden: false,
      action: 'disconnect',
    });
    m = withBusy(withBusy(m, 'save-diagnostics', true), 'disconnect', false);
    assert.equal(trayView(m).items.disconnect.enabled, true);
    assert.equal(trayView(m).items['save-diagnostics'].title, 'Saving diagnostics…');
    assert.equal(trayView(m).items['save-diagnostics'].enabled, false);
  });

  it('the saved diagnostics file is shown in the menu', () => {
    const m = withDiagnostics(modelWith(status()), '/home/alice/.local/state/cardlink/cardlink-diag-1.json');
    const entry = trayView(m).items['diagnostics-saved'];
    assert.equal(entry.hidden, false);
    assert.equal(entry.title, 'Saved: /home/alice/.local/state/cardlink/cardlink-diag-1.json');
    assert.ok(visibleTitles(m).includes(entry.title));
  });
});

describe('tray notifications', () => {
  it('a takeover names the card and the other device', () => {
    const { notices } = withEvent(
      modelWith(status()),
      { event: 'taken-over', data: { cardId: 'c0', label: 'Work', byDeviceName: 'alice-desktop' } },
      T0,
    );
    assert.equal(notices.length, 1);
    assert.equal(notices[0]!.kind, 'taken-over');
    assert.equal(notices[0]!.summary, 'Card taken over');
    assert.equal(
      notices[0]!.body,
      "“Work” is now in use on alice-desktop and has left this computer's reader. " +
        'Choose Connect in the cardlink menu to take it back.',
    );
  });

  it('a takeover of several cards (one event each) ends in one notice naming them all', () => {
    let step = withEvent(
      modelWith(status()),
      { event: 'taken-over', data: { cardId: 'c0', label: 'Work', byDeviceName: 'alice-desktop' } },
      T0,
    );
    step = withEvent(
      step.model,
      { event: 'taken-over', data: { cardId: 'c1', label: 'Home', byDeviceName: 'alice-desktop' } },
      T0,
    );
    assert.equal(step.notices[0]!.summary, '2 cards taken over');
    assert.match(step.notices[0]!.body, /^“Work” and “Home” are now in use on alice-desktop and have left/);
    assert.match(step.notices[0]!.body, /take them back\.$/);
    // Back in the reader, then taken again: news again, on its own.
    let m = withEvent(
      step.model,
      { event: 'card-inserted', data: { cardId: 'c0', label: 'Work' } },
      T0,
    ).model;
    m = withEvent(m, { event: 'card-inserted', data: { cardId: 'c1', label: 'Home' } }, T0).model;
    const again = withEvent(
      m,
      { event: 'taken-over', data: { cardId: 'c1', label: 'Home', byDeviceName: 'alice-phone' } },
      T0,
    );
    assert.equal(again.notices[0]!.summary, 'Card taken over');
    assert.match(again.notices[0]!.body, /^“Home” is now in use on alice-phone/);
  });

  it('a blocked PIN or PUK: an urgent notice naming the card, and the card entry says so', () => {
    const pin = withEvent(
      modelWith(status()),
      { event: 'card-blocked', data: { cardId: 'c0', label: 'Work', reference: 'pin' } },
      T0,
    );
    assert.equal(pin.notices[0]!.kind, 'card-blocked');
    assert.equal(pin.notices[0]!.summary, 'Card PIN blocked');
    assert.equal(pin.notices[0]!.urgency, 'critical');
    assert.match(
      pin.notices[0]!.body,
      /^The PIN of “Work” was entered wrong too often and is blocked\. Unblock it with your PUK/,
    );
    const puk = withEvent(
      modelWith(status()),
      { event: 'card-blocked', data: { cardId: 'c0', label: 'Work', reference: 'puk' } },
      T0,
    );
    assert.equal(puk.notices[0]!.summary, 'Card PUK blocked');
    assert.match(puk.notices[0]!.body, /only your administrator can give the card a new PIN/);
    const v = trayView(
      modelWith(
        status({
          cards: [
            card(0, { pinBlocked: true }),
            card(1, { pinBlocked: true, pukBlocked: true }),
            card(2, { state: 'removed', slot: undefined, pukBlocked: true }),
          ],
        }),
      ),
    );
    assert.equal(v.items['card-0'].title, 'Card 0: in the reader (slot 0), PIN blocked');
    assert.equal(v.items['card-1'].title, 'Card 1: in the reader (slot 1), PIN blocked, PUK blocked');
    assert.equal(v.items['card-2'].title, 'Card 2: not in the reader, PUK blocked');
  });

  it('an expiring session says roughly when', () => {
    const soon = withEvent(
      modelWith(status()),
      { event: 'token-expiring', data: { expiresAt: (T0 + 50_000) / 1000 } },
      T0,
    );
    assert.equal(soon.notices[0]!.kind, 'session-expiring');
    assert.match(soon.notices[0]!.body, /within a minute/);
    const later = withEvent(
      modelWith(status()),
      { event: 'token-expiring', data: { expiresAt: (T0 + 300_000) / 1000 } },
      T0,
    );
    assert.match(later.notices[0]!.body, /in about 5 minutes/);
  });

  it('a refused or expired token tells the user they are signed out; other errors only show in the menu', () => {
    const ended = withEvent(
      modelWith(status()),
      { event: 'error', data: { code: 'ERR_AUTH_TOKEN_INVALID', message: 'the access token expired.' } },
      T0,
    );
    assert.equal(ended.notices[0]!.kind, 'session-ended');
    assert.match(ended.notices[0]!.body, /^The access token expired\. Your cards have left the reader/);
    const plain = withEvent(
      modelWith(status()),
      { event: 'error', data: { code: 'ERR_AUTH_TOKEN_INVALID', message: 'the access token expired' } },
      T0,
    );
    assert.match(plain.notices[0]!.body, /^The access token expired\. Your/, 'made a sentence');
    const other = withEvent(
      modelWith(status()),
      { event: 'error', data: { code: 'ERR_SNAPSHOT_INVALID', message: 'x' } },
      T0,
    );
    assert.deepEqual(other.notices, []);
  });

  it('a short drop says nothing; one that lasts says "unreachable" once, then "back online"', () => {
    let m = modelWith(status());
    let step = withEvent(
      m,
      {
        event: 'disconnected',
        data: {
          willReconnect: true,
          error: { code: 'ERR_SESSION_LOST', message: 'connection closed (1006)' },
        },
      },
      T0,
    );
    assert.deepEqual(step.notices, []);
    m = step.model;
    assert.equal(nextClockCheck(m), T0 + UNREACHABLE_NOTICE_MS);
    assert.deepEqual(withClock(m, T0 + UNREACHABLE_NOTICE_MS - 1).notices, []);
    // A second drop while down keeps the first time.
    m = withEvent(m, { event: 'disconnected', data: { willReconnect: true } }, T0 + 5000).model;
    step = withClock(m, T0 + UNREACHABLE_NOTICE_MS);
    assert.equal(step.notices.length, 1);
    assert.equal(step.notices[0]!.kind, 'server-unreachable');
    assert.match(
      step.notices[0]!.body,
      /cannot reach cards\.example\.org:8443 \(connection closed \(1006\)\)/,
    );
    m = step.model;
    assert.equal(nextClockCheck(m), undefined);
    assert.deepEqual(withClock(m, T0 + 60_000).notices, [], 'said once');
    step = withEvent(m, { event: 'connected', data: { serverUrl: SERVER, user: 'alice' } }, T0 + 70_000);
    assert.equal(step.notices.length, 1);
    assert.equal(step.notices[0]!.kind, 'back-online');
    assert.equal(step.notices[0]!.body, 'cardlink is connected to cards.example.org:8443 again.');
    // The status that follows does not say it twice.
    assert.deepEqual(withStatus(step.model, status(), T0 + 70_001).notices, []);
  });

  it('a drop that heals before the notice is silent both ways', () => {
    let m = withEvent(
      modelWith(status()),
      { event: 'disconnected', data: { willReconnect: true } },
      T0,
    ).model;
    const step = withEvent(m, { event: 'connected', data: { serverUrl: SERVER } }, T0 + 2000);
    assert.deepEqual(step.notices, []);
    m = step.model;
    assert.equal(nextClockCheck(m), undefined);
    assert.deepEqual(withClock(m, T0 + 60_000).notices, []);
  });

  it('"back online" also follows when only a status shows the session is up again', () => {
    let m = withEvent(
      modelWith(status()),
      { event: 'disconnected', data: { willReconnect: true } },
      T0,
    ).model;
    m = withClock(m, T0 + UNREACHABLE_NOTICE_MS).model;
    const step = withStatus(m, status(), T0 + 40_000);
    assert.equal(step.notices[0]?.kind, 'back-online');
  });

  it('a drop the daemon does not retry (token refused) is no outage', () => {
    const m = withEvent(
      modelWith(status()),
      { event: 'disconnected', data: { willReconnect: false } },
      T0,
    ).model;
    assert.equal(nextClockCheck(m), undefined);
    assert.deepEqual(withClock(m, T0 + 60_000).notices, []);
  });

  it('a daemon found reconnecting counts as down from then on', () => {
    const m = modelWith(status({ state: 'reconnecting' }));
    assert.equal(nextClockCheck(m), T0 + UNREACHABLE_NOTICE_MS);
    assert.equal(withClock(m, T0 + UNREACHABLE_NOTICE_MS).notices[0]?.kind, 'server-unreachable');
  });

  it('signing out or losing the daemon ends the outage without "back online"', () => {
    let m = withEvent(
      modelWith(status()),
      { event: 'disconnected', data: { willReconnect: true } },
      T0,
    ).model;
    m = withClock(m, T0 + UNREACHABLE_NOTICE_MS).model;
    const out = withStatus(m, signedOut(), T0 + 20_000);
    assert.deepEqual(out.notices, []);
    assert.equal(out.model.unreachableNotified, false);
    const lost = withDaemonUnreachable(m, { code: 'ERR_CONTROL_UNAVAILABLE', message: 'gone' });
    assert.equal(lost.serverDownSince, undefined);
    assert.equal(lost.status, undefined);
  });

  it('events that only change the status, and events the daemon may add later, change nothing here', () => {
    const m = modelWith(status());
    const removed = withEvent(m, { event: 'card-removed', data: { cardId: 'c0', label: 'Card 0' } }, T0);
    assert.deepEqual(removed, { model: m, notices: [] });
    const future = withEvent(m, { event: 'card-renamed', data: {} } as unknown as ControlEvent, T0);
    assert.deepEqual(future, { model: m, notices: [] });
  });
});
