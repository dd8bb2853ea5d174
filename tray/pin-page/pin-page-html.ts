/**
 * The PIN page's HTML and its stylesheet: a plain form that works without script (there is none:
 * the page's CSP allows no script at all), the card's answer in words above it, and the refusal
 * page for a link that is spent, expired or unknown. Every text from outside (card labels, the
 * answer) is escaped; nothing typed is ever put back into a page.
 */
import { REFERENCE_DATA_MAX_BYTES, REFERENCE_DATA_MIN_BYTES } from '../../apdu/piv/index.js';
import type { CardStatus } from '../../daemon/control/control-protocol.js';
import type { LinkRefusal, PinPageOperation } from './one-time-links.js';

/** The stylesheet, served as /pin.css (style-src 'self': no inline style either). */
export const PIN_PAGE_CSS = `
:root { color-scheme: light dark; --accent: #1f5fbf; --ok: #1b7a3a; --bad: #b3261e; }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, "DejaVu Sans", sans-serif; margin: 0; padding: 2.5rem 1rem;
  background: Canvas; color: CanvasText; }
main { max-width: 28rem; margin: 0 auto; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
.card { color: GrayText; margin: 0 0 1.5rem; }
form { display: grid; gap: .9rem; }
label { display: grid; gap: .3rem; font-weight: 600; }
input, select { font: inherit; padding: .55rem .65rem; border: 1px solid GrayText; border-radius: .4rem; }
input:focus, select:focus { outline: 2px solid var(--accent); outline-offset: 1px; }
.hint { font-weight: 400; color: GrayText; font-size: .9rem; }
button { font: inherit; font-weight: 600; padding: .65rem; border: 0; border-radius: .4rem;
  background: var(--accent); color: #fff; cursor: pointer; }
.answer { padding: .8rem 1rem; border-radius: .4rem; margin: 0 0 1.25rem; border-left: .35rem solid; }
.answer.ok { border-color: var(--ok); background: color-mix(in srgb, var(--ok) 12%, Canvas); }
.answer.bad { border-color: var(--bad); background: color-mix(in srgb, var(--bad) 12%, Canvas); }
footer { margin-top: 2rem; font-size: .85rem; color: GrayText; }
`;

const ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** Text made safe for HTML content and quoted attribute values. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ESCAPES[c]!);
}

const TITLES: Record<PinPageOperation, string> = {
  change: 'Change PIN',
  unblock: 'Unblock PIN',
  set: 'Set a new PIN',
};

function page(title: string, body: string, head = ''): string {
  return (
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8">${head}` +
    '<meta name="viewport" content="width=device-width, initial-scale=1">' +
    `<title>${escapeHtml(title)} — cardlink</title><link rel="stylesheet" href="/pin.css"></head>` +
    `<body><main>${body}<footer>cardlink · this page runs on your computer; what you type goes ` +
    'only to the cardlink daemon and your card, and is not kept.</footer></main></body></html>\n'
  );
}

export interface PinFormView {
  readonly operation: PinPageOperation;
  /** The cards in the reader to choose from. */
  readonly cards: readonly CardStatus[];
  readonly csrf: string;
  /** The card chosen last (kept selected after an answer). */
  readonly selectedCardId?: string;
  /** The card's last answer, in words. */
  readonly answer?: { readonly ok: boolean; readonly text: string };
  /** Show the form (false once the card said done). */
  readonly form: boolean;
}

function cardField(cards: readonly CardStatus[], selected: string | undefined): string {
  if (cards.length === 1) {
    const c = cards[0]!;
    return (
      `<p class="card">Card: ${escapeHtml(c.label)}</p>` +
      `<input type="hidden" name="card" value="${escapeHtml(c.cardId)}">`
    );
  }
  const options = cards
    .map(
      (c) =>
        `<option value="${escapeHtml(c.cardId)}"${c.cardId === selected ? ' selected' : ''}>` +
        `${escapeHtml(c.label)}${c.slot !== undefined ? ` (slot ${c.slot})` : ''}</option>`,
    )
    .join('');
  return `<label>Card<select name="card">${options}</select></label>`;
}

function secretField(name: string, label: string, hint: string): string {
  return (
    `<label>${label}<input type="password" name="${name}" required autocomplete="off" ` +
    `inputmode="numeric" maxlength="${REFERENCE_DATA_MAX_BYTES}">` +
    `${hint ? `<span class="hint">${hint}</span>` : ''}</label>`
  );
}

