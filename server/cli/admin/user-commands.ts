/**
 * `cardlink admin` commands on users, their sessions and devices: list-users, sessions,
 * approve-device. Each wires its options to a function of server/admin/ and prints the result
 * (or, with --json, returns it as JSON).
 */
import type { CommandModule } from 'yargs';
import { approveDeviceAsAdmin, listLiveSessions, listUsers } from '../../admin/index.js';
import { adminActor, e, print, printJson, withStorage, type AdminArgs } from './admin-cli.js';

interface ListUsersArgs extends AdminArgs {
  tenant: string | undefined;
}

export const listUsersCommand: CommandModule<AdminArgs, ListUsersArgs> = {
  command: 'list-users',
  describe: 'List users with their number of cards',
  builder: (y) => y.option('tenant', { type: 'string', describe: 'only users of this tenant' }),
  handler: async (args) => {
    const users = await withStorage(args, (storage) =>
      listUsers({
        storage,
        ...(args.tenant !== undefined ? { tenant: args.tenant } : {}),
        actor: adminActor(),
      }),
    );
    if (args.json) return printJson(users);
    if (users.length === 0) return print('no users');
    for (const u of users) {
      print(
        `${u.id}  ${e(u.issuer)} ${e(u.subject)}  tenant ${e(u.tenantId)}  ${u.cards} card(s)  since ${u.createdAt}`,
      );
    }
  },
};

interface SessionsArgs extends AdminArgs {
  card: string | undefined;
}

export const sessionsCommand: CommandModule<AdminArgs, SessionsArgs> = {
  command: 'sessions',
  describe: 'List live card sessions (not ended)',
  builder: (y) => y.option('card', { type: 'string', describe: 'only sessions of this card' }),
  handler: async (args) => {
    const sessions = await withStorage(args, (storage) =>
      listLiveSessions({
        storage,
        ...(args.card !== undefined ? { cardId: args.card } : {}),
        actor: adminActor(),
      }),
    );
    if (args.json) return printJson(sessions);
    if (sessions.length === 0) return print('no live sessions');
    for (const s of sessions) {
      const user = s.issuer !== null ? `${e(s.issuer)} ${e(s.subject ?? '')}` : (s.userId ?? '-');
      print(
        `${e(s.id)}  card ${s.cardId} ("${e(s.cardLabel)}")  user ${user}  device ${e(s.deviceId ?? '-')}  ` +
          `epoch ${s.epoch}${s.fenced ? ' (fenced)' : ''}  since ${s.createdAt}`,
      );
    }
  },
};

interface DeviceArgs extends AdminArgs {
  deviceId: string;
}

export const approveDeviceCommand: CommandModule<AdminArgs, DeviceArgs> = {
  command: 'approve-device <deviceId>',
  describe: 'Approve a pending device (deviceRegistration: approval)',
  builder: (y) => y.positional('deviceId', { type: 'string', demandOption: true, describe: 'the device id' }),
  handler: async (args) => {
    const approval = await withStorage(args, (storage) =>
      approveDeviceAsAdmin({ storage, deviceId: args.deviceId, actor: adminActor() }),
    );
    if (args.json) return printJson(approval);
    print(
      `device ${e(approval.deviceId)} ("${e(approval.name)}", thumbprint ${approval.thumbprint}) ` +
        (approval.alreadyApproved ? 'was already approved' : 'approved'),
    );
  },
};
