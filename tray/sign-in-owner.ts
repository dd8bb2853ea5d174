/**
 * The tray's sign-in and its refresh token. While the tray runs, it is the one process that owns
 * and rotates the refresh token of a sign-in made from it (docs/security-model.md, "The refresh
 * token's owner"): the daemon gets access tokens only, over the control socket. The token lives in
 * this object's memory and in the keyring (refresh-token-store.ts), rewritten at each rotation,
 * so the next start of the tray can renew the sign-in without the user.
 *
 * Renewals never run two at a time: an IdP that rotates refresh tokens (oidc-provider does for
 * public clients, as RFC 9700 section 4.14.2 recommends) treats a token used twice as stolen and
 * revokes the whole grant, so a second renewal asked for while one runs waits for that one's result.
 *
 * A renewal the IdP refuses (the refresh token expired or was revoked: ERR_LOGIN_EXPIRED, or the
 * client is no longer allowed) drops the token from memory and store and asks the user to sign in
 * again once: one notice, no browser opened by itself, and nothing retried with the dead token.
 */
import type { OidcClientSettings } from '../daemon/login/oidc-client-settings.js';
import type { TokenGrant } from '../daemon/login/token-grant.js';
import { CardlinkError } from '../protocol/errors.js';
import type { RefreshTokenStore, StoredSignIn } from './refresh-token-store.js';

export interface SignInOwnerDeps {
  store: RefreshTokenStore;
  /** The login settings for a stored sign-in's issuer and client (resource and scope from the config). */
  settingsFor(signIn: Pick<StoredSignIn, 'issuer' | 'clientId'>): OidcClientSettings;
  /** Gives the daemon the access token (never the refresh token). */
  handOver(settings: OidcClientSettings, grant: TokenGrant): Promise<void>;
  /** The one request to sign in again, with the reason (a notification and the tray's output). */
  promptSignIn(reason: string): void;
  /** A line of the tray's output (no secrets). */
  out(line: string): void;
}

/** What restore() did. */
export type RestoreResult = 'restored' | 'none' | 'refused' | 'failed';

/** Errors of a renewal after which the refresh token is useless: the user must sign in again. */
function isFinal(error: unknown): boolean {
  return (
    error instanceof CardlinkError &&
    (error.code === 'ERR_LOGIN_EXPIRED' ||
      error.code === 'ERR_LOGIN_DENIED' ||
      error.code === 'ERR_CONFIG_INVALID')
  );
}

interface HeldSignIn {
  readonly settings: OidcClientSettings;
  refreshToken: string;
}

export class SignInOwner {
  private held: HeldSignIn | undefined;
  /** The issuer and client of the tray's last sign-in, refresh token or not (signedInWith()). */
  private lastSettings: OidcClientSettings | undefined;
  private renewing: Promise<void> | undefined;
  /** The user was asked to sign in again since the last sign-in (at most once). */
  private prompted = false;

  constructor(private readonly deps: SignInOwnerDeps) {}

  /** Whether the tray holds a refresh token to renew the sign-in with. */
  holds(): boolean {
    return this.held !== undefined;
  }

  /**
   * The identity provider and client of the sign-in the tray made or restored, while it lasts:
   * Set a new PIN…'s fresh sign-in must be at the same one (with several `login.issuers`, the user's
   * card belongs to the account there). Undefined when the daemon was signed in another way.
   */
  signedInWith(): OidcClientSettings | undefined {
    return this.held?.settings ?? this.lastSettings;
  }

  /**
   * A sign-in the tray just made: the access token goes to the daemon, the refresh token (if the
   * IdP issued one) into memory and the store.
   */
  async adopt(settings: OidcClientSettings, grant: TokenGrant): Promise<void> {
    await this.deps.handOver(settings, grant);
    this.prompted = false;
    this.lastSettings = settings;
    if (!grant.refreshToken) {
      this.held = undefined;
      await this.deps.store.clear();
      return;
    }
    this.held = { settings, refreshToken: grant.refreshToken };
    await this.keep(this.held);
  }

  /**
   * Loads the stored sign-in into memory without using it (the daemon already has a token of it:
   * the tray restarted while the daemon ran on).
   */
  async load(): Promise<boolean> {
    if (this.held) return true;
    const stored = await this.deps.store.load();
    if (!stored) return false;
    this.held = { settings: this.deps.settingsFor(stored), refreshToken: stored.refreshToken };
    return true;
  }

