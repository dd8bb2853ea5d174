/**
 * A real, private X desktop for a tray test: Xvfb on a display it picks itself (-displayfd, so
 * parallel tests never collide), a D-Bus session bus of its own (`dbus-daemon --session`),
 * optionally trayer as the tray host (an XEmbed system tray in a panel at the top right) and
 * dunst as the notification server, which runs a script for each notification so the test can
 * read what arrived. Helpers drive it the way a person would: xdotool for the mouse and keys,
 * ImageMagick `import` for screenshots, and tesseract to read the text of a menu.
 *
 * Nothing here touches the desktop of whoever runs the tests: every program gets this session's
 * DISPLAY and DBUS_SESSION_BUS_ADDRESS explicitly.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { firstLine, stopChild } from './child-process.js';

const run = promisify(execFile);
const READY_TIMEOUT_MS = 20_000;
const POLL_MS = 100;

export interface DesktopSessionOptions {
  /** An existing directory for the session's files. */
  dir: string;
  /** Start trayer (the tray host). */
  trayHost: boolean;
  /** Start dunst (the notification server). */
  notifications: boolean;
}

export interface RecordedNotification {
  appName: string;
  summary: string;
  body: string;
  urgency: string;
}

export interface WindowGeometry {
  id: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

/** One line of text tesseract read, with its box in screen coordinates. */
export interface ReadLine {
  text: string;
  x: number;
  y: number;
  width: number;
  height: number;
}

export interface DesktopSession {
  readonly display: string;
  readonly busAddress: string;
  /** DISPLAY and DBUS_SESSION_BUS_ADDRESS of this session. */
  readonly env: { DISPLAY: string; DBUS_SESSION_BUS_ADDRESS: string };
  /** Runs an X client of this session and returns its stdout. */
  x(command: string, args: string[]): Promise<string>;
  /** What dunst received so far. */
  notifications(): RecordedNotification[];
  waitForNotification(
    predicate: (n: RecordedNotification) => boolean,
    timeoutMs?: number,
  ): Promise<RecordedNotification>;
  /** The visible windows of a process (by _NET_WM_PID), with their screen geometry. */
  windowsOf(pid: number, options?: { onlyVisible?: boolean }): Promise<WindowGeometry[]>;
  /** The names of a window's ancestors, nearest first (to tell that an icon sits in trayer's panel). */
  ancestorNames(id: string): Promise<string[]>;
  /** Moves the pointer to (x, y) and clicks button 1. */
  click(x: number, y: number): Promise<void>;
  key(name: string): Promise<void>;
  /** Writes a PNG of the whole screen, or of `crop` of it. */
  screenshot(file: string, crop?: { x: number; y: number; width: number; height: number }): Promise<void>;
  /** RGB of each pixel in `area` of a fresh screenshot, row by row. */
  pixels(area: { x: number; y: number; width: number; height: number }): Promise<[number, number, number][]>;
  /** The lines of text in `area` of the screen, read by tesseract. */
  readText(area: { x: number; y: number; width: number; height: number }): Promise<ReadLine[]>;
  stop(): Promise<void>;
}

async function until<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = READY_TIMEOUT_MS,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

export async function startDesktopSession(options: DesktopSessionOptions): Promise<DesktopSession> {
  const { dir } = options;
  const children: ChildProcess[] = [];
  const stop = async () => {
    for (const child of children.reverse()) await stopChild(child);
    children.length = 0;
  };
  try {
    // Xvfb writes the display number it found free to fd 3. -noreset: by default it resets (and
    // forgets the root's colour) whenever its last client leaves, e.g. right after xsetroot.
    const xvfb = spawn(
      'Xvfb',
      ['-displayfd', '3', '-screen', '0', '1024x640x24', '-nolisten', 'tcp', '-noreset'],
      {
        stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
      },
    );
    children.push(xvfb);
    let xvfbErr = '';
    xvfb.stderr!.on('data', (d: Buffer) => (xvfbErr = (xvfbErr + d.toString()).slice(-2000)));
    const number = await firstLine(
      xvfb,
      'Xvfb',
      READY_TIMEOUT_MS,
      xvfb.stdio[3] as NodeJS.ReadableStream,
    ).catch((e: Error) => {
      throw new Error(`${e.message}\n${xvfbErr}`);
    });
    const display = `:${number}`;

    const bus = spawn('dbus-daemon', ['--session', '--nofork', '--nopidfile', '--print-address=1'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    children.push(bus);
    const busAddress = await firstLine(bus, 'dbus-daemon', READY_TIMEOUT_MS);
    const env = { DISPLAY: display, DBUS_SESSION_BUS_ADDRESS: busAddress };
    const childEnv = { ...process.env, ...env };
    const x = async (command: string, args: string[]) =>
      (await run(command, args, { env: childEnv, encoding: 'utf8', timeout: 30_000 })).stdout;
    // A desktop colour instead of black, so screenshots look like a desktop.
    await x('xsetroot', ['-solid', '#56606e']);

    if (options.trayHost) {
      const trayer = spawn(
        'trayer',
        [
          '--edge',
          'top',
          '--align',
          'right',
          '--widthtype',
          'request',
          '--height',
          '32',
          '--SetDockType',
          'true',
          '--transparent',
          'false',
          '--expand',
          'true',
        ],
        { env: childEnv, stdio: 'ignore' },
      );
      children.push(trayer);
      await until('trayer panel', async () =>
        (await x('xwininfo', ['-root', '-tree'])).includes('"panel"') ? true : undefined,
      );
    }

    const record = path.join(dir, 'notifications.tsv');
    if (options.notifications) {
      const script = path.join(dir, 'record-notification.sh');
      // dunst runs it with: appname summary body icon urgency.
      fs.writeFileSync(
        script,
        `#!/bin/sh\nprintf '%s\\t%s\\t%s\\t%s\\n' "$1" "$2" "$3" "$5" >> '${record}'\n`,
        {
          mode: 0o755,
        },
      );
      const config = path.join(dir, 'dunstrc');
      fs.writeFileSync(
        config,
        [
          '[global]',
          '    font = DejaVu Sans 9',
          '    width = 420',
          '    origin = top-left',
          '    offset = 10x10',
          '    notification_limit = 4',
          '    frame_width = 1',
          '    frame_color = "#555555"',
          '[record]',
          '    summary = "*"',
          `    script = ${script}`,
          '',
        ].join('\n'),
      );
      const dunst = spawn('dunst', ['-config', config], { env: childEnv, stdio: 'ignore' });
      children.push(dunst);
      // Nobody notifies before dunst owns the name: the bus would activate a server of its own.
      await until('dunst on the session bus', async () =>
        (
          await x('gdbus', [
            'call',
            '--session',
            '--dest=org.freedesktop.DBus',
            '--object-path=/org/freedesktop/DBus',
            '--method=org.freedesktop.DBus.NameHasOwner',
            'org.freedesktop.Notifications',
          ])
        ).includes('true')
          ? true
          : undefined,
      );
    }

    const notifications = (): RecordedNotification[] =>
      fs.existsSync(record)
        ? fs
            .readFileSync(record, 'utf8')
            .split('\n')
            .filter(Boolean)
            .map((line) => {
              const [appName = '', summary = '', body = '', urgency = ''] = line.split('\t');
              return { appName, summary, body, urgency };
            })
        : [];

    const geometry = async (id: string): Promise<WindowGeometry> => {
      const out = await x('xdotool', ['getwindowgeometry', '--shell', id]);
      const v = (k: string) => Number(new RegExp(`^${k}=(-?\\d+)$`, 'm').exec(out)?.[1]);
      return { id, x: v('X'), y: v('Y'), width: v('WIDTH'), height: v('HEIGHT') };
    };

    const shot = async (file: string, crop?: { x: number; y: number; width: number; height: number }) => {
      await x('import', ['-window', 'root', file]);
      if (crop)
        await x('convert', [
          file,
          '-crop',
          `${crop.width}x${crop.height}+${crop.x}+${crop.y}`,
          '+repage',
          file,
        ]);
    };

    let shots = 0;
    const scratch = () => path.join(dir, `scratch-${process.pid}-${shots++}.png`);

    return {
      display,
      busAddress,
      env,
      x,
      notifications,
      async waitForNotification(predicate, timeoutMs = READY_TIMEOUT_MS) {
        return until('notification', async () => notifications().find(predicate), timeoutMs).catch(
          (e: Error) => {
            throw new Error(`${e.message}; received: ${JSON.stringify(notifications())}`);
          },
        );
      },
      async windowsOf(pid, { onlyVisible = true } = {}) {
        const out = await x('xdotool', [
          'search',
          ...(onlyVisible ? ['--onlyvisible'] : []),
          '--pid',
          String(pid),
        ]).catch(() => '');
        const ids = out.split('\n').filter(Boolean);
        return Promise.all(ids.map(geometry));
      },
      async ancestorNames(id) {
        const names: string[] = [];
        let current = id;
        for (let depth = 0; depth < 10; depth++) {
          const out = await x('xwininfo', ['-tree', '-id', current]);
          const parent = /Parent window id: (0x[0-9a-f]+) ?(.*)$/m.exec(out);
          if (!parent || parent[1] === '0x0') break;
          names.push(parent[2]!.replace(/^"|"$/g, '').replace(/^\(has no name\)$/, ''));
          if (/\(the root window\)/.test(parent[2]!)) break;
          current = parent[1]!;
        }
        return names;
      },
      async click(px, py) {
        await x('xdotool', ['mousemove', '--sync', String(Math.round(px)), String(Math.round(py))]);
        await x('xdotool', ['click', '1']);
      },
      async key(name) {
        await x('xdotool', ['key', name]);
      },
      screenshot: shot,
      async pixels(area) {
        const file = scratch();
        try {
          await shot(file, area);
          const raw = await run('convert', [file, '-depth', '8', 'rgb:-'], {
            encoding: 'buffer',
            maxBuffer: 64 << 20,
          });
          const bytes = raw.stdout as unknown as Buffer;
          const out: [number, number, number][] = [];
          for (let i = 0; i + 2 < bytes.length; i += 3) out.push([bytes[i]!, bytes[i + 1]!, bytes[i + 2]!]);
          return out;
        } finally {
          fs.rmSync(file, { force: true });
        }
      },
      async readText(area) {
        const file = scratch();
        const scale = 3;
        try {
          await shot(file, area);
          // Larger and grey reads best; tesseract's TSV gives each word's box.
          await x('convert', [file, '-resize', `${scale * 100}%`, '-colorspace', 'Gray', file]);
          const tsv = await x('tesseract', [file, '-', '--psm', '6', 'tsv']);
          const lines = new Map<
            string,
            { words: string[]; x0: number; y0: number; x1: number; y1: number }
          >();
          for (const row of tsv.split('\n').slice(1)) {
            const f = row.split('\t');
            if (f.length < 12 || f[0] !== '5' || !f[11]!.trim()) continue;
            const key = `${f[2]}.${f[3]}.${f[4]}`;
            const [left, top, width, height] = [Number(f[6]), Number(f[7]), Number(f[8]), Number(f[9])];
            const line = lines.get(key) ?? {
              words: [],
              x0: left,
              y0: top,
              x1: left + width,
              y1: top + height,
            };
            line.words.push(f[11]!.trim());
            line.x0 = Math.min(line.x0, left);
            line.y0 = Math.min(line.y0, top);
            line.x1 = Math.max(line.x1, left + width);
            line.y1 = Math.max(line.y1, top + height);
            lines.set(key, line);
          }
          return [...lines.values()].map((l) => ({
            text: l.words.join(' '),
            x: area.x + l.x0 / scale,
            y: area.y + l.y0 / scale,
            width: (l.x1 - l.x0) / scale,
            height: (l.y1 - l.y0) / scale,
          }));
        } finally {
          fs.rmSync(file, { force: true });
        }
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}
