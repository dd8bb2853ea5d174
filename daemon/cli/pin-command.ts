/**
 * `cardlink pin change`, `cardlink pin unblock` and `cardlink pin set`: the PIN of a card in the
 * reader, changed with the current PIN, unblocked with the PUK, or set after a fresh sign-in at the
 * identity provider, through the running daemon (the tray's PIN page does the same). Definitions only; the handler loads run-pin.ts when it runs (see bin/main.ts).
 */
import type { Argv, CommandModule } from 'yargs';
import { common, type CommonArgs } from './daemon-commands.js';

export interface PinArgs extends CommonArgs {
  card?: string | undefined;
}

export interface PinSetArgs extends PinArgs {
  'device-code': boolean;
  browser: boolean;
}

function pinOptions(y: Argv) {
  return common(y).option('card', {
    type: 'string',
    describe: 'the card, by id or label (default: the only card in the reader)',
  }) as Argv<PinArgs>;
}

const changeCommand: CommandModule<object, PinArgs> = {
  command: 'change',
  describe:
    'Change the PIN: asks for the current PIN and the new one (without echo; from stdin, one per line, when it is not a terminal)',
  builder: pinOptions,
  handler: async (args) => (await import('./run-pin.js')).runPin('change', args),
};

const unblockCommand: CommandModule<object, PinArgs> = {
  command: 'unblock',
  describe:
    'Unblock the PIN with the PUK and set a new PIN: asks for the PUK and the new PIN (as for change)',
  builder: pinOptions,
  handler: async (args) => (await import('./run-pin.js')).runPin('unblock', args),
};

const setCommand: CommandModule<object, PinSetArgs> = {
  command: 'set',
  describe:
    'Set a new PIN without the old one or the PUK (a card made with no PIN, or a forgotten PIN where your organisation allows it): asks for the new PIN (as for change), then for a fresh sign-in at the identity provider',
  builder: (y: Argv) =>
    pinOptions(y)
      .option('device-code', {
        type: 'boolean',
        default: false,
        describe: 'sign in on another device (prints a URL and a code); for machines without a browser',
      })
      .option('browser', {
        type: 'boolean',
        default: true,
        describe: 'open the browser (--no-browser: only print the URL)',
      }) as Argv<PinSetArgs>,
  handler: async (args) => (await import('./run-pin-set.js')).runPinSet(args),
};

export const pinCommand: CommandModule = {
  command: 'pin',
  describe: 'Change, unblock or set the PIN of a card in the reader',
  builder: (y: Argv) =>
    y
      .command(changeCommand as unknown as CommandModule)
      .command(unblockCommand as unknown as CommandModule)
      .command(setCommand as unknown as CommandModule)
      .demandCommand(1, 'Name what to do: change, unblock or set.'),
  handler: () => undefined,
};
