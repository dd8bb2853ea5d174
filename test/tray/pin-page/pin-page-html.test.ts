/** The PIN page's HTML: names from the server escaped, the card choice, no script, no form once done. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { CardStatus } from '../../../daemon/control/control-protocol.js';
import { escapeHtml, renderPinForm, renderRefusal } from '../../../tray/pin-page/pin-page-html.js';

const EVIL = '<script>alert("x")</script>&\'';
const cards: CardStatus[] = [
  { cardId: 'c1', label: 'Work', slot: 0, state: 'inserted' },
  { cardId: 'c"2', label: EVIL, slot: 1, state: 'inserted' },
];

describe('PIN page HTML', () => {
  it('escapes what it did not write itself', () => {
    assert.equal(escapeHtml(EVIL), '&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;');
    const html = renderPinForm({
      operation: 'change',
      cards,
      csrf: 'tok"en',
      form: true,
      answer: { ok: false, text: EVIL },
    });
    assert.ok(!html.includes('<script'), html);
    assert.ok(!html.includes('alert("x")'));
    assert.match(html, /value="c&quot;2"/);
    assert.match(html, /name="csrf" value="tok&quot;en"/);
  });

  it('offers a choice of card when there are several, keeping the one chosen; one card is named', () => {
    const several = renderPinForm({
      operation: 'change',
      cards,
      csrf: 't',
      selectedCardId: 'c"2',
      form: true,
    });
    assert.match(
      several,
      /<select name="card"><option value="c1">Work \(slot 0\)<\/option><option value="c&quot;2" selected>/,
    );
    const one = renderPinForm({ operation: 'unblock', cards: [cards[0]!], csrf: 't', form: true });
    assert.match(one, /Card: Work/);
    assert.match(one, /<input type="hidden" name="card" value="c1">/);
    assert.match(one, /name="puk"/);
    assert.doesNotMatch(one, /name="current"/);
  });

  it('password fields that are not remembered; no form once the card said done', () => {
    const form = renderPinForm({ operation: 'change', cards, csrf: 't', form: true });
    assert.equal(form.match(/type="password"/g)?.length, 3);
    assert.equal(form.match(/autocomplete="off"/g)?.length, 3);
    assert.match(form, /<form method="post" action="\/pin">/);
    const done = renderPinForm({
      operation: 'change',
      cards,
      csrf: 't',
      form: false,
      answer: { ok: true, text: 'Done.' },
    });
    assert.doesNotMatch(done, /<form/);
    assert.match(done, /class="answer ok"/);
    assert.match(renderRefusal('expired'), /This link has expired/);
  });
});
