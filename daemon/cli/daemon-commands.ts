/**
 * The daemon's command line: `cardlink daemon` runs it; `login`, `status`, `cards`, `logout` and
 * `diag` talk to a running one through its control socket (the same API the tray uses).
 *
 * Only the definitions live here (options, help): each handler imports its command's module when
 * the command runs, so `cardlink status` does not load the daemon, and no command loads what
 * another needs (see bin/main.ts).
 */
import type { Argv, CommandModule } from 'yargs';
import { COMMON_OPTIONS, DAEMON_OPTIONS } from './daemon-options.js';

export interface CommonArgs {
  config?: string | undefined;
  'runtime-dir'?: string | undefined;
}

/** The options every command that finds the daemon takes (the daemon's, the CLI's and the tray's). */
export function common<T>(y: Argv<T>) {
  return y.options(COMMON_OPTIONS);
}

export interface DaemonArgs extends CommonArgs {
  'server-url'?: string | undefined;
  'server-ca'?: string | undefined;
  'server-cert-sha256'?: string | undefined;
  'state-dir'?: string | undefined;
  'reader-socket'?: string | undefined;
  'log-level'?: string | undefined;
  'log-file'?: string | undefined;
  check: boolean;
}

export const daemonCommand: CommandModule<object, DaemonArgs> = {
  command: 'daemon',
  describe: "Run the daemon: the user's cards from the card server in the local PC/SC reader",
  builder: (y) => common(y).options(DAEMON_OPTIONS) as unknown as Argv<DaemonArgs>,
  handler: async (args) => (await import('./run-daemon.js')).runDaemon(args),
};

export interface LoginArgs extends CommonArgs {
  'device-code': boolean;
  browser: boolean;
}

export const loginCommand: CommandModule<object, LoginArgs> = {
  command: 'login',
  describe: 'Sign in at the identity provider and hand the token to the running daemon',
  builder: (y) =>
    common(y)
      .option('device-code', {
        type: 'boolean',
        default: false,
        describe: 'sign in on another device (prints a URL and a code); for machines without a browser',
      })
      .option('browser', {
        type: 'boolean',
        default: true,
        describe: 'open the browser (--no-browser: only print the URL)',
      }) as Argv<LoginArgs>,
  handler: async (args) => (await import('./run-login.js')).runLogin(args),
};

export interface JsonArgs extends CommonArgs {
  json: boolean;
}

export const statusCommand: CommandModule<object, JsonArgs> = {
  command: 'status',
  describe: "The daemon's state: session, user, device, cards",
  builder: (y) => common(y).option('json', { type: 'boolean', default: false }) as Argv<JsonArgs>,
  handler: async (args) => (await import('./run-control-request.js')).runStatus(args),
};

export const cardsCommand: CommandModule<object, JsonArgs> = {
  command: 'cards',
  describe: "The user's cards and the reader slots they are in",
  builder: (y) => common(y).option('json', { type: 'boolean', default: false }) as Argv<JsonArgs>,
  handler: async (args) => (await import('./run-control-request.js')).runCards(args),
};

export const logoutCommand: CommandModule<object, CommonArgs> = {
  command: 'logout',
  describe: 'Take the cards out of the reader and end the session',
  builder: (y) => common(y) as Argv<CommonArgs>,
  handler: async (args) => (await import('./run-control-request.js')).runLogout(args),
};

export const enrollCommand: CommandModule<object, EnrollArgs> = {
  command: 'enroll',
  describe: "Have the card server issue your card's certificates (if your organisation allows it)",
  builder: (y) =>
    common(y).option('card', {
      type: 'string',
      describe: 'the card id (from "cardlink cards"); needed only with several cards',
    }) as Argv<EnrollArgs>,
  handler: async (args) => (await import('./run-control-request.js')).runEnroll(args),
};

export interface EnrollArgs extends CommonArgs {
  card?: string | undefined;
}

export interface DiagArgs extends CommonArgs {
  output?: string | undefined;
}

export const diagCommand: CommandModule<object, DiagArgs> = {
  command: 'diag',
  describe: 'Write a diagnostics bundle (no secrets) for a support request',
  builder: (y) =>
    common(y).option('output', {
      type: 'string',
      describe: 'file to write (default ./cardlink-diag-<time>.json)',
    }) as Argv<DiagArgs>,
  handler: async (args) => (await import('./run-diag.js')).runDiag(args),
};

// Each module types its own arguments; yargs takes them as a list of any-argument modules.
export const daemonCommands = [
  daemonCommand,
  loginCommand,
  statusCommand,
  cardsCommand,
  logoutCommand,
  enrollCommand,
  diagCommand,
] as unknown as CommandModule[];
