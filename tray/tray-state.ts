/**
 * What the tray shows and says, computed from what it knows: the daemon's last status, the events
 * since, and the tray's own doings (a sign-in running, an action in flight, the last diagnostics
 * file). Pure: no I/O and no clock of its own (callers pass `now`), so every state is a unit test
 * (test/tray/tray-state.test.ts) and the wiring in tray-app.ts only moves data.
 *
 * The status is the truth; events are hints to fetch it again, except for what only an event
 * tells: a takeover's other device, an expiring token, and a connection that dropped on its own
 * (the daemon's `disconnected` with `willReconnect`, which a user's Disconnect never sends).
 *
 * The menu has a fixed layout (TRAY_MENU_LAYOUT): systray2 builds its menu once and afterwards
 * only updates, hides and shows the entries it has, so the view fills fixed slots, among them
 * MAX_CARD_ENTRIES card entries.
 */
import type {
  CardStatus,
  ControlErrorInfo,
  ControlEvent,
  DaemonStatus,
} from '../daemon/control/control-protocol.js';
import {
  OTHER_ISSUER_KEYS,
  signInEntries,
  signInTitle,
  type DeviceCodePrompt,
  type OtherIssuerKey,
  type SignInAction,
} from './sign-in-menu.js';

/** The icon states, one picture each (icons.ts). */
export const TRAY_ICON_STATES = [
  'signed-out',
  'connecting',
  'connected',
  'reconnecting',
  'taken-over',
  'error',
] as const;
export type TrayIconState = (typeof TRAY_ICON_STATES)[number];

/** The menu's card entries; more cards show as one "… and N more" entry. */
const CARD_KEYS = ['card-0', 'card-1', 'card-2', 'card-3', 'card-4', 'card-5', 'card-6', 'card-7'] as const;
type CardKey = (typeof CARD_KEYS)[number];

/** Card entries in the menu. */
export const MAX_CARD_ENTRIES = CARD_KEYS.length;

/**
 * How long the session with the card server may stay down (reconnecting) before the user is told
 * it is unreachable: the daemon rides out short drops on its own, and a notification for each
 * would teach people to ignore them.
 */
export const UNREACHABLE_NOTICE_MS = 15_000;

/** Longest card label or user name shown; longer ones end in an ellipsis. */
export const MAX_NAME_CHARS = 40;

/** Longest informational line in the menu (an error message); a wider menu is hard to read. */
export const MAX_LINE_CHARS = 64;

/** Longest tooltip: Windows cuts a tray tooltip at 127 characters. */
export const MAX_TOOLTIP_CHARS = 127;

/** What a click on an entry does (tray-app.ts carries it out). */
export type TrayAction =
  | SignInAction
  | 'cancel-sign-in'
  | 'sign-out'
  | 'connect'
  | 'disconnect'
  | 'change-pin'
  | 'unblock-pin'
  | 'set-pin'
  | 'enroll'
  | 'open-logs'
  | 'save-diagnostics'
  | 'about'
  | 'quit';

export type TrayItemKey =
  | 'state'
  | 'account'
  | 'problem'
  | CardKey
  | 'cards-more'
  | 'sign'
  | OtherIssuerKey
  | 'sign-in-code'
  | 'device-code'
  | 'connect'
  | 'disconnect'
  | 'change-pin'
  | 'unblock-pin'
  | 'set-pin'
  | 'enroll'
  | 'open-logs'
  | 'save-diagnostics'
  | 'diagnostics-saved'
  | 'about'
  | 'quit';

/** The menu from top to bottom; `-` is a separator. */
export const TRAY_MENU_LAYOUT: readonly (TrayItemKey | '-')[] = [
  'state',
  'account',
  'problem',
  '-',
  ...CARD_KEYS,
  'cards-more',
  '-',
  'sign',
  ...OTHER_ISSUER_KEYS,
  'sign-in-code',
  'device-code',
  'connect',
  'disconnect',
  '-',
  'change-pin',
  'unblock-pin',
  'set-pin',
  'enroll',
  '-',
  'open-logs',
  'save-diagnostics',
  'diagnostics-saved',
  'about',
  'quit',
];

