/**
 * Puts text on the desktop's clipboard with the tool the session has: `wl-copy` under Wayland,
 * `xclip` or `xsel` under X11. None is a dependency: where none exists (or none works) the caller
 * shows the text instead, so nothing is lost. The text goes to the tool's stdin, never its argv.
 */
import { spawn } from 'node:child_process';

/** How long a clipboard tool may take before the tray gives up on it. */
export const CLIPBOARD_TIMEOUT_MS = 3000;

interface ClipboardTool {
  readonly command: string;
  readonly args: readonly string[];
}

/** The tools worth trying in this session, in order. */
export function clipboardTools(env: NodeJS.ProcessEnv = process.env): ClipboardTool[] {
  const tools: ClipboardTool[] = [];
  if (env['WAYLAND_DISPLAY']) tools.push({ command: 'wl-copy', args: [] });
  if (env['DISPLAY'])
    tools.push(
      { command: 'xclip', args: ['-selection', 'clipboard'] },
      { command: 'xsel', args: ['--clipboard', '--input'] },
    );
  return tools;
}

function copyWith(tool: ClipboardTool, text: string): Promise<boolean> {
  return new Promise((resolve) => {
    try {
      // xclip and xsel stay behind to serve the selection: detached, with no pipes kept open.
      const child = spawn(tool.command, [...tool.args], {
        stdio: ['pipe', 'ignore', 'ignore'],
        detached: true,
      });
      const timer = setTimeout(() => resolve(false), CLIPBOARD_TIMEOUT_MS);
      child.once('error', () => {
        clearTimeout(timer);
        resolve(false);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        resolve(code === 0);
      });
      child.stdin!.on('error', () => undefined);
      child.stdin!.end(text);
      child.unref();
    } catch {
      resolve(false);
    }
  });
}

/** Copies `text`; resolves true when a tool took it. Never throws. */
export async function copyToClipboard(text: string, env: NodeJS.ProcessEnv = process.env): Promise<boolean> {
  for (const tool of clipboardTools(env)) if (await copyWith(tool, text)) return true;
  return false;
}
