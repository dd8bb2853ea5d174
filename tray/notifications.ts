/**
 * Desktop notifications on Linux: `org.freedesktop.Notifications.Notify` on the user's D-Bus
 * session bus (the freedesktop Desktop Notifications Specification 1.2), which GNOME, KDE, Xfce,
 * dunst, mako and others serve. Spoken with @homebridge/dbus-native, a D-Bus client in plain
 * JavaScript (no native build, maintained), rather than by running `notify-send` or `gdbus` for
 * each notice: one connection, and no dependency on what else the desktop happens to install.
 *
 * Text from the server (card labels, device names) reaches the body; servers that announce
 * `body-markup` would read `<`, `>` and `&` in it as markup, so the body is escaped for them.
 * Notices of one topic replace each other (the server's `replaces_id`): "unreachable" is replaced
 * by "back online", not stacked under it.
 */
import { createRequire } from 'node:module';
import type { EventEmitter } from 'node:events';
import { CardlinkError } from '../protocol/errors.js';
import type { TrayNotice } from './tray-state.js';

/** The name notifications appear under (the spec's app_name). */
export const NOTIFY_APP_NAME = 'cardlink';
/** How long one call to the notification server may take before it counts as failed. */
export const NOTIFY_CALL_TIMEOUT_MS = 5000;

const NOTIFICATIONS = {
  destination: 'org.freedesktop.Notifications',
  path: '/org/freedesktop/Notifications',
  interface: 'org.freedesktop.Notifications',
} as const;

/** The spec's urgency hint values (section "Urgency Levels"). */
const URGENCY: Record<TrayNotice['urgency'], number> = { low: 0, normal: 1, critical: 2 };

/** Which notices replace each other. */
const TOPIC: Record<TrayNotice['kind'], string> = {
  'taken-over': 'card',
  'card-blocked': 'pin',
  'session-expiring': 'session',
  'session-ended': 'session',
  'server-unreachable': 'connection',
  'back-online': 'connection',
  info: 'info',
};

// The parts of @homebridge/dbus-native used here (its own typings only declare systemBus).
interface DbusCall {
  destination: string;
  path: string;
  interface: string;
  member: string;
  signature?: string;
  body?: unknown[];
}
interface DbusBus {
  /** The callback gets the reply's out arguments one by one after the error. */
  invoke(
    call: DbusCall,
    callback: (error: { name?: string; message?: unknown } | null | undefined, ...out: unknown[]) => void,
  ): void;
  connection: EventEmitter & { end(): void };
}
interface DbusNative {
  sessionBus(options: { busAddress?: string }): DbusBus;
}
const dbus = createRequire(import.meta.url)('@homebridge/dbus-native') as DbusNative;

export interface DesktopNotifierOptions {
  /** Default: DBUS_SESSION_BUS_ADDRESS. */
  busAddress?: string;
  /** Icon file shown with each notice, per notice kind (absolute paths). */
  icons?: Partial<Record<TrayNotice['kind'], string>>;
}

function unavailable(message: string): CardlinkError {
  return new CardlinkError('ERR_NOTIFICATIONS_UNAVAILABLE', message);
}

/** Escapes text for a notification body that the server reads as markup. */
export function escapeBodyMarkup(text: string): string {
  return text.replace(/[&<>]/g, (c) => (c === '&' ? '&amp;' : c === '<' ? '&lt;' : '&gt;'));
}

export class DesktopNotifier {
  private readonly replaces = new Map<string, number>();
  private readonly queues = new Map<string, Promise<number>>();
  private closed = false;

  private constructor(
    private readonly bus: DbusBus,
    private readonly markup: boolean,
    /** The server's name and version (GetServerInformation), for the tray's log line. */
    readonly server: string,
    private readonly icons: DesktopNotifierOptions['icons'],
  ) {
    bus.connection.on('end', () => (this.closed = true));
  }

  /**
   * Connects to the session bus and asks the notification server who it is. Rejects with
   * ERR_NOTIFICATIONS_UNAVAILABLE when there is no session bus or nothing serves notifications.
   */
  static async open(options: DesktopNotifierOptions = {}): Promise<DesktopNotifier> {
    const busAddress = options.busAddress ?? process.env['DBUS_SESSION_BUS_ADDRESS'];
    if (!busAddress) throw unavailable('no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)');
    let bus: DbusBus;
    try {
      bus = dbus.sessionBus({ busAddress });
    } catch (error) {
      throw unavailable(`cannot reach the D-Bus session bus: ${(error as Error).message}`);
    }
    try {
      const info = (await call(bus, { ...NOTIFICATIONS, member: 'GetServerInformation' })) as string[];
      const [capabilities] = (await call(bus, { ...NOTIFICATIONS, member: 'GetCapabilities' })) as [string[]];
      return new DesktopNotifier(
        bus,
        capabilities.includes('body-markup'),
        `${info[0] ?? 'unknown'} ${info[2] ?? ''}`.trim(),
        options.icons,
      );
    } catch (error) {
      bus.connection.end();
      throw error;
    }
  }

  /** Shows `notice`; resolves with the server's id for it. */
  notify(notice: TrayNotice): Promise<number> {
    // One topic's notices go one after another: the next must know the id it replaces.
    const topic = TOPIC[notice.kind];
    const sent = (this.queues.get(topic) ?? Promise.resolve())
      .catch(() => undefined)
      .then(() => this.send(topic, notice));
    this.queues.set(topic, sent);
    return sent;
  }

  private async send(topic: string, notice: TrayNotice): Promise<number> {
    if (this.closed) throw unavailable('the D-Bus session bus connection is closed');
    const [id] = (await call(this.bus, {
      ...NOTIFICATIONS,
      member: 'Notify',
      signature: 'susssasa{sv}i',
      body: [
        NOTIFY_APP_NAME,
        this.replaces.get(topic) ?? 0,
        this.icons?.[notice.kind] ?? '',
        notice.summary,
        this.markup ? escapeBodyMarkup(notice.body) : notice.body,
        [], // no actions: the tray's menu is where things are done
        [['urgency', ['y', URGENCY[notice.urgency]]]],
        -1, // the server's default display time
      ],
    })) as [number];
    this.replaces.set(topic, id);
    return id;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.bus.connection.end();
  }
}

/**
 * One method call, with a timeout (a bus that never answers must not hang the tray); resolves
 * with the reply's out arguments.
 */
function call(bus: DbusBus, message: DbusCall): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error) => finish(unavailable(`the D-Bus session bus failed: ${error.message}`));
    const timer = setTimeout(
      () =>
        finish(
          unavailable(
            `the notification server did not answer ${message.member} in ${NOTIFY_CALL_TIMEOUT_MS} ms`,
          ),
        ),
      NOTIFY_CALL_TIMEOUT_MS,
    );
    let done = false;
    function finish(error: CardlinkError | undefined, out: unknown[] = []) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      bus.connection.off('error', onError);
      if (error) reject(error);
      else resolve(out);
    }
    bus.connection.on('error', onError);
    bus.invoke(message, (error, ...out) => {
      if (error) {
        const detail = error.name ?? String(error.message ?? error);
        finish(unavailable(`${message.member} on ${NOTIFICATIONS.destination} failed: ${detail}`));
      } else finish(undefined, out);
    });
  });
}
