/**
 * What Change PIN…, Unblock PIN… and Set a new PIN… do (TrayActions.openPinPage calls it): start the PIN page's
 * server on first use, make a one-time link, open it in the system browser (the opener `cardlink
 * login` uses, daemon/cli/desktop-open.ts) and show it in a notification and the tray's output, so
 * it works where no browser opens and where the tray has no tray host too.
 */
import { openWithDesktop } from '../../daemon/cli/desktop-open.js';
import type { DaemonConfig } from '../../daemon/config/daemon-config.js';
import type { DaemonStatus } from '../../daemon/control/control-protocol.js';
import type { OidcClientSettings } from '../../daemon/login/oidc-client-settings.js';
import type { DaemonWatch } from '../daemon-watch.js';
import { displayName } from '../tray-state.js';
import { PIN_LINK_TTL_MS, type PinPageOperation } from './one-time-links.js';
import type { FreshSignIn, PinPageServer } from './pin-page-server.js';

export interface PinPageOpenerDeps {
  /** The tray's control connection: the page's `cards`, `change-pin` and `unblock-pin` go through it. */
  readonly watch: Pick<DaemonWatch, 'request'>;
  /** Shows an answer to the user (a notification, and the tray's output). */
  inform(summary: string, body: string, outputBody?: string): void;
  /** The daemon's last status, if the tray has one. */
  status(): DaemonStatus | undefined;
  /** The daemon's config: its identity provider is where Set PIN… signs in again. */
  readonly config?: DaemonConfig;
  /**
   * The identity provider the tray signed in at, if it did: Set PIN… signs in again there rather
   * than at the config's first one (tray/sign-in-owner.ts).
   */
  signedInWith?(): OidcClientSettings | undefined;
}

const WHAT: Record<PinPageOperation, string> = {
  change: 'Change PIN',
  unblock: 'Unblock PIN',
  set: 'Set a new PIN',
};

export class PinPageOpener {
  /** The page's server, started by the first open(). */
  private server: Promise<PinPageServer> | undefined;

  constructor(private readonly deps: PinPageOpenerDeps) {}

  /** Opens the page for `kind`; resolves with the link, or undefined when no card is in the reader. */
  async open(kind: PinPageOperation): Promise<string | undefined> {
    const what = WHAT[kind];
    const inReader = (this.deps.status()?.cards ?? []).filter((c) => c.state === 'inserted');
    if (inReader.length === 0) {
      this.deps.inform(what, 'No cardlink card is in the reader: connect first.');
      return undefined;
    }
    const forWhom = inReader.length === 1 ? ` for “${displayName(inReader[0]!.label)}”` : '';
    // A server that could not start is forgotten, so the next click tries again.
    this.server ??= this.start().catch((error: unknown) => {
      this.server = undefined;
      throw error;
    });
    const url = (await this.server).link(kind);
    const opened = await openWithDesktop(url);
    const valid = `it works once, for ${PIN_LINK_TTL_MS / 60_000} minutes`;
    // The link's token lets whoever has it open the page: the output line (a log) gets the page
    // without it while a notification carries the whole link.
    const text = (link: string) =>
      opened
        ? `Your browser opened the PIN page${forWhom}. If it did not, open ${link} (${valid}).`
        : `Open this address in a browser to ${what.toLowerCase()}${forWhom}: ${link} (${valid}).`;
    this.deps.inform(what, text(url), text(withoutToken(url)));
    return url;
  }

  /** Stops the page's server, if it was started. */
  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (server) await (await server.catch(() => undefined))?.close();
  }

  private async start(): Promise<PinPageServer> {
    const { PinPageServer } = await import('./pin-page-server.js');
    const { watch } = this.deps;
    return PinPageServer.start({
      daemon: {
        cards: () => watch.request('cards'),
        changePin: (p) => watch.request('change-pin', p),
        unblockPin: (p) => watch.request('unblock-pin', p),
        setPin: (p) => watch.request('set-pin', p),
      },
      ...(this.deps.config
        ? { freshSignIn: freshSignInAt(this.deps.config, () => this.deps.signedInWith?.()) }
        : {}),
    });
  }
}

/**
 * Set PIN…'s sign-in: the browser sign-in of `cardlink login` at the identity provider the user
 * signed in at (`signedInWith`; else the daemon's default one), made fresh (`prompt=login`,
 * `max_age=0`) and sent back to the PIN page when done.
 */
export function freshSignInAt(
  config: DaemonConfig,
  signedInWith: () => OidcClientSettings | undefined = () => undefined,
): (afterSignInUrl: string) => Promise<FreshSignIn> {
  return async (afterSignInUrl) => {
    const { oidcSettingsAt, browserLoginOptionsFor } = await import('../../daemon/login/login-settings.js');
    const { startBrowserLogin } = await import('../../daemon/login/authorization-code-login.js');
    const settings = signedInWith() ?? oidcSettingsAt(config, 0);
    return startBrowserLogin(settings, {
      ...browserLoginOptionsFor(config, settings),
      fresh: true,
      afterSignInUrl,
    });
  };
}

/** The one-time link with its token replaced by an ellipsis (for output that ends up in logs). */
export function withoutToken(link: string): string {
  const u = new URL(link);
  return `${u.origin}${u.pathname.replace(/[^/]+$/, '…')}`;
}
