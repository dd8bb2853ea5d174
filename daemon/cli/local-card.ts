/**
 * `cardlink local-card`: serves one in-memory PIV card into the local PC/SC reader until
 * interrupted. The card and its keys exist only in this process; stopping it removes the card.
 *
 * Only the definition lives here (options, help); the handler imports run-local-card.ts, and with
 * it the PIV card and the PC/SC client (native pcsclite), when the command runs.
 */
import type { CommandModule } from 'yargs';
import type { ManagementKeyAlgorithm } from '../../apdu/piv/index.js';
import type { ReaderTransport } from '../reader/serve-card.js';
import { DEFAULT_BRIDGE_SOCKET, DEFAULT_READER_NAME } from '../reader/reader-names.js';

export interface LocalCardArgs {
  pin?: string | undefined;
  puk?: string | undefined;
  'mgmt-key'?: string | undefined;
  'mgmt-key-algorithm'?: ManagementKeyAlgorithm | undefined;
  /** Default (when left out): the card's DEFAULT_RETRY_LIMIT, applied by run-local-card.ts. */
  'pin-retries': number | undefined;
  'puk-retries': number | undefined;
  'with-keys': boolean;
  'slot-algorithm': string[] | undefined;
  transport: ReaderTransport;
  'bridge-socket': string;
  slot: number;
  'reader-name': string;
  'vpcd-port': number;
  'ready-timeout': number;
}

export const localCardCommand: CommandModule<object, LocalCardArgs> = {
  command: 'local-card',
  describe: 'Serve an in-memory PIV card into the local PC/SC reader until interrupted',
  builder: (y) =>
    y
      .env('CARDLINK')
      .option('pin', {
        type: 'string',
        describe: 'PIN, 6-8 characters (env CARDLINK_PIN); generated when absent',
      })
      .option('puk', {
        type: 'string',
        describe: 'PUK, 6-8 characters (env CARDLINK_PUK); generated when absent',
      })
      .option('mgmt-key', {
        type: 'string',
        describe: 'management key in hex (env CARDLINK_MGMT_KEY); generated (AES-192) when absent',
      })
      .option('mgmt-key-algorithm', {
        choices: ['3DES', 'AES128', 'AES192', 'AES256'] as const,
        describe: 'management key algorithm (default: from the key length; 24 bytes = AES192)',
      })
      .option('pin-retries', {
        type: 'number',
        describe: 'PIN tries before it blocks (1-15; default 3, the PIV card default)',
      })
      .option('puk-retries', {
        type: 'number',
        describe: 'PUK tries before it blocks (1-15; default 3, the PIV card default)',
      })
      .option('with-keys', {
        type: 'boolean',
        default: false,
        describe: 'generate keys and self-signed certificates in slots 9A, 9C, 9D and 9E',
      })
      .option('slot-algorithm', {
        type: 'string',
        array: true,
        describe:
          'with --with-keys: algorithm of a slot, e.g. 9a=RSA3072 (RSA2048, RSA3072, ECCP256, ECCP384)',
      })
      .option('transport', {
        choices: ['bridge', 'vpcd'] as const,
        default: 'bridge' as ReaderTransport,
        describe:
          'bridge: the cardlink pcscd driver (Unix socket); vpcd: vsmartcard vpcd in reversed mode on loopback',
      })
      .option('bridge-socket', {
        type: 'string',
        default: DEFAULT_BRIDGE_SOCKET,
        describe: 'socket of the cardlink reader driver',
      })
      .option('slot', { type: 'number', default: 0, describe: 'reader slot to insert the card into' })
      .option('reader-name', {
        type: 'string',
        default: DEFAULT_READER_NAME,
        describe: 'FRIENDLYNAME of the reader in pcscd (the slot suffix is added)',
      })
      .option('vpcd-port', {
        type: 'number',
        default: 35963,
        describe: 'loopback port vpcd connects to (and port+1)',
      })
      .option('ready-timeout', {
        type: 'number',
        default: 15,
        describe: 'seconds to wait for pcscd to see the card',
      })
      .check((a) => {
        for (const k of ['pin-retries', 'puk-retries'] as const) {
          const v = a[k];
          if (v !== undefined && (!Number.isInteger(v) || v < 1 || v > 15))
            throw new Error(`--${k} must be a whole number from 1 to 15`);
        }
        if (!Number.isInteger(a.slot) || a.slot < 0 || a.slot > 15) throw new Error('--slot must be 0 to 15');
        return true;
      }),
  handler: async (args) => (await import('./run-local-card.js')).runLocalCard(args),
};
