/**
 * `cardlink daemon`: one running instance per user. It holds the device key, the session with the
 * card server (ServerLink), the user's cards in the reader (CardManager), and the control socket
 * through which the tray and the CLI hand over tokens and ask for status.
 *
 * Tokens: the access token comes from the tray or `cardlink login`. When the handover also
 * carries a refresh token (headless login, no tray to renew), the daemon refreshes by itself on
 * TOKEN_EXPIRING; otherwise it tells the control clients (event `token-expiring`) and the tray
 * renews. Tokens live in memory only; a restarted daemon needs a new login.
 */
import { CardlinkError } from '../protocol/errors.js';
import type { Logger } from '../protocol/log.js';
import { CardManager } from './cards/card-manager.js';
import { requireServerUrl, type DaemonConfig } from './config/daemon-config.js';
import { controlPaths } from './control/control-paths.js';
import type {
  CardStatus,
  ControlErrorInfo,
  ControlHandler,
  DaemonStatus,
  PinChangeParams,
  EnrollParams,
  EnrollResult,
  PinResult,
  PinUnblockParams,
  PinSetParams,
  SetPinResult,
  TokenHandover,
} from './control/control-protocol.js';
import { pinOperationCommand, pinOperationOutcome, type PinOperation } from '../apdu/piv/core/index.js';
import { ControlServer } from './control/control-server.js';
import { loadOrCreateDeviceKey } from './device/device-key.js';
import { BridgeReader, type ReaderSlots } from './reader/bridge-reader.js';
import { ServerLink } from './session/server-link.js';
import fs from 'node:fs';
// jose's decoder alone (a few small modules), not the whole of jose: only claims are read here.
import { decodeJwt } from 'jose/jwt/decode';
import { isLoopbackHost } from '../protocol/config/config-sources.js';

export const DAEMON_VERSION = '0.1.0';

/** How long a stopping daemon waits for the server to close its cards. */
const CLOSE_CARDS_TIMEOUT_MS = 2000;

/** A token refresh is tried this many times (with the link's back-off) before giving up. */
const MAX_REFRESH_ATTEMPTS = 3;

interface HeldToken {
  accessToken: string;
  refreshToken: string | undefined;
  issuer: string | undefined;
  clientId: string | undefined;
  expiresAt: number | undefined;
}

export class Daemon implements ControlHandler {
  private token: HeldToken | undefined;
  private lastError: ControlErrorInfo | undefined;
  private offline = false;
  /** The user asked to go offline (`disconnect`); `connect` or a new token ends it. */
  private disconnected = false;
  private expiryTimer: NodeJS.Timeout | undefined;
  /**
   * The refresh code (openid-client), loaded for the first refresh: a daemon whose tray renews the
   * tokens never needs it, and one that refreshes by itself needs it once per token lifetime, when
   * a load of well under a second is nothing next to the minutes left (TOKEN_EXPIRING). Loaded
   * earlier, it would only sit in the idle daemon's memory (docs/performance.md, daemon RSS).
   */
  private refreshing: Promise<typeof import('./login/refresh-token.js')> | undefined;

  private constructor(
    private readonly config: DaemonConfig,
    private readonly logger: Logger,
    private readonly link: ServerLink,
    private readonly cardManager: CardManager,
    private readonly reader: ReaderSlots,
    private control: ControlServer | undefined,
  ) {}

  static async start(config: DaemonConfig, logger: Logger): Promise<Daemon> {
    requireServerUrl(config);
    const device = await loadOrCreateDeviceKey(config.stateDir, config.deviceKeyStore);
    if (device.keyringUnavailable)
      logger.info('device key: the desktop keyring is not available, the key is kept in a file', {
        reason: device.keyringUnavailable,
      });
    if (device.created) logger.info('device key created', { store: device.store, location: device.location });
    const reader = await openReader(config, logger);
    const link = new ServerLink({
      sessionUrl: config.server.sessionUrl,
      ca: config.server.caFile ? fs.readFileSync(config.server.caFile, 'utf8') : undefined,
      certificateSha256: config.server.certificateSha256,
      device,
      deviceName: config.deviceName,
      clientName: `cardlink-daemon/${DAEMON_VERSION} ${process.platform}`,
      connectTimeoutMs: config.timeouts.connectSeconds * 1000,
      commandTimeoutMs: config.timeouts.commandSeconds * 1000,
      reconnect: config.reconnect,
      logger,
    });
    const cards = new CardManager({ link, reader, graceMs: config.timeouts.graceSeconds * 1000, logger });
    const daemon = new Daemon(config, logger, link, cards, reader, undefined);
    const paths = controlPaths({ runtimeDir: config.runtimeDir });
    try {
      daemon.control = await ControlServer.start({ ...paths, handler: daemon, logger });
    } catch (error) {
      await reader.close();
      throw error;
    }
    daemon.wire();
    logger.info('daemon started', {
      server: config.server.url,
      control: paths.socketPath,
      reader: config.reader.transport,
      slots: reader.slotCount,
    });
    return daemon;
  }

