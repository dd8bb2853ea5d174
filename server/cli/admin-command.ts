/**
 * `cardlink admin ...`: local administration of the card server. Every subcommand runs on the
 * server host and opens the database (and, where it needs one, the key-encryption key) itself,
 * from the same configuration as the server (`--config`, `--data-dir`, `--database-url`, the
 * CARDLINK_SERVER_* environment): none of this is reachable over the network.
 *
 * The actions are functions of server/admin/ (taking the storage and arguments, returning plain
 * data); the subcommands in server/cli/admin/ only wire options to them and format the output.
 *
 * Secrets: a card's PIN, PUK and management key are supplied through the environment
 * (CARDLINK_PIN, CARDLINK_PUK, CARDLINK_MGMT_KEY), never as flags (command lines are visible in
 * `ps`). Generated ones are printed once, by create-card and unblock, and kept nowhere; supplied
 * ones are never echoed. Every action is audited (see docs/server-admin.md).
 */
import type { CommandModule } from 'yargs';
import type { AdminArgs } from './admin/admin-cli.js';
import { listArchivedKeysCommand, recoverKeyCommand } from './admin/archival-commands.js';
import { auditCommand } from './admin/audit-commands.js';
import { caCommand, enrollCommand } from './admin/ca-commands.js';
import {
  createCardCommand,
  deleteCardCommand,
  forceLogoutCommand,
  listCardsCommand,
  unblockCommand,
} from './admin/card-commands.js';
import { rotateKekCommand } from './admin/kek-commands.js';
import { renewCommand } from './admin/lifecycle-commands.js';
import { importP12Command } from './admin/pkcs12-commands.js';
import { approveDeviceCommand, listUsersCommand, sessionsCommand } from './admin/user-commands.js';

export type { AdminArgs };

export const adminCommand: CommandModule<object, AdminArgs> = {
  command: 'admin',
  describe: 'Administer the card server on its host: cards, users, sessions, keys, audit log',
  builder: (y) =>
    y
      .option('config', {
        type: 'string',
        describe: 'server config file (JSON; env CARDLINK_SERVER_CONFIG)',
      })
      .option('data-dir', {
        type: 'string',
        describe: 'server data directory (env CARDLINK_SERVER_DATA_DIR)',
      })
      .option('database-url', {
        type: 'string',
        describe: 'sqlite:<file> or postgres://... (env CARDLINK_SERVER_DATABASE_URL)',
      })
      .option('json', { type: 'boolean', default: false, describe: 'machine-readable output (JSON)' })
      .command(createCardCommand)
      .command(listUsersCommand)
      .command(listCardsCommand)
      .command(sessionsCommand)
      .command(unblockCommand)
      .command(forceLogoutCommand)
      .command(deleteCardCommand)
      .command(rotateKekCommand)
      .command(approveDeviceCommand)
      .command(auditCommand)
      .command(caCommand)
      .command(enrollCommand)
      .command(renewCommand)
      .command(importP12Command)
      .command(recoverKeyCommand)
      .command(listArchivedKeysCommand)
      .demandCommand(1, "Name an admin command; see 'cardlink admin --help'."),
  handler: () => undefined,
};
