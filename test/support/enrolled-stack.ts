/**
 * The start of the full-chain enrollment tests: the daemon stack with alice's one card, the
 * embedded issuing CA (its CRL at the stack's server URL) and the card enrolled from it by the
 * administrator, with the relying party's steps (test/support/pkcs11-steps.ts) ready. The CA's
 * certificate is written to `<dir>/ca.pem` for `openssl verify -CAfile`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { enrollCard, type EnrolledCard } from '../../server/admin/enroll.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { startDaemonStack, type DaemonStack } from './daemon-stack.js';
import { cardSteps, type CardSteps } from './pkcs11-steps.js';

export interface EnrolledStack {
  readonly stack: DaemonStack;
  readonly steps: CardSteps;
  readonly cardId: string;
  /** The issuing CA's certificate (PEM). */
  readonly caFile: string;
  readonly enrolled: EnrolledCard;
}

export async function startEnrolledStack(options: {
  /** The stack's name (its directory) and the reader's friendly name. */
  readonly name: string;
  readonly readerName: string;
  readonly pin: string;
  readonly claims: Readonly<Record<string, string>>;
}): Promise<EnrolledStack> {
  const stack = await startDaemonStack({
    name: options.name,
    cards: [{ label: 'alice card', pin: options.pin, puk: '97531864' }],
    pcscd: { cardlink: { slots: 2, friendlyName: options.readerName } },
    daemon: { deviceName: 'alice-laptop' },
  });
  const steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir: stack.dir, pin: options.pin });
  const cardId = stack.cardIds[0]!;
  const { storage, kek } = stack.cardServer.resources;
  const ca = await initEmbeddedCa({ storage, kek, crlUrl: crlUrlFor(stack.serverUrl), actor: 'admin:test' });
  const caFile = path.join(stack.dir, 'ca.pem');
  fs.writeFileSync(caFile, ca.certificatePem);
  const enrolled = await enrollCard({ storage, kek, cardId, claims: options.claims, actor: 'admin:test' });
  return { stack, steps, cardId, caFile, enrolled };
}