  /** The control socket's path (tests and `diag`). */
  get controlSocket(): string {
    return controlPaths({ runtimeDir: this.config.runtimeDir }).socketPath;
  }

  private wire(): void {
    const { link, cardManager } = this;
    const broadcast = (event: Parameters<ControlServer['broadcast']>[0]) => this.control?.broadcast(event);
    link.on('session', (info) => {
      this.offline = false;
      this.lastError = undefined;
      broadcast({
        event: 'connected',
        data: { serverUrl: this.config.server.url, user: this.userName(), deviceId: info.deviceId },
      });
    });
    link.on('down', ({ code, reason }) => {
      broadcast({
        event: 'disconnected',
        data: {
          willReconnect: link.hasToken,
          error: {
            code: 'ERR_SESSION_LOST',
            message: `connection closed (${code}${reason ? ` ${reason}` : ''})`,
          },
        },
      });
    });
    link.on('token-refused', (error) => {
      this.token = undefined;
      this.clearExpiryTimer();
      this.noteError(error);
    });
    link.on('fault', (error) => this.noteError(error));
    link.on('push', (frame) => {
      if (frame.type === 'TOKEN_EXPIRING') void this.onTokenExpiring(frame.tokenExpiresAt);
    });
    cardManager.on('inserted', (c) => broadcast({ event: 'card-inserted', data: cardEventData(c) }));
    cardManager.on('removed', (c) => {
      if (!this.link.sessionInfo && this.link.hasToken) this.offline = true;
      broadcast({ event: 'card-removed', data: cardEventData(c) });
    });
    cardManager.on('taken-over', (c) =>
      broadcast({
        event: 'taken-over',
        data: { cardId: c.cardId, label: c.label, byDeviceName: c.takenOverBy },
      }),
    );
    cardManager.on('blocked', (c) =>
      broadcast({
        event: 'card-blocked',
        data: { cardId: c.cardId, label: c.label, reference: c.reference },
      }),
    );
    cardManager.on('error', (error) => this.noteError(error));
  }

  // --- ControlHandler --------------------------------------------------------------------------

  status(): DaemonStatus {
    const info = this.link.sessionInfo;
    const state = this.link.state;
    const roundTripMs = this.link.roundTripMs;
    return {
      state: this.disconnected
        ? 'offline'
        : !this.link.hasToken
          ? 'logged-out'
          : state === 'connected'
            ? 'connected'
            : this.offline
              ? 'offline'
              : state === 'reconnecting'
                ? 'reconnecting'
                : 'connecting',
      serverUrl: this.config.server.url,
      ...(this.token ? { user: this.userName() } : {}),
      ...(info
        ? { deviceId: info.deviceId, deviceStatus: info.deviceStatus, tokenExpiresAt: info.tokenExpiresAt }
        : {}),
      ...(roundTripMs !== undefined ? { serverRoundTripMs: Math.round(roundTripMs * 10) / 10 } : {}),
      ...(this.lastError ? { lastError: this.lastError } : {}),
      cards: this.cardManager.list(),
    };
  }

  cards(): CardStatus[] {
    return this.cardManager.list();
  }

  async handOverToken(t: TokenHandover): Promise<void> {
    const issuer = t.issuer ?? this.config.login.issuer;
    const clientId = t.clientId ?? this.config.login.clientId;
    this.token = {
      accessToken: t.accessToken,
      refreshToken: t.refreshToken,
      issuer,
      clientId,
      expiresAt: t.expiresAt ?? expiryOf(t.accessToken),
    };
    this.lastError = undefined;
    this.disconnected = false;
    this.link.restart();
    await this.link.setToken(t.accessToken);
    this.armExpiryTimer();
    this.logger.info('token handed over', { renewal: this.link.state === 'connected' });
  }

  async logout(): Promise<void> {
    this.token = undefined;
    this.disconnected = false;
    this.clearExpiryTimer();
    await this.cardManager.closeAll();
    await this.link.stop();
    this.link.restart();
    this.logger.info('logged out');
  }

