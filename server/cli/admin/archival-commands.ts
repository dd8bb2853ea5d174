/**
 * `cardlink admin recover-key` and `cardlink admin list-archived-keys`: wire their options to
 * server/admin/recover-key.ts (loaded only when they run). docs/personalization.md ("Key archival
 * and recovery") describes archival; the recovery agent decrypts the written file offline.
 */
import { open, unlink } from 'node:fs/promises';
import type { CommandModule } from 'yargs';
import { CardlinkError } from '../../../protocol/errors.js';
import { adminActor, e, hexSlot, print, printJson, withStorage, type AdminArgs } from './admin-cli.js';

interface ListArchivedArgs extends AdminArgs {
  cardId: string;
}

interface RecoverKeyArgs extends AdminArgs {
  cardId: string;
  serial: string | undefined;
  archive: string | undefined;
  out: string;
  reason: string;
  pem: boolean;
}

type Summary = import('../../admin/recover-key.js').ArchivedKeySummary;

function describe(a: Summary) {
  return {
    archiveId: a.archiveId,
    slot: a.slot === undefined ? 'replaced' : hexSlot(a.slot),
    ...(a.certificateSerial !== undefined ? { certificateSerial: a.certificateSerial } : {}),
    ...(a.certificateSha256 !== undefined ? { certificateSha256: a.certificateSha256 } : {}),
    publicKeySha256: a.publicKeySha256,
    recoveryCertificateSha256: a.recipientSha256,
    archivedAt: a.archivedAt,
  };
}

/** Where the key is: in a slot, or replaced by a later enrollment (on the card no more). */
const where = (slot: string) => (slot === 'replaced' ? 'replaced (no longer on the card)' : `slot ${slot}`);

/** A file name as a shell word: as is when plain, else single-quoted. */
function shellWord(value: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(value) ? value : `'${value.replace(/'/g, `'\\''`)}'`;
}

/** PEM of a CMS structure (RFC 7468 section 9, label "CMS"), 64 characters a line. */
function cmsPem(der: Uint8Array): string {
  const lines =
    Buffer.from(der)
      .toString('base64')
      .match(/.{1,64}/g) ?? [];
  return `-----BEGIN CMS-----\n${lines.join('\n')}\n-----END CMS-----\n`;
}

export const listArchivedKeysCommand: CommandModule<AdminArgs, ListArchivedArgs> = {
  command: 'list-archived-keys <cardId>',
  describe: "List a card's archived key management keys (also of an erased card)",
  builder: (y) => y.positional('cardId', { type: 'string', demandOption: true }),
  handler: async (args) => {
    const { listCardArchivedKeys } = await import('../../admin/recover-key.js');
    const archives = await withStorage(args, (storage) =>
      listCardArchivedKeys({ storage, cardId: args.cardId, actor: adminActor() }),
    );
    if (args.json) return printJson(archives.map(describe));
    if (archives.length === 0) return print(`card ${e(args.cardId)} has no archived key`);
    print(`archived keys of card ${e(args.cardId)}, oldest first:`);
    for (const a of archives.map(describe))
      print(
        `  ${a.archiveId}  ${where(a.slot)}  serial ${a.certificateSerial ?? '(no certificate)'}  archived ${a.archivedAt}  for recovery certificate ${a.recoveryCertificateSha256.slice(0, 16)}…`,
      );
  },
};

export const recoverKeyCommand: CommandModule<AdminArgs, RecoverKeyArgs> = {
  command: 'recover-key <cardId>',
  describe:
    "Write a card's archived key management key, encrypted to the recovery certificate, to a new " +
    'file for the recovery agent (audited with the reason)',
  builder: (y) =>
    y
      .positional('cardId', { type: 'string', demandOption: true })
      .option('serial', {
        type: 'string',
        describe: "the key's certificate serial (hex); needed when the card has several archived keys",
      })
      .option('archive', {
        type: 'string',
        describe: 'the archive id (list-archived-keys), for a key archived without a certificate',
      })
      .option('out', {
        type: 'string',
        demandOption: true,
        describe: 'the file to write (created 0600; an existing file is never overwritten)',
      })
      .option('reason', {
        type: 'string',
        demandOption: true,
        describe: 'why the key is recovered (ticket, requester); kept in the audit log',
      })
      .option('pem', { type: 'boolean', default: false, describe: 'write PEM ("CMS") instead of DER' }),
  handler: async (args) => {
    const { recoverArchivedKey } = await import('../../admin/recover-key.js');
    // Created before anything is handed out, exclusively: an existing file (or a link planted
    // where the file goes) makes the command fail with nothing audited and nothing written.
    let file;
    try {
      file = await open(args.out, 'wx', 0o600);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      throw new CardlinkError(
        'ERR_USAGE',
        code === 'EEXIST'
          ? `${args.out} exists; recover-key never overwrites a file`
          : `${args.out} cannot be created (${code ?? 'unknown error'})`,
        { file: args.out },
      );
    }
    let recovered;
    try {
      recovered = await withStorage(args, (storage) =>
        recoverArchivedKey({
          storage,
          cardId: args.cardId,
          serial: args.serial,
          archiveId: args.archive,
          reason: args.reason,
          actor: adminActor(),
        }),
      );
      await file.writeFile(args.pem ? cmsPem(recovered.envelope) : recovered.envelope);
      await file.close();
    } catch (error) {
      await file.close().catch(() => undefined);
      await unlink(args.out).catch(() => undefined);
      throw error;
    }
    const form = args.pem ? 'PEM' : 'DER';
    const command = `openssl cms -decrypt -inform ${form} -in ${shellWord(args.out)} -recip kra.pem -inkey kra.key -out key.p8`;
    if (args.json) return printJson({ ...describe(recovered), file: args.out, format: form, command });
    const d = describe(recovered);
    print(`archived key of card ${e(args.cardId)} written to ${e(args.out)} (CMS EnvelopedData, ${form})`);
    print(
      `  ${where(d.slot)}, certificate serial ${d.certificateSerial ?? '(none)'}, archived ${d.archivedAt}`,
    );
    print(`  encrypted to the recovery certificate with SHA-256 ${d.recoveryCertificateSha256}`);
    print('The recovery agent decrypts it offline (kra.pem/kra.key: the recovery certificate and its key):');
    print(`  ${e(command)}`);
    print('key.p8 is the private key (PKCS#8, DER). Keep it offline and delete it after use.');
  },
};
