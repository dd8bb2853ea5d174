/**
 * The options of `cardlink daemon` (and the two every command that finds the daemon takes), defined
 * once as plain data: daemon-commands.ts gives them to yargs, daemon-argv.ts reads them without
 * yargs for the daemon's own start (yargs is about 4 MiB of a process that idles for hours).
 */

/** One option as both readers take it (the yargs option fields used here). */
export interface OptionSpec {
  /** Without a type (an option with choices) the value is a string. */
  readonly type?: 'string' | 'boolean';
  readonly describe?: string;
  readonly choices?: readonly string[];
  readonly default?: boolean;
}

/** The options every command that finds the daemon takes (the daemon's, the CLI's and the tray's). */
export const COMMON_OPTIONS = {
  config: { type: 'string', describe: 'daemon config file (default ~/.config/cardlink/daemon.json)' },
  'runtime-dir': {
    type: 'string',
    describe: 'directory of the control socket (default $XDG_RUNTIME_DIR/cardlink)',
  },
} as const satisfies Record<string, OptionSpec>;

/** `cardlink daemon`'s own options, besides COMMON_OPTIONS. */
export const DAEMON_OPTIONS = {
  'server-url': { type: 'string', describe: 'card server URL (https://...)' },
  'server-ca': { type: 'string', describe: "PEM file to trust for the server's certificate" },
  'server-cert-sha256': { type: 'string', describe: "SHA-256 pin of the server's certificate" },
  'state-dir': { type: 'string', describe: 'where the device key lives (0700)' },
  'reader-socket': { type: 'string', describe: "the cardlink reader driver's socket" },
  'log-level': { choices: ['error', 'warn', 'info', 'debug'] },
  'log-file': { type: 'string', describe: 'log file (rotated)' },
  check: {
    type: 'boolean',
    default: false,
    describe: 'check the settings, print them and exit (for install scripts)',
  },
} as const satisfies Record<string, OptionSpec>;