  /**
   * Brings the sign-in back into a daemon that has none (the tray or the daemon started): the held
   * or stored refresh token, a refresh at the IdP, the new access token to the daemon.
   */
  async restore(): Promise<RestoreResult> {
    let loaded: boolean;
    try {
      loaded = await this.load();
    } catch (error) {
      this.deps.out(`cardlink tray: the stored sign-in cannot be read: ${messageOf(error)}`);
      return 'failed';
    }
    if (!loaded) return 'none';
    try {
      await this.renew();
      this.deps.out('cardlink tray: sign-in restored');
      return 'restored';
    } catch (error) {
      if (!isFinal(error)) {
        this.deps.out(`cardlink tray: the sign-in could not be restored yet: ${messageOf(error)}`);
        return 'failed';
      }
      this.askOnce(messageOf(error));
      return 'refused';
    }
  }

  /**
   * A new access token from the refresh token, handed to the daemon; the rotated refresh token
   * replaces the old one in memory and store first (it is the only one the IdP still accepts).
   * A final refusal drops the sign-in; the caller tells the user.
   */
  renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => (this.renewing = undefined));
    return this.renewing;
  }

  /**
   * Sign out: the sign-in is let go at once (so the status that follows `endSession`, the
   * daemon's logout, finds nothing to forget or restore), `endSession` runs, then the refresh token
   * leaves the store and is revoked at the IdP where it offers revocation (RFC 7009). Returns what
   * the IdP did with it; rejects if the session could not be ended or the revocation failed (the
   * token is forgotten here either way).
   */
  async signOut(endSession: () => Promise<unknown>): Promise<'revoked' | 'not-supported' | 'none'> {
    const held = this.held;
    this.held = undefined;
    this.lastSettings = undefined;
    try {
      await endSession();
    } finally {
      // A renewal under way may rotate the token: the one to revoke is the newest.
      await this.renewing?.catch(() => undefined);
      await this.deps.store.clear();
    }
    const token = held?.refreshToken;
    if (!held || !token) return 'none';
    const { revokeRefreshToken } = await import('../daemon/login/revoke-token.js');
    const { idpRequestOptionsFor } = await import('../daemon/login/login-settings.js');
    return revokeRefreshToken(held.settings, token, idpRequestOptionsFor(held.settings));
  }

  /** The daemon's sign-in ended without the tray (`cardlink logout`): the tray's ends too. */
  async forget(): Promise<void> {
    this.held = undefined;
    this.lastSettings = undefined;
    await this.deps.store.clear();
  }

  private async renewOnce(): Promise<void> {
    const held = this.held;
    if (!held) throw new CardlinkError('ERR_LOGIN_EXPIRED', 'the tray has no sign-in of its own to renew');
    const { refreshAccessToken } = await import('../daemon/login/refresh-token.js');
    const { idpRequestOptionsFor } = await import('../daemon/login/login-settings.js');
    let grant: TokenGrant;
    try {
      grant = await refreshAccessToken(held.settings, held.refreshToken, idpRequestOptionsFor(held.settings));
    } catch (error) {
      if (isFinal(error) && this.held === held) {
        this.held = undefined;
        await this.deps.store.clear();
      }
      throw error;
    }
    const rotated = grant.refreshToken !== undefined && grant.refreshToken !== held.refreshToken;
    if (rotated) held.refreshToken = grant.refreshToken!;
    // Signed out meanwhile: the access token is dropped, signOut() revokes the newest refresh token.
    if (this.held !== held) return;
    if (rotated) await this.keep(held);
    await this.deps.handOver(held.settings, grant);
  }

  /** Writes the held sign-in to the store; a store that fails leaves it in memory (said once). */
  private async keep(held: HeldSignIn): Promise<void> {
    try {
      const where = await this.deps.store.save({
        issuer: held.settings.issuer,
        clientId: held.settings.clientId,
        refreshToken: held.refreshToken,
      });
      const problem = this.deps.store.keyringProblem;
      if (where === 'file' && problem !== undefined)
        this.deps.out(
          `cardlink tray: no desktop keyring (${problem}); the sign-in is kept in a private file`,
        );
    } catch (error) {
      this.deps.out(
        `cardlink tray: the sign-in cannot be stored, a restart will need a new one: ${messageOf(error)}`,
      );
    }
  }

  private askOnce(reason: string): void {
    if (this.prompted) return;
    this.prompted = true;
    this.deps.promptSignIn(reason);
  }
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