export interface TrayItemView {
  readonly title: string;
  readonly enabled: boolean;
  readonly hidden: boolean;
  /** What a click does; entries without one only inform. */
  readonly action?: TrayAction;
}

export interface TrayView {
  readonly icon: TrayIconState;
  /** The state in words, for the tooltip (and the tray's log line). */
  readonly tooltip: string;
  readonly items: Readonly<Record<TrayItemKey, TrayItemView>>;
}

/** A desktop notification to show. */
export interface TrayNotice {
  readonly kind:
    | 'taken-over'
    | 'card-blocked'
    | 'session-expiring'
    | 'session-ended'
    | 'server-unreachable'
    | 'back-online'
    /** An answer to a menu entry (About, Save diagnostics, Sign in…): each replaces the last. */
    | 'info';
  /** Plain text, one line. */
  readonly summary: string;
  /** Plain text (notifications.ts escapes it for servers that read markup). */
  readonly body: string;
  /**
   * The body for the tray's output line while desktop notifications work, when `body` carries
   * something only the user should see (the PIN page's one-time link): the output goes to the
   * journal or ~/.xsession-errors. Without notifications the output line is the only way the user
   * gets the body, so it is printed whole then.
   */
  readonly outputBody?: string;
  readonly urgency: 'low' | 'normal' | 'critical';
}

export interface TrayModel {
  /** The daemon's last status; absent while the tray cannot reach the daemon. */
  readonly status?: DaemonStatus;
  /** Why the tray cannot reach the daemon (set when `status` is absent after a try). */
  readonly daemonError?: ControlErrorInfo;
  /** Since when (ms) the session has been down without anyone asking for it, while the daemon retries. */
  readonly serverDownSince?: number;
  /** Why it went down (the daemon's `disconnected` error). */
  readonly serverDownReason?: ControlErrorInfo;
  /** The user was told the server is unreachable: "back online" follows when it is. */
  readonly unreachableNotified: boolean;
  /** A sign-in started from the tray is waiting for the browser (or the code to be entered). */
  readonly signingIn: boolean;
  /** Names of the configured identity providers, the default first (sign-in-menu.ts). */
  readonly signInChoices?: readonly string[];
  /** The code of a device sign-in under way, and where to enter it. */
  readonly deviceCode?: DeviceCodePrompt;
  /** Actions started and not finished: their entries are disabled meanwhile. */
  readonly busy: readonly TrayAction[];
  /** The last diagnostics file the tray wrote. */
  readonly lastDiagnostics?: string;
  /** Cards other devices took since they were last in this reader (for the takeover notice). */
  readonly takenOver: readonly { readonly cardId: string; readonly label: string; readonly by: string }[];
}

export const INITIAL_TRAY_MODEL: TrayModel = Object.freeze({
  unreachableNotified: false,
  signingIn: false,
  busy: [],
  takenOver: [],
});

/** A new model and the notifications the change calls for. */
export interface TrayStep {
  readonly model: TrayModel;
  readonly notices: readonly TrayNotice[];
}

// ---- Changes ----------------------------------------------------------------------------------

/**
 * The daemon answered `status`, at `now` (ms). `reconnecting` counts as down on its own even when
 * the tray saw no `disconnected` (it started, or came back to the daemon, meanwhile).
 */
export function withStatus(model: TrayModel, status: DaemonStatus, now: number): TrayStep {
  const { daemonError: _gone, ...rest } = model;
  const next: TrayModel = { ...rest, status };
  if (status.state === 'connected') return backUp(next, status.serverUrl);
  if (status.state === 'logged-out') return { model: withoutDown(next), notices: [] };
  if (status.state === 'reconnecting' && next.serverDownSince === undefined)
    return { model: { ...next, serverDownSince: now }, notices: [] };
  return { model: next, notices: [] };
}

/** The tray lost (or never had) its control connection. */
export function withDaemonUnreachable(model: TrayModel, error: ControlErrorInfo): TrayModel {
  const { status: _status, ...rest } = withoutDown(model);
  return { ...rest, daemonError: error, unreachableNotified: false };
}

