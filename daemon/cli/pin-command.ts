/**
 * `cardlink pin change` and `cardlink pin unblock`: the PIN of a card in the reader, changed with
 * the current PIN or unblocked with the PUK, through the running daemon (the tray's PIN page does
 * the same). Definitions only; the handler loads run-pin.ts when it runs (see bin/main.ts).
 */
import type { Argv, CommandModule } from 'yargs';
import { common, type CommonArgs } from './daemon-commands.js';

export interface PinArgs extends CommonArgs {
  card?: string | undefined;
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

export const pinCommand: CommandModule = {
  command: 'pin',
  describe: 'Change or unblock the PIN of a card in the reader',
  builder: (y: Argv) =>
    y
      .command(changeCommand as unknown as CommandModule)
      .command(unblockCommand as unknown as CommandModule)
      .demandCommand(1, 'Name what to do: change or unblock.'),
  handler: () => undefined,
};
