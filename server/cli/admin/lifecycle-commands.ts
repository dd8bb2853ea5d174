/**
 * `cardlink admin renew`: wires its options to server/admin/renew.ts (loaded only when it runs)
 * and prints the result. docs/personalization.md ("Lifecycle") describes renewal.
 */
import type { CommandModule } from 'yargs';
import { CardlinkError } from '../../../protocol/errors.js';
import {
  adminActor,
  configOf,
  e,
  hexSlot,
  print,
  printJson,
  withResources,
  type AdminArgs,
} from './admin-cli.js';
import { parseClaims } from './ca-commands.js';

interface RenewArgs extends AdminArgs {
  cardId: string | undefined;
  due: boolean;
  keys: 'new' | 'same' | undefined;
  claim: string[] | undefined;
  'ca-command': string | undefined;
}

type Renewed = import('../../admin/renew.js').RenewedCard;

function describeRenewed(r: Renewed) {
  return {
    cardId: r.cardId,
    cardSerial: r.cardSerial,
    keys: r.keys,
    slots: r.slots.map((s) => ({
      slot: hexSlot(s.slot),
      algorithm: s.algorithm,
      serial: s.serial,
      subject: s.subject,
      notAfter: s.notAfter,
    })),
    revoked: r.revoked,
    notRevoked: r.notRevoked,
    ...(r.retired
      ? { retiredTo: hexSlot(r.retired.slot), keyHistoryOnCard: r.retired.keyHistoryOnCard }
      : {}),
    ...(r.crlNumber !== undefined ? { crlNumber: r.crlNumber } : {}),
    ...(r.crlError ? { crlError: r.crlError } : {}),
  };
}

/**
 * The change committed but its CRL was not signed: on stderr in both output modes (as import-p12
 * does), so a script reading the JSON still shows it to a person. `crlNotResigned` is crl.ts's
 * CRL_NOT_RESIGNED, passed in because that module loads only when the command runs.
 */
function warnCrlError(r: Renewed, crlNotResigned: string): void {
  if (r.crlError)
    process.stderr.write(
      `cardlink: warning: card ${r.cardId} renewed; ${crlNotResigned} (${r.crlError.code}: ${e(r.crlError.message)})\n`,
    );
}

function printRenewed(r: Renewed): void {
  const d = describeRenewed(r);
  print(`card ${d.cardId} renewed (${d.keys} keys), serial ${d.cardSerial}`);
  for (const s of d.slots)
    print(`  ${s.slot} ${s.algorithm}  ${s.serial}  ${e(s.subject)}  until ${s.notAfter}`);
  if (d.retiredTo !== undefined)
    print(
      `  old key management key and certificate moved to slot ${d.retiredTo} (Key History: ${d.keyHistoryOnCard})`,
    );
  if (d.revoked.length > 0)
    print(`  superseded and revoked: ${d.revoked.length} (CRL ${d.crlNumber ?? '-'})`);
  if (d.notRevoked.length > 0)
    print(
      `  replaced but NOT revoked (the issuing CA keeps its own revocation; revoke them there): ${d.notRevoked.join(' ')}`,
    );
}

export const renewCommand: CommandModule<AdminArgs, RenewArgs> = {
  command: 'renew [cardId]',
  describe:
    "Renew a card's certificates from the issuing CA or an external one (new or same keys per " +
    'profile; the old key management key moves to a retired slot), or with --due every card ' +
    'inside its renewal window',
  builder: (y) =>
    y
      .positional('cardId', { type: 'string', describe: 'the card to renew' })
      .option('due', {
        type: 'boolean',
        default: false,
        describe: "renew every card whose certificates expire within its profile's renewal.windowDays",
      })
      .option('keys', {
        choices: ['new', 'same'] as const,
        describe: "new keys or the same keys (default: the profile's renewal.key)",
      })
      .option('claim', {
        type: 'string',
        array: true,
        describe:
          'a claim overriding the one read from the current certificates, e.g. --claim email=a@b.example',
      })
      .option('ca-command', {
        type: 'string',
        describe:
          'an external CA instead of the embedded one, as for enroll (request on stdin, certificate on ' +
          'stdout); it keeps its own revocation: the replaced certificates are listed, not revoked. ' +
          "With --due: the cards whose external CA's certificates are due",
      }),
  handler: async (args) => {
    if (args.due === (args.cardId !== undefined))
      throw new CardlinkError('ERR_USAGE', 'give either a card id or --due', {});
    if (args.due && (args.keys !== undefined || args.claim !== undefined))
      throw new CardlinkError('ERR_USAGE', '--keys and --claim go with a card id, not --due', {});
    const claims = parseClaims(args.claim);
    const { renewCard, renewDueCards } = await import('../../admin/renew.js');
    const { CRL_NOT_RESIGNED } = await import('../../ca/crl.js');
    const externalCa = args['ca-command'] !== undefined ? { externalCa: { argv: [args['ca-command']] } } : {};
    const recoveryCertificate = configOf(args).keyArchival.recoveryCertificate;
    if (args.due) {
      const results = await withResources(args, ({ storage, kek }) =>
        renewDueCards({ storage, kek, actor: adminActor(), recoveryCertificate, ...externalCa }),
      );
      for (const r of results) if (r.renewed) warnCrlError(r.renewed, CRL_NOT_RESIGNED);
      if (args.json)
        return printJson(
          results.map((r) => ({
            cardId: r.cardId,
            firstNotAfter: r.firstNotAfter,
            ...(r.renewed ? { renewed: describeRenewed(r.renewed) } : {}),
            ...(r.error ? { error: r.error } : {}),
          })),
        );
      if (results.length === 0) print('no card is due for renewal');
      for (const r of results) {
        if (r.renewed) printRenewed(r.renewed);
        else print(`card ${r.cardId} (expires ${r.firstNotAfter}): renewal failed, ${r.error}`);
      }
      if (results.some((r) => r.error)) process.exitCode = 1;
      return;
    }
    const renewed = await withResources(args, ({ storage, kek }) =>
      renewCard({
        storage,
        kek,
        cardId: args.cardId!,
        claims,
        recoveryCertificate,
        actor: adminActor(),
        ...(args.keys ? { keys: args.keys } : {}),
        ...externalCa,
      }),
    );
    warnCrlError(renewed, CRL_NOT_RESIGNED);
    if (args.json) return printJson(describeRenewed(renewed));
    printRenewed(renewed);
  },
};
