/** The PIN page's one-time links and page sessions, on a clock the test moves. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_PIN_LINKS,
  OneTimeLinks,
  PIN_LINK_TTL_MS,
  PIN_PAGE_SESSION_TTL_MS,
  type PinPageSession,
} from '../../../tray/pin-page/one-time-links.js';

function clocked() {
  let now = 1_000_000;
  const links = new OneTimeLinks({ now: () => now });
  return { links, advance: (ms: number) => (now += ms) };
}

describe('one-time links to the PIN page', () => {
  it('a token is 256 random bits of base64url, different each time', () => {
    const { links } = clocked();
    const a = links.issue('change');
    const b = links.issue('change');
    assert.match(a, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(a, b);
  });

  it('opens one page session, once; the second use is "used"', () => {
    const { links } = clocked();
    const token = links.issue('unblock');
    const session = links.redeem(token) as PinPageSession;
    assert.equal(typeof session, 'object');
    assert.equal(session.operation, 'unblock');
    assert.match(session.csrf, /^[A-Za-z0-9_-]{43}$/);
    assert.notEqual(session.id, token);
    assert.equal(links.redeem(token), 'used');
    assert.equal(links.session(session.id), session);
  });

  it(`expires ${PIN_LINK_TTL_MS / 60_000} minutes after it was made, unused`, () => {
    const { links, advance } = clocked();
    const late = links.issue('change');
    const onTime = links.issue('change');
    advance(PIN_LINK_TTL_MS - 1);
    assert.equal(typeof links.redeem(onTime), 'object');
    advance(1);
    assert.equal(links.redeem(late), 'expired');
    assert.equal(links.redeem(late), 'unknown', 'an expired link is forgotten');
  });

  it('refuses tokens it never made, of any shape', () => {
    const { links } = clocked();
    links.issue('change');
    for (const t of ['', 'x', 'A'.repeat(43), '../../etc/passwd', 'A'.repeat(10_000)])
      assert.equal(links.redeem(t), 'unknown', t.slice(0, 20));
  });

  it('a page session lasts its time, checks its CSRF token, and ends when told', () => {
    const { links, advance } = clocked();
    const session = links.redeem(links.issue('change')) as PinPageSession;
    assert.equal(OneTimeLinks.csrfMatches(session, session.csrf), true);
    assert.equal(
      OneTimeLinks.csrfMatches(session, `${session.csrf.slice(0, -1)}A`),
      session.csrf.endsWith('A'),
    );
    assert.equal(OneTimeLinks.csrfMatches(session, undefined), false);
    assert.equal(OneTimeLinks.csrfMatches(session, ''), false);
    assert.equal(links.session(session.csrf), undefined, 'the CSRF token is not a session id');
    advance(PIN_PAGE_SESSION_TTL_MS - 1);
    assert.equal(links.session(session.id), session);
    advance(1);
    assert.equal(links.session(session.id), undefined);
    const other = links.redeem(links.issue('change')) as PinPageSession;
    links.end(other);
    assert.equal(links.session(other.id), undefined);
  });

  it(`keeps at most ${MAX_PIN_LINKS} links, dropping the oldest`, () => {
    const { links } = clocked();
    const first = links.issue('change');
    for (let i = 0; i < MAX_PIN_LINKS; i++) links.issue('change');
    assert.equal(links.redeem(first), 'unknown');
  });
});
