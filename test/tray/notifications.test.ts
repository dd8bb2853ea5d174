/**
 * Desktop notifications over D-Bus against a real notification server (dunst on a private
 * session bus, on Xvfb): what arrives, with markup in server-provided text made harmless, one
 * topic replacing its last notice, and a clear error where there is no bus.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import { DesktopNotifier, escapeBodyMarkup } from '../../tray/notifications.js';
import { startDesktopSession, type DesktopSession } from '../support/desktop-session.js';

describe('desktop notifications (freedesktop, over D-Bus)', () => {
  let dir: string;
  let desktop: DesktopSession;
  let notifier: DesktopNotifier;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-notifications-'));
    desktop = await startDesktopSession({ dir, trayHost: false, notifications: true });
    notifier = await DesktopNotifier.open({ busAddress: desktop.busAddress });
  });

  after(async () => {
    notifier?.close();
    await desktop?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('names the server it found', () => {
    assert.match(notifier.server, /^dunst \d/);
  });

  it('a notice arrives under the name cardlink, with its urgency', async () => {
    await notifier.notify({
      kind: 'taken-over',
      summary: 'Card taken over',
      body: '“Work” is now in use on alice-desktop.',
      urgency: 'normal',
    });
    const got = await desktop.waitForNotification((n) => n.summary === 'Card taken over');
    assert.deepEqual(got, {
      appName: 'cardlink',
      summary: 'Card taken over',
      body: '“Work” is now in use on alice-desktop.',
      urgency: 'NORMAL',
    });
  });

  it('markup in a name from the server reaches a markup-reading server escaped, so it shows as text', async () => {
    const body = 'Card <b>Work</b> & <a href="https://evil.example/">Home</a>';
    await notifier.notify({ kind: 'info', summary: 'Label test', body, urgency: 'low' });
    const got = await desktop.waitForNotification((n) => n.summary === 'Label test');
    // dunst announces body-markup: what it got is the escaped text, which it renders as the
    // characters themselves (no bold, no link).
    assert.equal(
      got.body,
      'Card &lt;b&gt;Work&lt;/b&gt; &amp; &lt;a href="https://evil.example/"&gt;Home&lt;/a&gt;',
    );
    assert.equal(escapeBodyMarkup('a<b>&c'), 'a&lt;b&gt;&amp;c');
  });

  it('a notice of the same topic replaces the last one', async () => {
    const first = await notifier.notify({
      kind: 'server-unreachable',
      summary: 'Card server unreachable',
      body: 'x',
      urgency: 'normal',
    });
    const second = await notifier.notify({
      kind: 'back-online',
      summary: 'Card server back online',
      body: 'y',
      urgency: 'low',
    });
    assert.equal(second, first, 'the server reused the id');
    // Sent at once, too: the second waits for the first's id.
    const [a, b] = await Promise.all([
      notifier.notify({ kind: 'taken-over', summary: 'Card taken over', body: 'a', urgency: 'normal' }),
      notifier.notify({ kind: 'taken-over', summary: '2 cards taken over', body: 'a, b', urgency: 'normal' }),
    ]);
    assert.equal(b, a);
    const other = await notifier.notify({
      kind: 'session-expiring',
      summary: 's',
      body: 'z',
      urgency: 'normal',
    });
    assert.notEqual(other, first);
  });

  it('no session bus: a clear error, not a hang', async () => {
    await assert.rejects(
      DesktopNotifier.open({ busAddress: `unix:path=${path.join(dir, 'no-bus')}` }),
      (e: unknown) => e instanceof CardlinkError && e.code === 'ERR_NOTIFICATIONS_UNAVAILABLE',
    );
    const saved = process.env['DBUS_SESSION_BUS_ADDRESS'];
    delete process.env['DBUS_SESSION_BUS_ADDRESS'];
    try {
      await assert.rejects(
        DesktopNotifier.open(),
        /no D-Bus session bus \(DBUS_SESSION_BUS_ADDRESS is not set\)/,
      );
    } finally {
      if (saved !== undefined) process.env['DBUS_SESSION_BUS_ADDRESS'] = saved;
    }
  });
});