  async connect(): Promise<void> {
    if (!this.token)
      throw new CardlinkError('ERR_AUTH_TOKEN_INVALID', 'not logged in: run "cardlink login" first');
    if (this.link.state === 'connected') {
      await this.cardManager.claimAll();
      return;
    }
    this.disconnected = false;
    this.link.restart();
    await this.link.setToken(this.token.accessToken);
  }

  async disconnect(): Promise<void> {
    const token = this.token;
    // Offline from the start: while the cards close and the link stops, status must not pass
    // through "connected" without cards or "logged-out" (the link has dropped its token by then).
    this.disconnected = true;
    await this.cardManager.closeAll();
    await this.link.stop();
    this.link.restart();
    this.token = token; // kept for "connect"
  }

  changePin(p: PinChangeParams): Promise<PinResult> {
    return this.pinOperation('change', p.cardId, p.currentPin, p.newPin);
  }

  unblockPin(p: PinUnblockParams): Promise<PinResult> {
    return this.pinOperation('unblock', p.cardId, p.puk, p.newPin);
  }

  /** Self-service enrollment of a card in the reader (the server decides whether it is allowed). */
  async enroll(p: EnrollParams): Promise<EnrollResult> {
    const result = await this.cardManager.enroll(p.cardId);
    this.logger.info('card enrolled', { card: result.cardId, certificates: result.certificates });
    return result;
  }

  /**
   * The set-PIN after a fresh sign-in: the token and the PIN go to the card server, which checks
   * the sign-in's age and the PIN policy (daemon/session/pin-by-sign-in-request.ts). The log line
   * names the card and the outcome only.
   */
  async setPin(p: PinSetParams): Promise<SetPinResult> {
    const { requestPinBySignIn } = await import('./session/pin-by-sign-in-request.js');
    const server = this.config.server;
    const result = await requestPinBySignIn(
      {
        serverUrl: server.url,
        ca: server.caFile ? fs.readFileSync(server.caFile, 'utf8') : undefined,
        certificateSha256: server.certificateSha256,
        timeoutMs: this.config.timeouts.commandSeconds * 1000,
      },
      p.freshAccessToken,
      p.cardId,
      p.newPin,
    );
    this.logger.info('PIN operation', {
      card: p.cardId.slice(0, 64),
      operation: 'set-after-sign-in',
      outcome: result.outcome,
      ...(result.outcome === 'policy' ? { refusal: result.refusal } : {}),
    });
    return result;
  }

  /**
   * CHANGE REFERENCE DATA or RESET RETRY COUNTER on a card in the reader, its answer as a result.
   * The PIN and PUK are in the command only (overwritten once sent) and never logged; the log line
   * names the card, the operation and the outcome.
   */
  private async pinOperation(
    operation: PinOperation,
    cardId: string,
    proof: string,
    newPin: string,
  ): Promise<PinResult> {
    const built = pinOperationCommand(operation, proof, newPin);
    let result: PinResult;
    if ('outcome' in built) result = built.outcome;
    else {
      try {
        const response = await this.cardManager.transmitToCard(cardId, built.command);
        const sw = (response[response.length - 2]! << 8) | response[response.length - 1]!;
        result = pinOperationOutcome(operation, sw);
      } finally {
        built.command.fill(0);
      }
    }
    this.logger.info('PIN operation', {
      card: cardId.slice(0, 64),
      operation,
      outcome: result.outcome,
      ...('triesLeft' in result ? { triesLeft: result.triesLeft } : {}),
    });
    return result;
  }

  /** Stops everything: cards out of the reader, session closed, control socket removed. */
  async close(): Promise<void> {
    this.clearExpiryTimer();
    // Release the cards on the server (bounded), so another device need not wait for a grace period.
    await Promise.race([
      this.cardManager.closeAll(),
      new Promise((r) => setTimeout(r, CLOSE_CARDS_TIMEOUT_MS)),
    ]);
    await this.cardManager.removeAll('the daemon stopped', true, true);
    await this.link.stop();
    await this.control?.close();
    await this.reader.close();
  }

  // --- tokens ----------------------------------------------------------------------------------

  private userName(): string | undefined {
    if (!this.token) return undefined;
    try {
      const claims = decodeJwt(this.token.accessToken);
      const name = claims['preferred_username'] ?? claims['email'] ?? claims.sub;
      return typeof name === 'string' ? name : undefined;
    } catch {
      return undefined;
    }
  }

  private refreshModule(): Promise<typeof import('./login/refresh-token.js')> {
    this.refreshing ??= import('./login/refresh-token.js');
    return this.refreshing;
  }

