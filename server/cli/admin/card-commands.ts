/**
 * `cardlink admin` commands on cards: create-card, list-cards, unblock, force-logout, delete-card.
 * Each wires its options to a function of server/admin/ and prints the result (or, with --json,
 * returns it as JSON). Generated secrets are printed once; supplied ones are never echoed.
 */
import type { Argv, CommandModule } from 'yargs';
import {
  createCard,
  deleteCard,
  forceLogout,
  listCards,
  loadCardProfile,
  loadDefaultProfile,
  unblockCard,
  type CardSummary,
} from '../../admin/index.js';
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

function cardJson(card: CardSummary): Record<string, unknown> {
  return { ...card, slots: card.slots.map((s) => ({ ...s, slot: hexSlot(s.slot) })) };
}

interface CreateCardArgs extends AdminArgs {
  issuer: string;
  subject: string;
  tenant: string;
  profile: string | undefined;
  label: string | undefined;
  'without-pin': boolean | undefined;
}

export const createCardCommand: CommandModule<AdminArgs, CreateCardArgs> = {
  command: 'create-card',
  describe:
    'Create a card for a user from a card profile; PIN, PUK and management key come from ' +
    `${SECRET_ENV.pin}, ${SECRET_ENV.puk}, ${SECRET_ENV.managementKey} or are generated and shown once`,
  builder: (y) =>
    y
      .option('issuer', {
        type: 'string',
        demandOption: true,
        describe: "the user's identity provider (iss)",
      })
      .option('subject', {
        type: 'string',
        demandOption: true,
        describe: 'the user as the provider names them (sub)',
      })
      .option('tenant', {
        type: 'string',
        demandOption: true,
        describe: "the user's tenant (created if new)",
      })
      .option('profile', {
        type: 'string',
        describe: 'card profile JSON file (default: the shipped default profile)',
      })
      .option('label', { type: 'string', describe: "card label (default: the profile's)" })
      .option('without-pin', {
        type: 'boolean',
        describe:
          'no PIN known to anyone: the PIN starts blocked and the user sets it after a fresh sign-in ' +
          "(the profile's pin.firstPinBySignIn does the same)",
      }),
  handler: async (args) => {
    const profile =
      args.profile !== undefined ? await loadCardProfile(args.profile) : await loadDefaultProfile();
    const pin = secretFromEnv(SECRET_ENV.pin);
    const puk = secretFromEnv(SECRET_ENV.puk);
    const managementKey = secretFromEnv(SECRET_ENV.managementKey);
    const created = await withResources(args, ({ storage, kek }) =>
      createCard({
        storage,
        kek,
        user: { issuer: args.issuer, subject: args.subject, tenant: args.tenant },
        profile,
        recoveryCertificate: configOf(args).keyArchival.recoveryCertificate,
        ...(args.label !== undefined ? { label: args.label } : {}),
        ...(pin !== undefined ? { pin } : {}),
        ...(puk !== undefined ? { puk } : {}),
        ...(managementKey !== undefined ? { managementKey } : {}),
        ...(args['without-pin'] ? { noPin: true } : {}),
        actor: adminActor(),
      }).catch((error: unknown) => {
        throw nameSecretSource(error, {
          pin: pin !== undefined,
          puk: puk !== undefined,
          managementKey: managementKey !== undefined,
        });
      }),
    );
    // Only generated secrets are shown (once); supplied ones are never echoed.
    const secrets = {
      ...(created.generated.pin ? { pin: created.pin } : {}),
      ...(created.generated.puk ? { puk: created.puk } : {}),
      ...(created.generated.managementKey ? { managementKey: created.managementKey } : {}),
    };
    if (args.json) {
      printJson({
        cardId: created.cardId,
        tenantId: created.tenantId,
        userId: created.userId,
        label: created.label,
        serial: created.serial,
        guid: created.guid,
        profile: profile.name,
        managementKeyAlgorithm: created.managementKey.algorithm,
        slots: created.slots.map((s) => ({
          slot: hexSlot(s.slot),
          algorithm: s.algorithm,
          pinPolicy: s.pinPolicy,
        })),
        generated: created.generated,
        pinUnset: created.pinUnset,
        ...(created.keyArchivedFor ? { keyArchivedFor: created.keyArchivedFor } : {}),
        secrets,
      });
      return;
    }
    print(`card ${created.cardId} created`);
    print(`  label           ${e(created.label)}`);
    print(`  serial          ${created.serial}`);
    print(`  user            ${e(args.issuer)} ${e(args.subject)} (tenant ${e(created.tenantId)})`);
    print(`  profile         ${e(profile.name)}`);
    print(`  slots           ${created.slots.map((s) => `${hexSlot(s.slot)} ${s.algorithm}`).join(', ')}`);
    if (created.pinUnset)
      print('  PIN             none: the user sets it on the PIN page after signing in again');
    if (created.keyArchivedFor)
      print(`  9D key          archived for the recovery certificate SHA-256 ${created.keyArchivedFor}`);
    const lines: string[] = [];
    if (secrets.pin !== undefined) lines.push(`  PIN             ${secrets.pin}`);
    if (secrets.puk !== undefined) lines.push(`  PUK             ${secrets.puk}`);
    if (secrets.managementKey !== undefined) {
      lines.push(`  management key  ${secrets.managementKey.key} (${secrets.managementKey.algorithm})`);
    }
    if (lines.length > 0) {
      print('Generated for this card (shown once, kept nowhere):');
      for (const line of lines) print(line);
    }
  },
};