/** An event the daemon pushed, at `now` (ms). */
export function withEvent(model: TrayModel, event: ControlEvent, now: number): TrayStep {
  switch (event.event) {
    case 'connected':
      return backUp(model, event.data.serverUrl);
    case 'disconnected':
      if (!event.data.willReconnect) return { model: withoutDown(model), notices: [] };
      return {
        model: {
          ...model,
          serverDownSince: model.serverDownSince ?? now,
          ...(event.data.error ? { serverDownReason: event.data.error } : {}),
        },
        notices: [],
      };
    case 'taken-over': {
      // A takeover moves all of a user's cards, one event each: each notice names every card
      // that device took (and replaces the one before, notifications.ts), so one bubble tells it.
      const { cardId, label, byDeviceName } = event.data;
      const takenOver = [
        ...model.takenOver.filter((t) => t.cardId !== cardId),
        { cardId, label, by: byDeviceName },
      ];
      const labels = takenOver.filter((t) => t.by === byDeviceName).map((t) => `“${displayName(t.label)}”`);
      const one = labels.length === 1;
      return {
        model: { ...model, takenOver },
        notices: [
          {
            kind: 'taken-over',
            summary: one ? 'Card taken over' : `${labels.length} cards taken over`,
            body:
              `${listed(labels)} ${one ? 'is' : 'are'} now in use on ${displayName(byDeviceName)} ` +
              `and ${one ? 'has' : 'have'} left this computer's reader. ` +
              `Choose Connect in the cardlink menu to take ${one ? 'it' : 'them'} back.`,
            urgency: 'normal',
          },
        ],
      };
    }
    case 'card-blocked': {
      const label = `“${displayName(event.data.label)}”`;
      const pin = event.data.reference === 'pin';
      return {
        model,
        notices: [
          {
            kind: 'card-blocked',
            summary: pin ? 'Card PIN blocked' : 'Card PUK blocked',
            body: pin
              ? `The PIN of ${label} was entered wrong too often and is blocked. ` +
                'Unblock it with your PUK (Unblock PIN… in the cardlink menu) or ask your administrator.'
              : `The PUK of ${label} is blocked too: only your administrator can give the card a new PIN now.`,
            urgency: 'critical',
          },
        ],
      };
    }
    case 'card-inserted':
      // Back in this reader: a later takeover of it is news again.
      return {
        model: { ...model, takenOver: model.takenOver.filter((t) => t.cardId !== event.data.cardId) },
        notices: [],
      };
    case 'token-expiring': {
      const minutes = Math.max(0, Math.round((event.data.expiresAt * 1000 - now) / 60_000));
      const when = minutes <= 1 ? 'within a minute' : `in about ${minutes} minutes`;
      return {
        model,
        notices: [
          {
            kind: 'session-expiring',
            summary: 'cardlink session expiring',
            body: `Your sign-in ends ${when} and cannot be renewed on its own. Choose Sign in… in the cardlink menu to keep your cards.`,
            urgency: 'normal',
          },
        ],
      };
    }
    case 'error':
      if (event.data.code !== 'ERR_AUTH_TOKEN_INVALID') return { model, notices: [] };
      return {
        model,
        notices: [
          {
            kind: 'session-ended',
            summary: 'Signed out of cardlink',
            body: `${sentence(event.data.message)} Your cards have left the reader; choose Sign in… in the cardlink menu.`,
            urgency: 'normal',
          },
        ],
      };
    default:
      // card-removed and events of newer daemons: the status fetched next tells.
      return { model, notices: [] };
  }
}

/** Time passed: tells of an unreachable server once it has been down UNREACHABLE_NOTICE_MS. */
export function withClock(model: TrayModel, now: number): TrayStep {
  if (model.serverDownSince === undefined || model.unreachableNotified) return { model, notices: [] };
  if (now - model.serverDownSince < UNREACHABLE_NOTICE_MS) return { model, notices: [] };
  const host = model.status ? hostOf(model.status.serverUrl) : 'the card server';
  const reason = model.serverDownReason ? ` (${model.serverDownReason.message})` : '';
  return {
    model: { ...model, unreachableNotified: true },
    notices: [
      {
        kind: 'server-unreachable',
        summary: 'Card server unreachable',
        body:
          `cardlink cannot reach ${host}${reason} and keeps trying. ` +
          'Your cards leave the reader if it stays unreachable.',
        urgency: 'normal',
      },
    ],
  };
}

