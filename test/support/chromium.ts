/**
 * A real browser for the tests that a person would use a browser for (the IdP's login page, the
 * tray's PIN page): Debian's `chromium` driven by `playwright-core`, headless, with a fresh profile
 * each launch.
 *
 * The flags are the ones this machine needs (FIELD-NOTES): as root Chromium needs --no-sandbox, and
 * without the background-networking flags it keeps trying to reach Google's hosts, which this
 * machine's closed network refuses many at a time. Nothing here talks to anything but loopback.
 *
 * Screenshots the tests take go to `artifactPath(name)`: CARDLINK_TEST_ARTIFACTS or test-artifacts/
 * at the checkout's root (git-ignored), as the tray's X11 test does, so what a person would see can be looked at.
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';

/** Debian's browser (package `chromium`, installed by test/prepare-machine.sh). */
export const CHROMIUM_PATH = process.env['CARDLINK_TEST_CHROMIUM'] ?? '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-default-apps',
  '--disable-extensions',
];

/** One browser with one fresh profile; `close()` ends it. */
export interface TestBrowser {
  readonly browser: Browser;
  readonly context: BrowserContext;
  /** A new tab. */
  newPage(): Promise<Page>;
  close(): Promise<void>;
}

/** Launches headless Chromium with a new, empty profile. */
export async function launchChromium(): Promise<TestBrowser> {
  // launch() gives the browser a new temporary profile of its own and deletes it on close.
  const browser = await chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const context = await browser.newContext({ viewport: { width: 900, height: 700 } });
  return {
    browser,
    context,
    newPage: () => context.newPage(),
    async close() {
      await context.close().catch(() => undefined);
      await browser.close().catch(() => undefined);
    },
  };
}

/** CARDLINK_TEST_ARTIFACTS, else the checkout's test-artifacts/ (created on first use). */
export function artifactPath(name: string): string {
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  const dir = process.env['CARDLINK_TEST_ARTIFACTS'] ?? path.join(root, 'test-artifacts');
  fs.mkdirSync(dir, { recursive: true });
  return path.join(dir, name);
}
