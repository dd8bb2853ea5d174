/**
 * The icon and its menu on the desktop's tray, through systray2. systray2 builds the menu once
 * from the first view and afterwards only updates, hides and shows those entries, so this module
 * creates one entry per TRAY_MENU_LAYOUT slot and sends, for each new view, only the entries that
 * changed (and the icon and tooltip when they did). A click is reported as the action the
 * current view gives that entry.
 *
 * Starting can fail in ways systray2 does not report: with no display the program exits before
 * it is ready, and `ready()` then never settles. TrayMenu.start waits for whichever comes first
 * (ready, the program's exit or spawn error, `readyTimeoutMs`) and rejects with
 * ERR_TRAY_HOST_UNAVAILABLE and the program's last words.
 *
 * On Linux, libappindicator has no tooltip: the state is in the icon and the menu's first line
 * there (docs/tray.md); the tooltip shows on Windows and macOS.
 */
import { EventEmitter } from 'node:events';
import systray2, { type ClickEvent, type MenuItem } from 'systray2';
import { CardlinkError } from '../protocol/errors.js';
import { prepareTrayProgram } from './tray-binary.js';
import {
  TRAY_MENU_LAYOUT,
  type TrayAction,
  type TrayIconState,
  type TrayItemKey,
  type TrayItemView,
  type TrayView,
} from './tray-state.js';

// A CommonJS module: its class is the `default` member of what an ES import gets.
const SysTray = systray2.default;
type SysTrayType = InstanceType<typeof SysTray>;

/** How long the tray program may take to come up before the tray goes on without an icon. */
export const TRAY_READY_TIMEOUT_MS = 15_000;
/** How long Quit waits for the tray program to exit before it is killed. */
const EXIT_TIMEOUT_MS = 3000;
/** What is kept of the program's stderr for error messages. */
const STDERR_TAIL_BYTES = 2048;

export interface TrayMenuOptions {
  /** PNG (base64) per icon state. */
  icons: Readonly<Record<TrayIconState, string>>;
  /** Private directory for the tray program's copy (tray-binary.ts). */
  cacheDir: string;
  readyTimeoutMs?: number;
}

export interface TrayMenuEvents {
  /** An entry with an action was clicked. */
  action: [TrayAction];
  /** The tray program ended on its own (the desktop session or the panel went away). */
  lost: [CardlinkError];
}

interface Entry extends MenuItem {
  /** The layout slot (kept through systray2's Object.assign of the clicked item). */
  slot: TrayItemKey | '-';
}

function unavailable(message: string): CardlinkError {
  return new CardlinkError('ERR_TRAY_HOST_UNAVAILABLE', message);
}

/** Why no tray can show at all, before trying (no graphical session on Linux). */
export function missingDisplay(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (process.platform !== 'linux') return undefined;
  if (env['DISPLAY'] || env['WAYLAND_DISPLAY']) return undefined;
  return 'no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)';
}

export class TrayMenu extends EventEmitter<TrayMenuEvents> {
  private readonly entries = new Map<TrayItemKey, Entry>();
  private view: TrayView;
  /** systray2 sends asynchronously; one after another keeps updates in order. */
  private sending: Promise<unknown> = Promise.resolve();
  private exited = false;

  private constructor(
    private readonly tray: SysTrayType,
    private readonly allEntries: Entry[],
    private readonly options: TrayMenuOptions,
    first: TrayView,
  ) {
    super();
    this.view = first;
    for (const entry of allEntries) if (entry.slot !== '-') this.entries.set(entry.slot, entry);
  }

  /** Starts the tray program with `view`; rejects with ERR_TRAY_HOST_UNAVAILABLE when it cannot show. */
  static async start(view: TrayView, options: TrayMenuOptions): Promise<TrayMenu> {
    const noDisplay = missingDisplay();
    if (noDisplay) throw unavailable(noDisplay);
    const copyDir = prepareTrayProgram(options.cacheDir);
    const entries: Entry[] = TRAY_MENU_LAYOUT.map((slot) =>
      slot === '-' ? { ...SysTray.separator, slot } : { slot, tooltip: '', ...itemFields(view.items[slot]) },
    );
    const tray = new SysTray({
      menu: {
        icon: options.icons[view.icon],
        // No title: on Linux it becomes a text label beside the icon in some panels.
        title: '',
        tooltip: view.tooltip,
        items: entries,
      },
      copyDir,
    });
    const menu = new TrayMenu(tray, entries, options, view);
    await menu.waitUntilReady(options.readyTimeoutMs ?? TRAY_READY_TIMEOUT_MS);
    await tray.onClick((click) => menu.onClick(click));
    return menu;
  }

