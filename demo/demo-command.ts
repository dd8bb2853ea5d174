/**
 * `cardlink demo`: the command's options only; the demo itself (run-demo.ts, with the IdP, the card
 * server and the daemon's code) is imported when the command runs, so other commands do not load it.
 */
import type { Argv, CommandModule } from 'yargs';

interface DemoArgs {
  yes: boolean;
  browser: boolean;
  reset: boolean;
  'state-dir'?: string | undefined;
  'idp-port'?: number | undefined;
  'server-port'?: number | undefined;
  'reader-socket'?: string | undefined;
  'reader-name'?: string | undefined;
  'ready-timeout': number;
}

const isPort = (v: unknown) =>
  v === undefined || (Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 65535);

export const demoCommand: CommandModule<object, DemoArgs> = {
  command: 'demo',
  describe:
    'Run the whole product on this machine: a demo identity provider, a card server, the daemon, and a card in the reader',
  builder: (y) =>
    y
      .option('yes', {
        type: 'boolean',
        default: false,
        describe: 'sign the demo user in without asking (unattended runs)',
      })
      .option('browser', {
        type: 'boolean',
        default: true,
        describe: 'sign in in a browser when one can open (--no-browser: a device code)',
      })
      .option('reset', {
        type: 'boolean',
        default: false,
        describe: 'remove the state directory first and start over (new user password, new card)',
      })
      .option('state-dir', {
        type: 'string',
        describe: 'where the demo keeps its state (default $XDG_STATE_HOME/cardlink/demo)',
      })
      .option('idp-port', {
        type: 'number',
        describe:
          '127.0.0.1 port of the demo identity provider on a first run (default 18180; 0: any free one)',
      })
      .option('server-port', {
        type: 'number',
        describe: '127.0.0.1 port of the card server on a first run (default 18443; 0: any free one)',
      })
      .option('reader-socket', {
        type: 'string',
        describe:
          "the cardlink reader driver's socket (env CARDLINK_READER_SOCKET; default /run/cardlink/bridge.sock)",
      })
      .option('reader-name', {
        type: 'string',
        describe: 'FRIENDLYNAME of the cardlink reader in pcscd (default "cardlink Virtual Reader")',
      })
      .option('ready-timeout', {
        type: 'number',
        default: 60,
        describe: 'seconds the card may take from the sign-in to the reader',
      })
      .check((a) => {
        if (!isPort(a['idp-port'])) throw new Error('--idp-port must be a port number (0: any free port)');
        if (!isPort(a['server-port']))
          throw new Error('--server-port must be a port number (0: any free port)');
        if (!(a['ready-timeout'] > 0))
          throw new Error('--ready-timeout must be a positive number of seconds');
        return true;
      }) as Argv<DemoArgs>,
  handler: async (args) => {
    const { runDemo } = await import('./run-demo.js');
    await runDemo({
      yes: args.yes,
      browser: args.browser,
      reset: args.reset,
      stateDir: args['state-dir'],
      idpPort: args['idp-port'],
      serverPort: args['server-port'],
      readerSocket: args['reader-socket'],
      readerName: args['reader-name'],
      readyTimeoutSeconds: args['ready-timeout'],
    });
  },
};
