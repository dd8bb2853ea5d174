/**
 * What the daemon's commands share once they run: the settings from the common options, a control
 * connection to the running daemon, and printing a line without control characters.
 */
import { escapeControlCharacters } from '../../protocol/control-characters.js';
import { loadDaemonConfig, type DaemonConfig, type DaemonFlags } from '../config/daemon-config.js';
import { ControlClient } from '../control/control-client.js';
import { controlPaths } from '../control/control-paths.js';
import type { CommonArgs } from './daemon-commands.js';

export function configFrom(args: CommonArgs, extra: DaemonFlags = {}): DaemonConfig {
  return loadDaemonConfig({ config: args.config, runtimeDir: args['runtime-dir'], ...extra });
}

export async function withDaemon<T>(
  config: DaemonConfig,
  work: (c: ControlClient) => Promise<T>,
): Promise<T> {
  const client = await ControlClient.connect({
    ...controlPaths({ runtimeDir: config.runtimeDir }),
    clientName: 'cardlink-cli',
  });
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

export const out = (line: string) => process.stdout.write(`${escapeControlCharacters(line)}\n`);
