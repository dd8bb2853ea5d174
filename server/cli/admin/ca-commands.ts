/**
 * `cardlink admin ca init|show|import|crl` and `cardlink admin enroll`: wire their options to
 * server/ca/ and server/admin/enroll.ts (loaded only when one of these runs) and print the result
 * (or, with --json, return it as JSON). docs/personalization.md describes the CA and enrollment.
 */
import { readFile, stat, writeFile } from 'node:fs/promises';
import type { Argv, CommandModule } from 'yargs';
import { CardlinkError } from '../../../protocol/errors.js';
import { crlUrlFor } from '../../http/ca-routes.js';
import {
  adminActor,
  configOf,
  e,
  hexSlot,
  nameSecretSource,
  print,
  printJson,
  secretFromEnv,
  SECRET_ENV,
  withResources,
  withStorage,
  type AdminArgs,
} from './admin-cli.js';

const CA_ALGORITHMS = ['ECCP384', 'ECCP256', 'RSA3072', 'RSA2048'] as const;

interface CaInitArgs extends AdminArgs {
  name: string | undefined;
  algorithm: (typeof CA_ALGORITHMS)[number] | undefined;
  'validity-days': number | undefined;
  'crl-url': string | undefined;
  'key-in-hsm': boolean;
}

interface CaImportArgs extends AdminArgs {
  cert: string;
  key: string;
  'crl-url': string | undefined;
}

interface CaShowArgs extends AdminArgs {
  pem: boolean;
}

interface CaCrlArgs extends AdminArgs {
  out: string | undefined;
}

const crlUrlOption = {
  type: 'string',
  describe: "the CRL URL written into every certificate (default: <the server's publicUrl>/ca/crl)",
} as const;