  private async onTokenExpiring(expiresAt: number): Promise<void> {
    const held = this.token;
    if (!held?.refreshToken || !held.issuer || !held.clientId) {
      this.control?.broadcast({ event: 'token-expiring', data: { expiresAt } });
      return;
    }
    for (let attempt = 1; attempt <= MAX_REFRESH_ATTEMPTS; attempt++) {
      try {
        const { refreshAccessToken } = await this.refreshModule();
        const grant = await refreshAccessToken(
          {
            issuer: held.issuer,
            clientId: held.clientId,
            ...(this.config.login.resource ? { resource: this.config.login.resource } : {}),
            scope: this.config.login.scope,
          },
          held.refreshToken,
          { allowInsecureHttpIssuer: isLoopbackHost(new URL(held.issuer).hostname) },
        );
        if (this.token !== held) return; // logged out or replaced meanwhile
        await this.handOverToken({
          accessToken: grant.accessToken,
          ...(grant.refreshToken ? { refreshToken: grant.refreshToken } : {}),
          expiresAt: grant.expiresAt,
          issuer: held.issuer,
          clientId: held.clientId,
        });
        this.logger.info('access token refreshed');
        return;
      } catch (error) {
        const e =
          error instanceof CardlinkError ? error : new CardlinkError('ERR_IDP_UNAVAILABLE', 'refresh failed');
        this.logger.warn('token refresh failed', { code: e.code, attempt });
        if (e.code === 'ERR_LOGIN_EXPIRED') break;
        await new Promise((r) => setTimeout(r, 1000 * attempt));
      }
    }
    this.control?.broadcast({ event: 'token-expiring', data: { expiresAt } });
  }

  /**
   * Cards out when the token expires while the server is unreachable too (the server closes a
   * connected session itself with 4004).
   */
  private armExpiryTimer(): void {
    this.clearExpiryTimer();
    const expiresAt = this.token?.expiresAt;
    if (!expiresAt) return;
    const ms = Math.min(expiresAt * 1000 - Date.now(), 2 ** 31 - 1);
    this.expiryTimer = setTimeout(
      () => {
        if (this.link.state === 'connected') return; // the server decides (4004 or renewed)
        if (this.token?.expiresAt !== expiresAt) return;
        this.token = undefined;
        void this.link.stop().then(() => this.link.restart());
        void this.cardManager.removeAll('the access token expired', true);
        this.noteError(new CardlinkError('ERR_AUTH_TOKEN_INVALID', 'the access token expired; log in again'));
      },
      Math.max(0, ms),
    );
    this.expiryTimer.unref();
  }

  private clearExpiryTimer(): void {
    clearTimeout(this.expiryTimer);
    this.expiryTimer = undefined;
  }

  private noteError(error: CardlinkError): void {
    this.lastError = { code: error.code, message: error.message };
    this.logger.warn('daemon error', { code: error.code, error: error.message });
    this.control?.broadcast({ event: 'error', data: this.lastError });
  }
}

/**
 * The configured reader: our pcsc-lite driver (it must be running inside pcscd), or a listener for
 * vpcd (loaded only then; it must be up before pcscd starts, docs/reader-vpcd.md).
 */
async function openReader(config: DaemonConfig, logger: Logger): Promise<ReaderSlots> {
  const { reader } = config;
  if (reader.transport === 'vpcd') {
    const { VpcdReader } = await import('./reader/vpcd-reader.js');
    return VpcdReader.open({
      mode: reader.vpcdMode,
      host: reader.vpcdHost,
      port: reader.vpcdPort,
      friendlyName: reader.name,
      maxSlots: reader.slots,
      logger,
    });
  }
  try {
    return await BridgeReader.open({
      socketPath: reader.bridgeSocket,
      friendlyName: reader.name,
      maxSlots: reader.slots,
      logger,
    });
  } catch (error) {
    throw new CardlinkError(
      'ERR_READER_DRIVER_MISSING',
      `the cardlink reader driver is not listening on ${reader.bridgeSocket}: is pcscd running with it? ` +
        '(install-scripts/debian/setup.sh registers it)',
      {
        socket: reader.bridgeSocket,
        cause: error instanceof CardlinkError ? error.code : 'connect',
      },
    );
  }
}

function cardEventData(c: CardStatus) {
  return {
    cardId: c.cardId,
    label: c.label,
    ...(c.slot !== undefined ? { slot: c.slot } : {}),
    ...(c.readerName ? { readerName: c.readerName } : {}),
  };
}

/** `exp` of a JWT access token, if it is one (for the local expiry timer only; never trusted). */
function expiryOf(accessToken: string): number | undefined {
  try {
    const exp = decodeJwt(accessToken).exp;
    return typeof exp === 'number' ? exp : undefined;
  } catch {
    return undefined;
  }
}