/** When the next withClock call can change something (ms), if any. */
export function nextClockCheck(model: TrayModel): number | undefined {
  if (model.serverDownSince === undefined || model.unreachableNotified) return undefined;
  return model.serverDownSince + UNREACHABLE_NOTICE_MS;
}

export function withBusy(model: TrayModel, action: TrayAction, busy: boolean): TrayModel {
  const others = model.busy.filter((a) => a !== action);
  return { ...model, busy: busy ? [...others, action] : others };
}

export function withSigningIn(model: TrayModel, signingIn: boolean): TrayModel {
  return { ...model, signingIn };
}

export function withSignInChoices(model: TrayModel, names: readonly string[]): TrayModel {
  return { ...model, signInChoices: names };
}

export function withDeviceCode(model: TrayModel, code: DeviceCodePrompt | undefined): TrayModel {
  const { deviceCode: _old, ...rest } = model;
  return code ? { ...rest, deviceCode: code } : rest;
}

export function withDiagnostics(model: TrayModel, file: string): TrayModel {
  return { ...model, lastDiagnostics: file };
}

function withoutDown(model: TrayModel): TrayModel {
  const { serverDownSince: _since, serverDownReason: _reason, ...rest } = model;
  return { ...rest, unreachableNotified: false };
}

function backUp(model: TrayModel, serverUrl: string): TrayStep {
  const told = model.unreachableNotified;
  return {
    model: withoutDown(model),
    notices: told
      ? [
          {
            kind: 'back-online',
            summary: 'Card server back online',
            body: `cardlink is connected to ${hostOf(serverUrl)} again.`,
            urgency: 'low',
          },
        ]
      : [],
  };
}

// ---- View -------------------------------------------------------------------------------------

