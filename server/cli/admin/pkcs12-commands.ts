/**
 * `cardlink admin import-p12`: wires its options to server/admin/import-pkcs12.ts (loaded only
 * when it runs) and prints the result. docs/personalization.md ("Import a PKCS#12") describes it.
 *
 * The file's password comes from CARDLINK_P12_PASSWORD or, when that is absent or empty, from one
 * line on stdin (typed without echo on a terminal): never from argv, which `ps` shows to everyone.
 * A 9D key is archived for the server config's recovery certificate when the card's profile asks
 * for it. A CRL that cannot be signed after the import is a warning (exit 0: the import happened).
 */
import { open } from 'node:fs/promises';
import type { CommandModule } from 'yargs';
import { CardlinkError } from '../../../protocol/errors.js';
import { readSecrets } from '../../../protocol/secret-input.js';
import {
  adminActor,
  configOf,
  e,
  hexSlot,
  print,
  printJson,
  secretFromEnv,
  withResources,
  type AdminArgs,
} from './admin-cli.js';

/** The environment variable holding the PKCS#12 password (else one line on stdin). */
export const PKCS12_PASSWORD_ENV = 'CARDLINK_P12_PASSWORD';

interface ImportP12Args extends AdminArgs {
  cardId: string;
  slot: string;
  file: string;
  'allow-no-mac': boolean;
}

/** `9A`, `9c`, `0x9D` to a number (checked to be a key slot by checkImportSlot); ERR_USAGE otherwise. */
function parseSlotArgument(value: string): number {
  const m = /^(?:0x)?([0-9a-f]{2})$/i.exec(value.trim());
  if (!m)
    throw new CardlinkError('ERR_USAGE', '--slot must be a PIV key slot: 9A, 9C, 9D, 9E or 82..95 (hex)');
  return parseInt(m[1]!, 16);
}

async function readPassword(): Promise<string> {
  const fromEnv = secretFromEnv(PKCS12_PASSWORD_ENV);
  if (fromEnv !== undefined) return fromEnv;
  const [password] = await readSecrets(['PKCS#12 password: '], {
    input: process.stdin,
    prompts: process.stderr,
  });
  return password!;
}

/**
 * The file's bytes; one larger than the reader takes (`limit`, MAX_PKCS12_BYTES) is refused before
 * it is read, so a wrong `--file` (a disk image) costs nothing.
 */
async function readPkcs12File(path: string, limit: number): Promise<Buffer> {
  let file: Awaited<ReturnType<typeof open>>;
  try {
    file = await open(path, 'r');
  } catch (error) {
    throw new CardlinkError('ERR_USAGE', `cannot read --file ${path}`, {
      file: path,
      reason: (error as NodeJS.ErrnoException).code ?? 'unknown',
    });
  }
  try {
    const stat = await file.stat();
    if (!stat.isFile()) throw new CardlinkError('ERR_USAGE', `--file ${path} is not a file`, { file: path });
    const size = stat.size;
    if (size > limit)
      throw new CardlinkError('ERR_PKCS12_INVALID', 'the PKCS#12 file is too large', {
        file: path,
        bytes: size,
        limit,
      });
    return await file.readFile();
  } finally {
    await file.close();
  }
}

export const importP12Command: CommandModule<AdminArgs, ImportP12Args> = {
  command: 'import-p12 <cardId>',
  describe:
    'Import a private key and its certificate from a PKCS#12 file into one slot of a card ' +
    `(password from ${PKCS12_PASSWORD_ENV}, else one line on stdin)`,
  builder: (y) =>
    y
      .positional('cardId', { type: 'string', demandOption: true, describe: 'the card' })
      .option('slot', {
        type: 'string',
        demandOption: true,
        describe: 'the key slot: 9A, 9C, 9D, 9E or a retired slot 82..95',
      })
      .option('file', { type: 'string', demandOption: true, describe: 'the PKCS#12 file (.p12, .pfx)' })
      .option('allow-no-mac', {
        type: 'boolean',
        default: false,
        describe:
          'accept a file without a MAC (openssl -nomac): then nothing checks the password or that the file is unaltered',
      }),
  handler: async (args) => {
    const slot = parseSlotArgument(args.slot);
    const { checkImportSlot, importPkcs12 } = await import('../../admin/import-pkcs12.js');
    const { MAX_PKCS12_BYTES } = await import('../../ca/pkcs12.js');
    const { CRL_NOT_RESIGNED } = await import('../../ca/crl.js');
    checkImportSlot(slot); // before the password is asked for
    const pkcs12 = await readPkcs12File(args.file, MAX_PKCS12_BYTES);
    const password = await readPassword();
    const recoveryCertificate = configOf(args).keyArchival.recoveryCertificate;
    const r = await withResources(args, ({ storage, kek }) =>
      importPkcs12({
        storage,
        kek,
        cardId: args.cardId,
        slot,
        pkcs12,
        password,
        allowNoMac: args['allow-no-mac'],
        recoveryCertificate,
        actor: adminActor(),
      }),
    );
    const d = {
      cardId: r.cardId,
      cardSerial: r.cardSerial,
      slot: hexSlot(r.slot),
      algorithm: r.algorithm,
      serial: r.serial,
      subject: r.subject,
      issuer: r.issuer,
      notAfter: r.notAfter,
      certificateSha256: r.certificateSha256,
      extraCertificates: r.extraCertificates,
      replaced: r.replaced,
      revoked: r.revoked,
      ...(r.crlNumber !== undefined ? { crlNumber: r.crlNumber } : {}),
      ...(r.crlError ? { crlError: r.crlError } : {}),
      mac: r.mac,
      ...(r.keyHistoryOnCard !== undefined ? { keyHistoryOnCard: r.keyHistoryOnCard } : {}),
      ...(r.keyArchivedFor !== undefined ? { keyArchivedFor: r.keyArchivedFor } : {}),
      archivesDetached: r.archivesDetached,
    };
    // On stderr in both output modes, so a script reading the JSON still shows it to a person.
    if (r.crlError)
      process.stderr.write(
        `cardlink: warning: imported; ${CRL_NOT_RESIGNED} (${r.crlError.code}: ${e(r.crlError.message)})\n`,
      );
    if (args.json) return printJson(d);
    print(
      `card ${d.cardId} (serial ${d.cardSerial}): ${d.algorithm} key and certificate imported into slot ${d.slot}`,
    );
    print(`  certificate ${d.serial}  ${e(d.subject)}  issued by ${e(d.issuer)}  until ${d.notAfter}`);
    print(`  SHA-256 ${d.certificateSha256}`);
    if (d.extraCertificates > 0) print(`  ${d.extraCertificates} other certificate(s) in the file left out`);
    if (d.replaced) print(`  the slot's previous key was replaced`);
    if (d.revoked.length > 0)
      print(`  the slot's CA certificate was revoked as superseded (CRL ${d.crlNumber ?? '-'})`);
    if (d.keyHistoryOnCard !== undefined)
      print(`  Key History: ${d.keyHistoryOnCard} retired key(s) on the card`);
    if (d.keyArchivedFor !== undefined)
      print(`  the key was archived for the recovery certificate SHA-256 ${d.keyArchivedFor}`);
    if (d.archivesDetached > 0)
      print(`  ${d.archivesDetached} archive(s) of the slot's previous key now listed as replaced`);
    if (d.mac === 'none') print(`  the file had no MAC (--allow-no-mac): its integrity was not checked`);
  },
};
