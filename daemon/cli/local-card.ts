/**
 * `cardlink local-card`: serves one in-memory PIV card into the local PC/SC reader until
 * interrupted. The card and its keys exist only in this process; stopping it removes the card.
 */
import type { CommandModule } from 'yargs';
import { createMemoryCardState } from '../../apdu/piv/memory-card-state.js';
import { installDefaultObjects } from '../../apdu/piv/objects/default-objects.js';
import { provisionStandardKeys, STANDARD_SLOTS } from '../../apdu/piv/provisioning.js';
import { PivCard } from '../../apdu/piv/piv-card.js';
import type { KeyAlgorithm, ManagementKeyAlgorithm } from '../../apdu/piv/card-state.js';
import { KEY_ALGORITHMS } from '../../apdu/piv/constants.js';
import { DEFAULT_RETRY_LIMIT } from '../../apdu/piv/reference-data.js';
import { CardlinkError } from '../../protocol/errors.js';
import { resolveLocalCardSecrets, type LocalCardSecrets } from './local-card-secrets.js';
import {
  serveCardIntoReader,
  DEFAULT_BRIDGE_SOCKET,
  DEFAULT_READER_NAME,
  type ReaderTransport,
} from '../reader/serve-card.js';

interface LocalCardArgs {
  pin?: string | undefined;
  puk?: string | undefined;
  'mgmt-key'?: string | undefined;
  'mgmt-key-algorithm'?: ManagementKeyAlgorithm | undefined;
  'pin-retries': number;
  'puk-retries': number;
  'with-keys': boolean;
  'slot-algorithm': string[] | undefined;
  transport: ReaderTransport;
  'bridge-socket': string;
  slot: number;
  'reader-name': string;
  'vpcd-port': number;
  'ready-timeout': number;
}

function describeGenerated(secrets: LocalCardSecrets): string {
  const lines: string[] = [];
  const text = (b: Uint8Array) => new TextDecoder().decode(b);
  if (secrets.generated.pin) lines.push(`  PIN             ${text(secrets.pin)}`);
  if (secrets.generated.puk) lines.push(`  PUK             ${text(secrets.puk)}`);
  if (secrets.generated.managementKey) {
    lines.push(
      `  management key  ${Buffer.from(secrets.managementKey.key).toString('hex')} (${secrets.managementKey.algorithm})`,
    );
  }
  if (lines.length === 0) return '';
  return `Generated for this card (shown once, kept nowhere):\n${lines.join('\n')}\n`;
}

const PROVISIONED_SLOTS = STANDARD_SLOTS.map((s) => s.slot);

/** `9a=RSA3072` -> { 0x9a: 'RSA3072' } */
export function parseSlotAlgorithms(values: readonly string[]): Partial<Record<number, KeyAlgorithm>> {
  const out: Partial<Record<number, KeyAlgorithm>> = {};
  for (const v of values) {
    const m = /^([0-9a-fA-F]{2})=([A-Z0-9]+)$/.exec(v.trim());
    const slot = m ? parseInt(m[1]!, 16) : NaN;
    const alg = m?.[2] as KeyAlgorithm | undefined;
    if (!m || !PROVISIONED_SLOTS.includes(slot) || !alg || !KEY_ALGORITHMS.includes(alg)) {
      throw new CardlinkError(
        'ERR_CONFIG_INVALID',
        `--slot-algorithm "${v}" must be <slot>=<algorithm> with slot 9a, 9c, 9d or 9e and algorithm ${KEY_ALGORITHMS.join(', ')}`,
        { option: 'slot-algorithm' },
      );
    }
    out[slot] = alg;
  }
  return out;
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
        default: DEFAULT_RETRY_LIMIT,
        describe: 'PIN tries before it blocks (1-15)',
      })
      .option('puk-retries', {
        type: 'number',
        default: DEFAULT_RETRY_LIMIT,
        describe: 'PUK tries before it blocks (1-15)',
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
          if (!Number.isInteger(v) || v < 1 || v > 15)
            throw new Error(`--${k} must be a whole number from 1 to 15`);
        }
        if (!Number.isInteger(a.slot) || a.slot < 0 || a.slot > 15) throw new Error('--slot must be 0 to 15');
        return true;
      }),
  handler: async (args) => {
    const secrets = resolveLocalCardSecrets({
      pin: args.pin,
      puk: args.puk,
      mgmtKey: args['mgmt-key'],
      mgmtKeyAlgorithm: args['mgmt-key-algorithm'],
    });
    const state = createMemoryCardState({
      pin: secrets.pin,
      puk: secrets.puk,
      pinRetries: args['pin-retries'],
      pukRetries: args['puk-retries'],
      managementKey: secrets.managementKey,
    });
    await installDefaultObjects(state);
    if (args['with-keys'])
      await provisionStandardKeys(state, { algorithms: parseSlotAlgorithms(args['slot-algorithm'] ?? []) });
    const card = new PivCard(state);

    const served = await serveCardIntoReader(card, {
      transport: args.transport,
      bridgeSocket: args['bridge-socket'],
      slot: args.slot,
      readerName: args['reader-name'],
      vpcdPort: args['vpcd-port'],
      readyTimeoutMs: args['ready-timeout'] * 1000,
    });
    // Handlers before "ready": whoever waits for that line may stop us at once.
    const stopped = new Promise<void>((resolve, reject) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      served.onLost((err: CardlinkError) => reject(err));
    });
    process.stdout.write(describeGenerated(secrets));
    process.stdout.write(`ready: PIV card present in reader "${served.readerName}"\n`);
    await stopped;
    await served.stop();
    process.stdout.write('card removed\n');
  },
};