/** The icon, tooltip and menu for `model`. */
export function trayView(model: TrayModel): TrayView {
  const status = model.status;
  const icon = iconState(model);
  const stateLine = stateText(model);
  const items = {} as Record<TrayItemKey, TrayItemView>;
  const info = (title: string, hidden = false): TrayItemView => ({ title, enabled: false, hidden });
  const busy = (a: TrayAction) => model.busy.includes(a);

  items.state = info(stateLine);
  items.account = info(accountLine(model));
  const problem = problemText(model);
  items.problem = info(problem ?? '', problem === undefined);

  const cards = status?.cards ?? [];
  CARD_KEYS.forEach((key, i) => {
    const card = cards[i];
    items[key] = info(card ? cardLine(card) : '', card === undefined);
  });
  const more = cards.length - MAX_CARD_ENTRIES;
  items['cards-more'] =
    more > 0
      ? info(`… and ${more} more card${more === 1 ? '' : 's'} (see "cardlink cards")`)
      : info(status && cards.length === 0 ? noCardsText(status) : '', !(status && cards.length === 0));

  const signedIn = status?.user !== undefined;
  items.sign = model.signingIn
    ? { title: 'Cancel sign-in', enabled: true, hidden: false, action: 'cancel-sign-in' }
    : !status
      ? { title: 'Sign in…', enabled: false, hidden: false }
      : status.state === 'logged-out'
        ? {
            title: signInTitle(model.signInChoices ?? []),
            enabled: !busy('sign-in'),
            hidden: false,
            action: 'sign-in',
          }
        : {
            title: signedIn ? `Sign out (${displayName(status.user!)})` : 'Sign out',
            enabled: !busy('sign-out'),
            hidden: false,
            action: 'sign-out',
          };

  Object.assign(
    items,
    signInEntries({
      status,
      signingIn: model.signingIn,
      choices: model.signInChoices ?? [],
      deviceCode: model.deviceCode,
      busy,
    }),
  );

  const takenOver = cards.some((c) => c.state === 'taken-over');
  const canConnect =
    signedIn && (status!.state === 'offline' || (status!.state === 'connected' && takenOver));
  items.connect = {
    title: busy('connect')
      ? 'Connecting…'
      : takenOver && status?.state === 'connected'
        ? 'Connect (take the cards back)'
        : 'Connect',
    enabled: canConnect && !busy('connect'),
    hidden: false,
    action: 'connect',
  };
  const live =
    status !== undefined &&
    (status.state === 'connecting' ||
      status.state === 'connected' ||
      status.state === 'reconnecting' ||
      (status.state === 'offline' && model.serverDownSince !== undefined));
  items.disconnect = {
    title: busy('disconnect') ? 'Disconnecting…' : 'Disconnect',
    enabled: live && !busy('disconnect'),
    hidden: false,
    action: 'disconnect',
  };

  const inserted = cards.some((c) => c.state === 'inserted');
  items['change-pin'] = { title: 'Change PIN…', enabled: inserted, hidden: false, action: 'change-pin' };
  items['unblock-pin'] = { title: 'Unblock PIN…', enabled: inserted, hidden: false, action: 'unblock-pin' };
  // Set a new PIN… (a fresh sign-in instead of the PIN or PUK) is there whenever Change PIN… is:
  // the daemon does not know the card's profile, so whether the tenant allows it (a first PIN on a
  // card made with none, or `pin.resetBySignIn`) is the card server's answer, which the PIN page
  // shows in words. Hiding the entry on a guess would hide the way out of a forgotten PIN.
  items['set-pin'] = { title: 'Set a new PIN…', enabled: inserted, hidden: false, action: 'set-pin' };
  // Self-service enrollment of the card in the reader; the server says whether its profile allows
  // it. With several cards in the reader, `cardlink enroll --card` names the one.
  const insertedCount = cards.filter((c) => c.state === 'inserted').length;
  items.enroll = {
    title: busy('enroll') ? 'Getting certificates…' : 'Get certificates',
    enabled: insertedCount === 1 && !busy('enroll'),
    hidden: false,
    action: 'enroll',
  };
  items['open-logs'] = { title: 'Open logs', enabled: true, hidden: false, action: 'open-logs' };
  items['save-diagnostics'] = {
    title: busy('save-diagnostics') ? 'Saving diagnostics…' : 'Save diagnostics',
    enabled: !busy('save-diagnostics'),
    hidden: false,
    action: 'save-diagnostics',
  };
  items['diagnostics-saved'] = info(
    model.lastDiagnostics ? `Saved: ${model.lastDiagnostics}` : '',
    model.lastDiagnostics === undefined,
  );
  items.about = { title: 'About cardlink', enabled: true, hidden: false, action: 'about' };
  items.quit = { title: 'Quit', enabled: true, hidden: false, action: 'quit' };

  return { icon, tooltip: tooltipText(model, stateLine), items };
}

export function iconState(model: TrayModel): TrayIconState {
  const status = model.status;
  if (!status) return 'error';
  switch (status.state) {
    case 'logged-out':
      return 'signed-out';
    case 'connecting':
      return 'connecting';
    case 'reconnecting':
      return 'reconnecting';
    case 'offline':
      // Offline while the daemon retries (the server stayed away past the grace period) is not
      // the quiet offline a Disconnect leaves.
      return model.serverDownSince !== undefined ? 'reconnecting' : 'signed-out';
    case 'connected':
      if (status.deviceStatus === 'pending' || status.lastError) return 'error';
      return status.cards.some((c) => c.state === 'taken-over') ? 'taken-over' : 'connected';
  }
}

