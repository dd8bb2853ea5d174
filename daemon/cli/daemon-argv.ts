/**
 * `cardlink daemon ...` read without yargs, so the daemon's process never loads it (bin/main.ts).
 *
 * Only a command line this reader takes exactly as yargs would is read here: `daemon` and then
 * the options of daemon-options.ts in their own spelling (`--name value`, `--name=value`, `--check`),
 * each at most once, `--log-level` one of its choices. Anything else (`--help`, an unknown or
 * repeated option, `--no-check`, camelCase, a positional, `--`, a bad choice) returns undefined and
 * the yargs program reads it, with yargs' own help and error messages: the two readers never
 * disagree, because this one only answers where there is nothing to disagree about.
 */
import { parseArgs } from 'node:util';
import type { DaemonArgs } from './daemon-commands.js';
import { COMMON_OPTIONS, DAEMON_OPTIONS, type OptionSpec } from './daemon-options.js';

const OPTIONS: Readonly<Record<string, OptionSpec>> = { ...COMMON_OPTIONS, ...DAEMON_OPTIONS };

/** The daemon's arguments from `argv` (without node and the script), or undefined: ask yargs. */
export function daemonArgsWithoutYargs(argv: readonly string[]): DaemonArgs | undefined {
  if (argv[0] !== 'daemon') return undefined;
  const rest = argv.slice(1);
  if (rest.includes('--')) return undefined;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: rest,
      options: Object.fromEntries(
        Object.entries(OPTIONS).map(([name, spec]) => [name, { type: spec.type ?? 'string' }]),
      ),
      strict: true,
      allowPositionals: false,
      tokens: true,
    });
  } catch {
    return undefined; // unknown option, missing value, a value that looks like an option, ...
  }
  const seen = new Set<string>();
  for (const token of parsed.tokens ?? []) {
    if (token.kind !== 'option') return undefined;
    if (seen.has(token.name)) return undefined; // yargs makes a list of a repeated option
    seen.add(token.name);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  for (const [name, spec] of Object.entries(OPTIONS)) {
    const value = values[name];
    if (spec.choices && value !== undefined && !spec.choices.includes(value as string)) return undefined;
  }
  const args: Record<string, string | boolean | undefined> = {};
  for (const [name, spec] of Object.entries(OPTIONS)) args[name] = values[name] ?? spec.default;
  return args as unknown as DaemonArgs;
}
