/**
 * `cardlink admin rotate-kek`: wires its options to `rotateKek` (server/admin/kek-admin.ts) and
 * prints the result (or, with --json, returns it as JSON).
 */
import type { CommandModule } from 'yargs';
import { rotateKek } from '../../admin/index.js';
import { adminActor, print, printJson, withResources, type AdminArgs } from './admin-cli.js';

interface RotateKekArgs extends AdminArgs {
  retire: boolean;
}

export const rotateKekCommand: CommandModule<AdminArgs, RotateKekArgs> = {
  command: 'rotate-kek',
  describe: 'Make a new key-encryption key version current and rewrap every data key under it',
  builder: (y) =>
    y.option('retire', {
      type: 'boolean',
      default: true,
      describe: 'destroy old KEK versions no row uses any more (--no-retire keeps them)',
    }),
  handler: async (args) => {
    const rotation = await withResources(args, ({ storage, kek }) =>
      rotateKek({ storage, kek, retire: args.retire, actor: adminActor() }),
    );
    if (args.json) return printJson(rotation);
    print(`KEK rotated: version ${rotation.previousVersion} -> ${rotation.currentVersion}`);
    print(`  data keys rewrapped  ${rotation.rewrapped} (${rotation.skipped} already rewritten by sessions)`);
    print(`  versions retired     ${rotation.retired.join(', ') || 'none'}`);
    print(`  versions kept        ${rotation.kept.join(', ') || 'none'}`);
    print('Restart running servers so that they wrap new keys under the new version.');
  },
};