interface ListCardsArgs extends AdminArgs {
  issuer: string | undefined;
  subject: string | undefined;
  tenant: string | undefined;
}

export const listCardsCommand: CommandModule<AdminArgs, ListCardsArgs> = {
  command: 'list-cards',
  describe: 'List cards, optionally of one user (--issuer and --subject) or tenant',
  builder: (y) =>
    y
      .option('issuer', { type: 'string', describe: "the user's identity provider (with --subject)" })
      .option('subject', { type: 'string', describe: 'the user (with --issuer)' })
      .option('tenant', { type: 'string', describe: 'only cards of this tenant' })
      .implies('issuer', 'subject')
      .implies('subject', 'issuer'),
  handler: async (args) => {
    const cards = await withStorage(args, (storage) =>
      listCards({
        storage,
        ...(args.issuer !== undefined && args.subject !== undefined
          ? { user: { issuer: args.issuer, subject: args.subject } }
          : {}),
        ...(args.tenant !== undefined ? { tenant: args.tenant } : {}),
        actor: adminActor(),
      }),
    );
    if (args.json) return printJson(cards.map(cardJson));
    if (cards.length === 0) return print('no cards');
    for (const c of cards) {
      print(
        `${c.id}  serial ${c.serial}  "${e(c.label)}"  ${e(c.issuer)} ${e(c.subject)} (tenant ${e(c.tenantId)})`,
      );
      print(
        `    PIN tries ${c.pinRetries.remaining}/${c.pinRetries.limit}, PUK tries ${c.pukRetries.remaining}/` +
          `${c.pukRetries.limit}, management key ${c.managementKeyAlgorithm}, slots ` +
          (c.slots.map((s) => `${hexSlot(s.slot)} ${s.algorithm}`).join(', ') || 'none'),
      );
      print(`    ${c.sessionId ? `last claimed by session ${e(c.sessionId)}` : 'not held by a session'}`);
    }
  },
};

interface CardIdArgs extends AdminArgs {
  cardId: string;
}

const cardIdPositional = <T>(y: Argv<T>) =>
  y.positional('cardId', { type: 'string', demandOption: true, describe: 'the card id (see list-cards)' });

export const unblockCommand: CommandModule<AdminArgs, CardIdArgs> = {
  command: 'unblock <cardId>',
  describe: `Set a new PIN (from ${SECRET_ENV.pin}, else generated and shown once) and restore its tries`,
  builder: cardIdPositional,
  handler: async (args) => {
    const newPin = secretFromEnv(SECRET_ENV.pin);
    const result = await withResources(args, ({ storage, kek }) =>
      unblockCard({
        storage,
        kek,
        cardId: args.cardId,
        ...(newPin !== undefined ? { newPin } : {}),
        actor: adminActor(),
      }).catch((error: unknown) => {
        throw nameSecretSource(error, { pin: newPin !== undefined });
      }),
    );
    if (args.json) {
      return printJson({
        cardId: args.cardId,
        generated: result.generated,
        ...(result.generated ? { pin: result.pin } : {}),
      });
    }
    if (result.generated) {
      print(`card ${args.cardId}: PIN unblocked; new PIN (shown once, kept nowhere):`);
      print(`  PIN             ${result.pin}`);
    } else {
      print(`card ${args.cardId}: PIN unblocked and set from ${SECRET_ENV.pin}`);
    }
  },
};

export const forceLogoutCommand: CommandModule<AdminArgs, CardIdArgs> = {
  command: 'force-logout <cardId>',
  describe: 'Take the card from the session holding it (its next write is refused)',
  builder: cardIdPositional,
  handler: async (args) => {
    const result = await withStorage(args, (storage) =>
      forceLogout({ storage, cardId: args.cardId, actor: adminActor() }),
    );
    if (args.json) return printJson(result);
    print(
      `card ${result.cardId}: session epoch now ${result.epoch}; ` +
        (result.endedSessions.length > 0
          ? `ended ${result.endedSessions.map(e).join(', ')}`
          : 'no session was live'),
    );
  },
};

export const deleteCardCommand: CommandModule<AdminArgs, CardIdArgs> = {
  command: 'delete-card <cardId>',
  describe:
    'Delete a card with its sealed keys, objects and sessions (crypto-shred; cannot be undone) ' +
    'and revoke the certificates the issuing CA gave it',
  builder: cardIdPositional,
  handler: async (args) => {
    const result = await withResources(args, ({ storage, kek }) =>
      deleteCard({ storage, kek, cardId: args.cardId, actor: adminActor() }),
    );
    if (args.json) return printJson({ cardId: args.cardId, deleted: true, ...result });
    print(`card ${args.cardId} deleted`);
    if (result.revoked.length > 0)
      print(`  ${result.revoked.length} certificate(s) revoked; CRL ${result.crlNumber ?? '-'} signed`);
  },
};
