/**
 * The desktop opener: which one each platform gets, and on Linux the order xdg-open, then
 * `gio open`, with real programs on a PATH of the test's own (shell scripts that record their
 * arguments). macOS and Windows cannot run here: only the choice of the `open` package is checked.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { openerKind, openWithDesktop as openUnref } from '../../../daemon/cli/desktop-open.js';

/**
 * The opener is unref'd (it must not keep `cardlink login` alive); in a test nothing else keeps the
 * event loop running while it waits for the opener's exit, so a timer does.
 */
async function openWithDesktop(target: string): Promise<boolean> {
  const keepAlive = setInterval(() => undefined, 1000);
  try {
    return await openUnref(target);
  } finally {
    clearInterval(keepAlive);
  }
}

describe('openerKind', () => {
  it('uses the open package on macOS, Windows and WSL, xdg-open on other Linux and BSDs', () => {
    assert.equal(openerKind('darwin'), 'open-package');
    assert.equal(openerKind('win32'), 'open-package');
    assert.equal(
      openerKind('linux', () => true),
      'open-package',
    );
    assert.equal(
      openerKind('linux', () => false),
      'xdg',
    );
    assert.equal(
      openerKind('freebsd', () => false),
      'xdg',
    );
  });
});

describe('openWithDesktop on Linux', () => {
  let dir: string;
  let savedPath: string | undefined;

  /** A program on the test's PATH that appends its arguments to <name>.log and exits `code`. */
  function fakeOpener(name: string, code: number): void {
    const script = `#!/bin/sh\necho "$*" >> "${path.join(dir, `${name}.log`)}"\nexit ${code}\n`;
    fs.writeFileSync(path.join(dir, name), script, { mode: 0o755 });
  }
  const calls = (name: string): string[] => {
    const file = path.join(dir, `${name}.log`);
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim().split('\n') : [];
  };

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-opener-'));
    savedPath = process.env['PATH'];
    process.env['PATH'] = dir;
  });
  afterEach(() => {
    process.env['PATH'] = savedPath;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('opens with xdg-open when it works, and does not try gio', async () => {
    fakeOpener('xdg-open', 0);
    fakeOpener('gio', 0);
    assert.equal(await openWithDesktop('http://127.0.0.1:1/a b'), true);
    assert.deepEqual(calls('xdg-open'), ['http://127.0.0.1:1/a b']);
    assert.deepEqual(calls('gio'), []);
  });

  it('falls back to gio open where xdg-open fails or is missing', async () => {
    fakeOpener('xdg-open', 3);
    fakeOpener('gio', 0);
    assert.equal(await openWithDesktop('http://127.0.0.1:1/x'), true);
    assert.deepEqual(calls('gio'), ['open http://127.0.0.1:1/x']);

    fs.rmSync(path.join(dir, 'xdg-open'));
    assert.equal(await openWithDesktop('/tmp/logs'), true);
    assert.deepEqual(calls('gio'), ['open http://127.0.0.1:1/x', 'open /tmp/logs']);
  });

  it('says false, without throwing, when no opener exists or all fail', async () => {
    assert.equal(await openWithDesktop('http://127.0.0.1:1/'), false);
    fakeOpener('xdg-open', 1);
    fakeOpener('gio', 1);
    assert.equal(await openWithDesktop('http://127.0.0.1:1/'), false);
    assert.equal(calls('xdg-open').length, 1);
    assert.equal(calls('gio').length, 1);
  });
});
