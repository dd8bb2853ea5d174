/**
 * `cardlink tray`: the desktop's icon for the daemon (docs/tray.md). Runs until Quit, SIGINT or
 * SIGTERM. Kept light: the tray itself is loaded only when the command runs.
 */
import os from 'node:os';
import path from 'node:path';
import type { Argv, CommandModule } from 'yargs';
import { common, type CommonArgs } from '../../daemon/cli/daemon-commands.js';

type TrayArgs = CommonArgs;

/** The tray's private cache: `$XDG_CACHE_HOME/cardlink/tray`, else `~/.cache/cardlink/tray`. */
export function trayCacheDirectory(env: NodeJS.ProcessEnv = process.env): string {
  const base =
    env['XDG_CACHE_HOME'] && path.isAbsolute(env['XDG_CACHE_HOME'])
      ? env['XDG_CACHE_HOME']
      : path.join(os.homedir(), '.cache');
  return path.join(base, 'cardlink', 'tray');
}

/**
 * systray2 parses each line its tray program prints as JSON, in an event handler: a line that is
 * not (the program prints "Quit" when a terminal's Ctrl-C or a service stop reaches it with
 * SIGINT or SIGTERM) throws there, out of reach of any caller. Only that error is dropped here;
 * any other uncaught error still ends the tray with its message.
 */
function ignoreTrayProgramNoise(out: (line: string) => void): void {
  process.on('uncaughtException', (error) => {
    if (error instanceof SyntaxError && /[\\/]systray2[\\/]/.test(error.stack ?? '')) return;
    out(`cardlink tray: unexpected error: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(70); // EX_SOFTWARE
  });
}

export const trayCommand: CommandModule<object, TrayArgs> = {
  command: 'tray',
  describe: "Show the daemon's state in the desktop's tray, with a menu and notifications",
  builder: (y) => common(y) as Argv<TrayArgs>,
  handler: async (args) => {
    const { loadDaemonConfig } = await import('../../daemon/config/daemon-config.js');
    const { escapeControlCharacters } = await import('../../protocol/control-characters.js');
    const { TrayApp } = await import('../tray-app.js');
    const out = (line: string) => process.stdout.write(`${escapeControlCharacters(line)}\n`);
    const config = loadDaemonConfig({ config: args.config, runtimeDir: args['runtime-dir'] });
    ignoreTrayProgramNoise(out);
    const app = await TrayApp.start({ config, cacheDir: trayCacheDirectory(), out });
    const signalled = new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
    await Promise.race([app.done, signalled]);
    await app.stop();
    out('cardlink tray: stopped');
  },
};
