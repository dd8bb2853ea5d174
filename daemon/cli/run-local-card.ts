/** `cardlink local-card`: the in-memory card, served into the reader until SIGINT/SIGTERM. */
import {
  createMemoryCardState,
  DEFAULT_RETRY_LIMIT,
  KEY_ALGORITHMS,
  PivCard,
  provisionStandardKeys,
  STANDARD_SLOTS,
} from '../../apdu/piv/index.js';
import { installDefaultObjects } from '../../apdu/piv/objects/index.js';
import type { KeyAlgorithm } from '../../apdu/piv/index.js';
import { CardlinkError } from '../../protocol/errors.js';
import { serveCardIntoReader } from '../reader/serve-card.js';
import type { LocalCardArgs } from './local-card.js';
import { resolveLocalCardSecrets, type LocalCardSecrets } from './local-card-secrets.js';

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

export async function runLocalCard(args: LocalCardArgs): Promise<void> {
  const secrets = resolveLocalCardSecrets({
    pin: args.pin,
    puk: args.puk,
    mgmtKey: args['mgmt-key'],
    mgmtKeyAlgorithm: args['mgmt-key-algorithm'],
  });
  const state = createMemoryCardState({
    pin: secrets.pin,
    puk: secrets.puk,
    pinRetries: args['pin-retries'] ?? DEFAULT_RETRY_LIMIT,
    pukRetries: args['puk-retries'] ?? DEFAULT_RETRY_LIMIT,
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
}