function stateText(model: TrayModel): string {
  const status = model.status;
  if (!status) {
    return model.daemonError?.code === 'ERR_CONTROL_UNAVAILABLE' || !model.daemonError
      ? 'cardlink: daemon not running'
      : 'cardlink: cannot talk to the daemon';
  }
  switch (status.state) {
    case 'logged-out':
      return 'cardlink: signed out';
    case 'connecting':
      return 'cardlink: connecting…';
    case 'reconnecting':
      return 'cardlink: connection lost, reconnecting…';
    case 'offline':
      return model.serverDownSince !== undefined
        ? 'cardlink: card server unreachable'
        : 'cardlink: disconnected';
    case 'connected': {
      if (status.deviceStatus === 'pending') return 'cardlink: waiting for approval';
      const taken = status.cards.filter((c) => c.state === 'taken-over').length;
      if (taken > 0) return `cardlink: connected, ${plural(taken, 'card')} taken over`;
      if (status.lastError) return 'cardlink: connected, with a problem';
      return 'cardlink: connected';
    }
  }
}

function accountLine(model: TrayModel): string {
  const status = model.status;
  if (!status) {
    if (!model.daemonError) return 'looking for the cardlink daemon…';
    if (model.daemonError.code === 'ERR_CONTROL_UNAVAILABLE')
      return "start it: 'cardlink daemon' or 'systemctl --user start cardlink-daemon'";
    return clip(model.daemonError.message, MAX_LINE_CHARS);
  }
  const parts = [
    status.user !== undefined ? displayName(status.user) : 'not signed in',
    hostOf(status.serverUrl),
  ];
  if (status.serverRoundTripMs !== undefined) parts.push(`${formatMs(status.serverRoundTripMs)} round trip`);
  return parts.join(' · ');
}

function problemText(model: TrayModel): string | undefined {
  const status = model.status;
  if (!status) return undefined;
  if (status.deviceStatus === 'pending')
    return 'This device waits for an administrator to approve it; sign in again afterwards.';
  if (status.lastError) return clip(status.lastError.message, MAX_LINE_CHARS);
  if (model.serverDownReason && model.serverDownSince !== undefined)
    return clip(model.serverDownReason.message, MAX_LINE_CHARS);
  return undefined;
}

function noCardsText(status: DaemonStatus): string {
  if (status.state === 'logged-out') return 'No cards: sign in to get yours';
  if (status.state === 'connected') return 'No cards for this account';
  return 'No cards';
}

function cardLine(card: CardStatus): string {
  const label = displayName(card.label);
  const blocked = [card.pinBlocked && ', PIN blocked', card.pukBlocked && ', PUK blocked']
    .filter(Boolean)
    .join('');
  switch (card.state) {
    case 'inserted':
      return `${label}: in the reader${card.slot !== undefined ? ` (slot ${card.slot})` : ''}${blocked}`;
    case 'taken-over':
      return `${label}: taken over by ${displayName(card.takenOverBy ?? 'another device')}`;
    case 'removed':
      return `${label}: not in the reader${blocked}`;
  }
}

function tooltipText(model: TrayModel, stateLine: string): string {
  const status = model.status;
  if (!status) return clip(stateLine, MAX_TOOLTIP_CHARS);
  const inserted = status.cards.filter((c) => c.state === 'inserted').length;
  const parts = [stateLine];
  if (status.user !== undefined) parts.push(`signed in as ${displayName(status.user)}`);
  if (status.user !== undefined || inserted > 0) parts.push(`${plural(inserted, 'card')} in the reader`);
  return clip(parts.join('; '), MAX_TOOLTIP_CHARS);
}

// ---- Text helpers -----------------------------------------------------------------------------

/** The host (and port) of a URL, or the text itself when it is not one. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host || url;
  } catch {
    return url;
  }
}

/**
 * A name from the server (card label, device, user) as one short line: control characters (a
 * newline would break the menu) become spaces, long names end in an ellipsis.
 */
export function displayName(name: string): string {
  // eslint-disable-next-line no-control-regex
  const flat = name.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029]+/g, ' ').trim();
  return clip(flat || '(unnamed)', MAX_NAME_CHARS);
}

function clip(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : `${chars.slice(0, max - 1).join('')}…`;
}

/** “a”, “a and b”, “a, b and c”. */
function listed(items: readonly string[]): string {
  return items.length <= 1 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

/** An error message as a sentence: capitalised, with a full stop. */
function sentence(text: string): string {
  const trimmed = text.trim();
  const capital = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

/** Milliseconds for people: one decimal below 10 ms, whole numbers above. */
export function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}