/** The form page (with the last answer above the form, if there is one). */
export function renderPinForm(view: PinFormView): string {
  const { operation } = view;
  const answer = view.answer
    ? `<p class="answer ${view.answer.ok ? 'ok' : 'bad'}" role="status">${escapeHtml(view.answer.text)}</p>`
    : '';
  const digits = `${REFERENCE_DATA_MIN_BYTES} to ${REFERENCE_DATA_MAX_BYTES} digits`;
  const intro =
    operation === 'set'
      ? '<p>You signed in again just now: choose your new PIN.</p>'
      : operation === 'change'
        ? '<p>Type your current PIN and choose a new one.</p>'
        : '<p>A blocked PIN is unblocked with the PUK (the unblocking key your administrator gave you); you choose a new PIN at the same time.</p>';
  const form = view.form
    ? `${intro}<form method="post" action="/pin">` +
      `<input type="hidden" name="csrf" value="${escapeHtml(view.csrf)}">` +
      cardField(view.cards, view.selectedCardId) +
      (operation === 'set'
        ? ''
        : operation === 'change'
          ? secretField('current', 'Current PIN', '')
          : secretField(
              'puk',
              'PUK',
              `${REFERENCE_DATA_MIN_BYTES} to ${REFERENCE_DATA_MAX_BYTES} characters`,
            )) +
      secretField('new', 'New PIN', digits) +
      secretField('again', 'New PIN again', '') +
      `<button type="submit">${TITLES[operation]}</button></form>`
    : '<p>You can close this tab.</p>';
  return page(TITLES[operation], `<h1>${TITLES[operation]}</h1>${answer}${form}`);
}

/** A page without the form: no card in the reader, the daemon not reachable, ... */
export function renderPinMessage(operation: PinPageOperation, text: string): string {
  return page(
    TITLES[operation],
    `<h1>${TITLES[operation]}</h1><p class="answer bad" role="status">${escapeHtml(text)}</p>`,
  );
}

const REFUSALS: Record<LinkRefusal | 'session', string> = {
  used: 'This link has been used already. Each link opens the page once: choose Change PIN… or Unblock PIN… in the cardlink menu again.',
  expired: 'This link has expired. Choose Change PIN… or Unblock PIN… in the cardlink menu again.',
  unknown: 'This link is not valid. Choose Change PIN… or Unblock PIN… in the cardlink menu.',
  session:
    'This page has expired or was opened elsewhere. Choose Change PIN… or Unblock PIN… in the cardlink menu again.',
};

/** The refusal page for a spent, expired or unknown link, or a form without its session. */
export function renderRefusal(why: LinkRefusal | 'session'): string {
  return page(
    'Link refused',
    `<h1>Link refused</h1><p class="answer bad" role="alert">${escapeHtml(REFUSALS[why])}</p>`,
  );
}

/**
 * The set-PIN page before the fresh sign-in: one button that goes to the identity provider, which
 * asks for the password again (`prompt=login`) and sends the browser back here.
 */
export function renderSignInFirst(
  csrf: string,
  answer?: { readonly ok: boolean; readonly text: string },
): string {
  const said = answer
    ? `<p class="answer ${answer.ok ? 'ok' : 'bad'}" role="status">${escapeHtml(answer.text)}</p>`
    : '';
  return page(
    TITLES.set,
    `<h1>${TITLES.set}</h1>${said}<p>To set a PIN without the old one (a new card, or a forgotten PIN), ` +
      'sign in to your organisation again. Your identity provider asks for your password even if you ' +
      'are signed in already; then you come back here to choose the PIN.</p>' +
      '<form method="post" action="/pin/sign-in">' +
      `<input type="hidden" name="csrf" value="${escapeHtml(csrf)}">` +
      '<button type="submit">Sign in again</button></form>',
  );
}

/** The step to the identity provider: a meta refresh (no script), and the link to follow by hand. */
export function renderGoToSignIn(authorizationUrl: string): string {
  const url = escapeHtml(authorizationUrl);
  return page(
    TITLES.set,
    `<h1>${TITLES.set}</h1><p>On to your identity provider… If nothing happens, ` +
      `<a href="${url}">continue to sign in</a>.</p>`,
    `<meta http-equiv="refresh" content="0;url=${url}">`,
  );
}