async function printCa(args: AdminArgs, info: import('../../ca/issuing-ca.js').CaInfo, pem = false) {
  if (args.json) return printJson(info);
  print(`issuing CA ${e(info.id)} (${info.origin})`);
  print(`  subject      ${e(info.subject)}`);
  print(
    `  key          ${info.algorithm}, ${
      info.keyStore === 'pkcs11'
        ? `in the PKCS#11 token (label ${e(info.keyLabel ?? '')})`
        : 'sealed under the KEK in the database'
    }`,
  );
  print(`  valid        ${info.notBefore} .. ${info.notAfter}`);
  print(`  SHA-256      ${info.fingerprint}`);
  print(`  CRL URL      ${e(info.crlUrl)}`);
  print(`  CRL number   ${info.crlNumber}`);
  print(`  certificates ${info.issued} issued, ${info.revoked} revoked`);
  if (pem) print(info.certificatePem.trimEnd());
}

const caInitCommand: CommandModule<AdminArgs, CaInitArgs> = {
  command: 'init',
  describe:
    "Generate the card server's issuing CA: its key made and sealed inside (or kept in the PKCS#11 HSM with --key-in-hsm), a self-signed CA certificate",
  builder: (y) =>
    y
      .option('name', { type: 'string', describe: "the CA's common name (default: cardlink issuing CA)" })
      .option('algorithm', { choices: CA_ALGORITHMS, describe: 'key algorithm (default ECCP384)' })
      .option('validity-days', { type: 'number', describe: 'validity of the CA certificate (default 3650)' })
      .option('crl-url', crlUrlOption)
      .option('key-in-hsm', {
        type: 'boolean',
        default: false,
        describe:
          "generate the key inside the KEK's PKCS#11 token and sign there (needs kek.provider: pkcs11); it never leaves the token",
      }),
  handler: async (args) => {
    const crlUrl = args['crl-url'] ?? crlUrlFor(configOf(args).publicUrl);
    const { initEmbeddedCa } = await import('../../ca/issuing-ca.js');
    const info = await withResources(args, ({ storage, kek }) =>
      initEmbeddedCa({
        storage,
        kek,
        crlUrl,
        actor: adminActor(),
        keyInHsm: args['key-in-hsm'],
        ...(args.name !== undefined ? { commonName: args.name } : {}),
        ...(args.algorithm !== undefined ? { algorithm: args.algorithm } : {}),
        ...(args['validity-days'] !== undefined ? { validityDays: args['validity-days'] } : {}),
      }),
    );
    await printCa(args, info, true);
  },
};

/** Largest PEM file read for `ca import`. */
const MAX_PEM_BYTES = 64 * 1024;

async function readPem(path: string, what: string): Promise<string> {
  try {
    const info = await stat(path);
    if (!info.isFile() || info.size > MAX_PEM_BYTES) throw new Error('size');
    return await readFile(path, 'utf8');
  } catch {
    throw new CardlinkError('ERR_CA_INVALID', `cannot read the ${what} file (a PEM file of at most 64 KiB)`, {
      file: path,
    });
  }
}

const caImportCommand: CommandModule<AdminArgs, CaImportArgs> = {
  command: 'import',
  describe: 'Import an existing intermediate CA (certificate and unencrypted key, PEM) as the issuing CA',
  builder: (y) =>
    y
      .option('cert', { type: 'string', demandOption: true, describe: 'the CA certificate (PEM file)' })
      .option('key', {
        type: 'string',
        demandOption: true,
        describe: 'its private key (PEM file; sealed into the database, delete the file afterwards)',
      })
      .option('crl-url', crlUrlOption),
  handler: async (args) => {
    const crlUrl = args['crl-url'] ?? crlUrlFor(configOf(args).publicUrl);
    const certificatePem = await readPem(args.cert, 'certificate');
    const keyPem = await readPem(args.key, 'key');
    const { importCa } = await import('../../ca/issuing-ca.js');
    const info = await withResources(args, ({ storage, kek }) =>
      importCa({ storage, kek, certificatePem, keyPem, crlUrl, actor: adminActor() }),
    );
    await printCa(args, info);
  },
};

const caShowCommand: CommandModule<AdminArgs, CaShowArgs> = {
  command: 'show',
  describe: 'Show the issuing CA: subject, key, validity, fingerprint, CRL URL and counts',
  builder: (y) =>
    y.option('pem', { type: 'boolean', default: false, describe: 'also print the certificate (PEM)' }),
  handler: async (args) => {
    const { showCa } = await import('../../ca/issuing-ca.js');
    const info = await withStorage(args, (storage) => showCa(storage));
    await printCa(args, info, args.pem);
  },
};

const caCrlCommand: CommandModule<AdminArgs, CaCrlArgs> = {
  command: 'crl',
  describe: 'Sign a new CRL now (run it within 7 days of the last one, e.g. daily from cron)',
  builder: (y) => y.option('out', { type: 'string', describe: 'also write the CRL there (PEM)' }),
  handler: async (args) => {
    const { issueCrl } = await import('../../ca/crl.js');
    const crl = await withResources(args, ({ storage, kek }) =>
      issueCrl({ storage, kek, actor: adminActor() }),
    );
    if (args.out !== undefined) {
      const { PemConverter } = await import('../../../apdu/piv/certificates/x509-toolkit.js');
      // RFC 7468 section 6 labels a CRL "X509 CRL" (what OpenSSL reads).
      await writeFile(args.out, PemConverter.encode(Uint8Array.from(crl.der), 'X509 CRL'));
    }
    const result = {
      crlNumber: crl.crlNumber,
      entries: crl.entries,
      nextUpdate: crl.nextUpdate.toISOString(),
    };
    if (args.json) return printJson(result);
    print(
      `CRL ${result.crlNumber} signed: ${result.entries} revoked certificate(s), next update ${result.nextUpdate}`,
    );
  },
};

export const caCommand: CommandModule<AdminArgs, AdminArgs> = {
  command: 'ca',
  describe: "The card server's issuing CA: init, show, import, crl",
  builder: (y: Argv<AdminArgs>) =>
    y
      .command(caInitCommand)
      .command(caShowCommand)
      .command(caImportCommand)
      .command(caCrlCommand)
      .demandCommand(1, "Name a ca command: init, show, import or crl; see 'cardlink admin ca --help'."),
  handler: () => undefined,
};

interface EnrollArgs extends AdminArgs {
  cardId: string | undefined;
  issuer: string | undefined;
  subject: string | undefined;
  tenant: string | undefined;
  profile: string | undefined;
  claim: string[] | undefined;
  'ca-command': string | undefined;
}

/** `name=value` pairs of --claim. */
export function parseClaims(values: readonly string[] | undefined): Record<string, string> {
  const claims: Record<string, string> = {};
  for (const item of values ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw new CardlinkError('ERR_USAGE', '--claim takes name=value', {});
    claims[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return claims;
}

export const enrollCommand: CommandModule<AdminArgs, EnrollArgs> = {
  command: 'enroll [cardId]',
  describe:
    'Personalize a card with certificates from the issuing CA: new keys in every profile slot, ' +
    'a request signed by each, certificates from the templates. Give a card id, or a user ' +
    '(--issuer --subject --tenant) to create a card for them first',
  builder: (y) =>
    y
      .positional('cardId', { type: 'string', describe: 'the card to enroll' })
      .option('issuer', {
        type: 'string',
        describe: "the user's identity provider (iss), with --subject --tenant",
      })
      .option('subject', { type: 'string', describe: 'the user (sub)' })
      .option('tenant', { type: 'string', describe: "the user's tenant (created if new)" })
      .option('profile', {
        type: 'string',
        describe: 'card profile for a new card (default: the shipped default)',
      })
      .option('ca-command', {
        type: 'string',
        describe:
          'an external CA instead of the embedded one: an executable that reads a request (PEM) on stdin and prints the certificate on stdout',
      })
      .option('claim', {
        type: 'string',
        array: true,
        describe:
          'a claim the templates name, e.g. --claim email=alice@example.com --claim upn=alice@corp.example',
      }),
  handler: async (args) => {
    const claims = parseClaims(args.claim);
    const forUser = args.issuer !== undefined || args.subject !== undefined || args.tenant !== undefined;
    if (
      forUser === (args.cardId !== undefined) ||
      (forUser && (!args.issuer || !args.subject || !args.tenant))
    )
      throw new CardlinkError('ERR_USAGE', 'give either a card id or --issuer, --subject and --tenant', {});
    const { enrollCard } = await import('../../admin/enroll.js');
    const { CRL_NOT_RESIGNED } = await import('../../ca/crl.js');
    const { createCard, loadCardProfile, loadDefaultProfile } = await import('../../admin/index.js');
    const pin = secretFromEnv(SECRET_ENV.pin);
    const puk = secretFromEnv(SECRET_ENV.puk);
    const recoveryCertificate = configOf(args).keyArchival.recoveryCertificate;
    const result = await withResources(args, async ({ storage, kek }) => {
      let created: Awaited<ReturnType<typeof createCard>> | undefined;
      if (forUser) {
        const profile =
          args.profile !== undefined ? await loadCardProfile(args.profile) : await loadDefaultProfile();
        created = await createCard({
          storage,
          kek,
          user: { issuer: args.issuer!, subject: args.subject!, tenant: args.tenant! },
          profile,
          recoveryCertificate,
          ...(pin !== undefined ? { pin } : {}),
          ...(puk !== undefined ? { puk } : {}),
          actor: adminActor(),
        }).catch((error: unknown) => {
          throw nameSecretSource(error, { pin: pin !== undefined, puk: puk !== undefined });
        });
      }
      const cardId = created?.cardId ?? args.cardId!;
      const enrolled = await enrollCard({
        storage,
        kek,
        cardId,
        claims,
        recoveryCertificate,
        actor: adminActor(),
        ...(args['ca-command'] !== undefined ? { externalCa: { argv: [args['ca-command']] } } : {}),
      });
      return { created, enrolled };
    });
    const { created, enrolled } = result;
    // The enrollment committed; its CRL did not: on stderr in both output modes (as import-p12 does).
    if (enrolled.crlError)
      process.stderr.write(
        `cardlink: warning: card ${enrolled.cardId} enrolled; ${CRL_NOT_RESIGNED} (${enrolled.crlError.code}: ${e(enrolled.crlError.message)})\n`,
      );
    const secrets = created
      ? {
          ...(created.generated.pin ? { pin: created.pin } : {}),
          ...(created.generated.puk ? { puk: created.puk } : {}),
          ...(created.generated.managementKey ? { managementKey: created.managementKey } : {}),
        }
      : {};
    const slots = enrolled.slots.map((s) => ({
      slot: hexSlot(s.slot),
      algorithm: s.algorithm,
      serial: s.serial,
      subject: s.subject,
      notAfter: s.notAfter,
    }));
    if (args.json) {
      return printJson({
        cardId: enrolled.cardId,
        cardSerial: enrolled.cardSerial,
        created: created !== undefined,
        slots,
        revoked: enrolled.revoked,
        ...(enrolled.crlNumber !== undefined ? { crlNumber: enrolled.crlNumber } : {}),
        ...(enrolled.crlError ? { crlError: enrolled.crlError } : {}),
        ...(created ? { secrets } : {}),
      });
    }
    print(`card ${enrolled.cardId} enrolled${created ? ' (created)' : ''}, serial ${enrolled.cardSerial}`);
    for (const s of slots)
      print(`  ${s.slot} ${s.algorithm}  ${s.serial}  ${e(s.subject)}  until ${s.notAfter}`);
    if (enrolled.revoked.length > 0)
      print(`  superseded and revoked: ${enrolled.revoked.length} (CRL ${enrolled.crlNumber ?? '-'})`);
    const lines: string[] = [];
    if (secrets.pin !== undefined) lines.push(`  PIN             ${secrets.pin}`);
    if (secrets.puk !== undefined) lines.push(`  PUK             ${secrets.puk}`);
    if (secrets.managementKey !== undefined)
      lines.push(`  management key  ${secrets.managementKey.key} (${secrets.managementKey.algorithm})`);
    if (lines.length > 0) {
      print('Generated for this card (shown once, kept nowhere):');
      for (const line of lines) print(line);
    }
  },
};