  /** Shows `view`: sends what differs from the last one. */
  update(view: TrayView): void {
    if (this.exited) return;
    const before = this.view;
    this.view = view;
    if (view.icon !== before.icon || view.tooltip !== before.tooltip) {
      this.send({
        type: 'update-menu',
        menu: {
          icon: this.options.icons[view.icon],
          title: '',
          tooltip: view.tooltip,
          items: this.allEntries,
        },
      });
    }
    for (const [slot, entry] of this.entries) {
      const next = view.items[slot];
      const last = before.items[slot];
      if (next.title === last.title && next.enabled === last.enabled && next.hidden === last.hidden) continue;
      Object.assign(entry, itemFields(next));
      this.send({ type: 'update-item', item: entry });
    }
  }

  /** The tray program's process id (tests find its windows by it). */
  get pid(): number | undefined {
    return this.tray.process?.pid;
  }

  /** Removes the icon: asks the program to exit, kills it if it does not. */
  async close(): Promise<void> {
    const child = this.tray.process;
    if (!child || this.exited || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    this.exited = true;
    await this.sending;
    void this.tray.kill(false).catch(() => undefined);
    // SIGKILL, not SIGTERM: on SIGTERM the program prints a line systray2 cannot parse.
    const timer = setTimeout(() => child.kill('SIGKILL'), EXIT_TIMEOUT_MS);
    await exited;
    clearTimeout(timer);
  }

  private send(action: Parameters<SysTrayType['sendAction']>[0]): void {
    this.sending = this.sending.then(() => this.tray.sendAction(action)).catch(() => undefined);
  }

  private onClick(click: ClickEvent): void {
    const slot = (click.item as Entry).slot;
    if (slot === undefined || slot === '-') return;
    const action = this.view.items[slot].action;
    if (action && this.view.items[slot].enabled) this.emit('action', action);
  }

  private async waitUntilReady(timeoutMs: number): Promise<void> {
    const child = await this.waitForProcess(timeoutMs);
    // A write after the program died (an update racing its exit) must not crash the tray.
    child.stdin?.on('error', () => undefined);
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr = (stderr + chunk.toString()).slice(-STDERR_TAIL_BYTES);
    });
    const lastWords = () => {
      const line = stderr
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !/CRITICAL|assertion/.test(l))
        .pop();
      return line ? `: ${line}` : '';
    };
    let timer: NodeJS.Timeout | undefined;
    const failed = new Promise<never>((_, reject) => {
      child.once('error', (error: NodeJS.ErrnoException) =>
        reject(unavailable(`the tray program could not start (${error.code ?? error.message})`)),
      );
      child.once('exit', (code, signal) =>
        reject(unavailable(`the tray program exited (${signal ?? `status ${code}`})${lastWords()}`)),
      );
      timer = setTimeout(
        () => reject(unavailable(`the tray program was not ready within ${timeoutMs} ms${lastWords()}`)),
        timeoutMs,
      );
      // It may have ended before these listeners were there.
      if (child.exitCode !== null || child.signalCode !== null)
        reject(unavailable(`the tray program exited (${child.signalCode ?? `status ${child.exitCode}`})`));
    });
    try {
      await Promise.race([this.tray.ready(), failed]);
    } catch (error) {
      this.exited = true;
      if (child.exitCode === null) child.kill('SIGKILL');
      throw error instanceof CardlinkError
        ? error
        : unavailable(`the tray program could not start (${(error as Error).message})`);
    } finally {
      clearTimeout(timer);
    }
    child.once('exit', (code, signal) => {
      if (this.exited) return;
      this.exited = true;
      this.emit('lost', unavailable(`the tray program exited (${signal ?? `status ${code}`})${lastWords()}`));
    });
  }

  /** systray2 spawns its program after a few file checks; wait for the process object. */
  private async waitForProcess(timeoutMs: number) {
    const deadline = Date.now() + timeoutMs;
    while (!this.tray.process) {
      if (Date.now() > deadline) throw unavailable('systray2 did not start its tray program');
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.tray.process;
  }
}

function itemFields(item: TrayItemView): Pick<MenuItem, 'title' | 'enabled' | 'hidden'> {
  return { title: item.title, enabled: item.enabled, hidden: item.hidden };
}
