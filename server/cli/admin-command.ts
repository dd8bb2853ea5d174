/**
 * `cardlink admin ...`: local administration of the card server. Every subcommand runs on the
 * server host and opens the database (and, where it needs one, the key-encryption key) itself,
 * from the same configuration as the server (`--config`, `--data-dir`, `--database-url`, the
 * CARDLINK_SERVER_* environment): none of this is reachable over the network.
 *
 * Secrets: a card's PIN, PUK and management key are supplied through the environment
 * (CARDLINK_PIN, CARDLINK_PUK, CARDLINK_MGMT_KEY), never as flags (command lines are visible in
 * `ps`). Generated ones are printed once, by create-card and unblock, and kept nowhere; supplied
 * ones are never echoed. Every action is audited (see docs/server-admin.md).
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Argv, CommandModule } from 'yargs';
import { CardlinkError } from '../../protocol/errors.js';
import { escapeControlCharacters } from '../../protocol/log.js';
import {
  ADMIN_AUDIT_EVENTS,
  createCard,
  deleteCard,
  DEFAULT_ADMIN_ACTOR,
  listCards,
  listUsers,
  loadCardProfile,
  loadDefaultProfile,
  ProfileError,
  queryAudit,
  rotateKek,
  unblockCard,
  type CardSummary,
} from '../admin/index.js';
import {
  AUDIT_EVENTS,
  appendAudit,
  exportJsonLines,
  verifyChain,
  type AuditEntry,
  type AuditFilter,
  type ChainVerification,
} from '../audit/audit-log.js';
import { loadServerConfig, type ServerConfig } from '../config/server-config.js';
import { ensureDataDir, openServerResources } from '../config/server-resources.js';
import type { KekProvider } from '../keys/kek-provider.js';
import {
  approveDevice,
  CardNotFoundError,
  claimCard,
  endSession,
  migrate,
  openStorage,
  type Storage,
} from '../storage/index.js';

/**
 * Environment variables that supply a card's secrets. Never flags: a command line is visible to
 * every local user in `ps`. An empty variable counts as absent (the value is generated).
 */
export const SECRET_ENV = {
  pin: 'CARDLINK_PIN',
  puk: 'CARDLINK_PUK',
  managementKey: 'CARDLINK_MGMT_KEY',
} as const;

/** Prefix of the session id `force-logout` claims the card with (the rest is a fresh UUID). */
export const FORCE_LOGOUT_SESSION_PREFIX = 'admin:';

/** Options every `cardlink admin` subcommand takes. */
export interface AdminArgs {
  config: string | undefined;
  'data-dir': string | undefined;
  'database-url': string | undefined;
  json: boolean;
}

/** No such device (`approve-device`). */
export class DeviceNotFoundError extends CardlinkError {
  constructor(deviceId: string) {
    super('ERR_DEVICE_NOT_FOUND', `no such device: ${deviceId}`, { deviceId });
    this.name = 'DeviceNotFoundError';
  }
}

// ---------------------------------------------------------------------------------------------
// Actions without a function in server/admin/ (kept here, exported for tests and other callers)

export interface ForcedLogout {
  readonly cardId: string;
  /** The card's session epoch after the claim: every session of an earlier epoch is fenced. */
  readonly epoch: number;
  /** Sessions that were live on the card and are ended now. */
  readonly endedSessions: readonly string[];
}

/**
 * Takes the card from whichever session holds it: one transaction claims it for a throw-away
 * admin session (bumping the session epoch, ending the card's other sessions and announcing the
 * claim), ends that session at once and appends the audit entry. The old holder's next write is
 * refused (`ERR_CARD_TAKEN_OVER`); a live server learns of it from the claim announcement.
 */
export async function forceLogout(options: {
  storage: Storage;
  cardId: string;
  actor?: string;
}): Promise<ForcedLogout> {
  const { storage, cardId } = options;
  const sessionId = FORCE_LOGOUT_SESSION_PREFIX + randomUUID();
  return storage.transaction(async (tx) => {
    // The card's row first (the lock order of storage.ts), so the sessions read next are exactly
    // the ones the claim ends.
    let lock = tx.db.selectFrom('cards').select('id').where('id', '=', cardId);
    if (tx.dialect === 'postgres') lock = lock.forUpdate();
    if (!(await lock.executeTakeFirst())) throw new CardNotFoundError(cardId);
    const live = await tx.db
      .selectFrom('sessions')
      .select('id')
      .where('card_id', '=', cardId)
      .where('ended_at', 'is', null)
      .orderBy('created_at')
      .orderBy('id')
      .execute();
    const epoch = await claimCard(tx, { cardId, sessionId });
    await endSession(tx, sessionId);
    const endedSessions = live.map((s) => s.id);
    await appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.forcedLogout,
      cardId,
      details: { epoch, endedSessions, adminSessionId: sessionId },
    });
    return { cardId, epoch, endedSessions };
  });
}

export interface LiveSession {
  readonly id: string;
  readonly cardId: string;
  readonly cardLabel: string;
  readonly userId: string | null;
  readonly issuer: string | null;
  readonly subject: string | null;
  readonly deviceId: string | null;
  readonly epoch: number;
  /** True when the card's epoch moved on (an admin write or claim): the session can no longer write. */
  readonly fenced: boolean;
  readonly createdAt: string;
}

/** Sessions not ended (`sessions.ended_at` null), optionally of one card; audited. */
export async function listLiveSessions(options: {
  storage: Storage;
  cardId?: string;
  actor?: string;
}): Promise<LiveSession[]> {
  const { storage } = options;
  let query = storage.db
    .selectFrom('sessions')
    .innerJoin('cards', 'cards.id', 'sessions.card_id')
    .leftJoin('users', 'users.id', 'sessions.user_id')
    .select([
      'sessions.id',
      'sessions.card_id',
      'cards.label',
      'cards.session_epoch',
      'sessions.user_id',
      'users.issuer',
      'users.subject',
      'sessions.device_id',
      'sessions.epoch',
      'sessions.created_at',
    ])
    .where('sessions.ended_at', 'is', null)
    .orderBy('sessions.created_at')
    .orderBy('sessions.id');
  if (options.cardId !== undefined) query = query.where('sessions.card_id', '=', options.cardId);
  const rows = await query.execute();
  const sessions = rows.map((r): LiveSession => ({
    id: r.id,
    cardId: r.card_id,
    cardLabel: r.label,
    userId: r.user_id,
    issuer: r.issuer,
    subject: r.subject,
    deviceId: r.device_id,
    epoch: Number(r.epoch),
    fenced: Number(r.epoch) !== Number(r.session_epoch),
    createdAt: r.created_at,
  }));
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: ADMIN_AUDIT_EVENTS.sessionsListed,
      details: {
        count: sessions.length,
        ...(options.cardId !== undefined ? { cardId: options.cardId } : {}),
      },
    }),
  );
  return sessions;
}

export interface DeviceApproval {
  readonly deviceId: string;
  readonly userId: string;
  readonly name: string;
  readonly thumbprint: string;
  /** The device was approved before; nothing changed and nothing was audited. */
  readonly alreadyApproved: boolean;
}

/** Approves a pending device, audited in the same transaction. Approving it again is a no-op. */
export async function approveDeviceAsAdmin(options: {
  storage: Storage;
  deviceId: string;
  actor?: string;
}): Promise<DeviceApproval> {
  const { storage, deviceId } = options;
  return storage.transaction(async (tx) => {
    const approved = await approveDevice(tx, deviceId);
    if (!approved) {
      const existing = await tx.db
        .selectFrom('devices')
        .select(['id', 'user_id', 'name', 'thumbprint', 'status'])
        .where('id', '=', deviceId)
        .executeTakeFirst();
      if (!existing) throw new DeviceNotFoundError(deviceId);
      return {
        deviceId,
        userId: existing.user_id,
        name: existing.name,
        thumbprint: existing.thumbprint,
        alreadyApproved: true,
      };
    }
    await appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: AUDIT_EVENTS.deviceApproved,
      details: { deviceId, userId: approved.user_id, thumbprint: approved.thumbprint, with: 'admin' },
    });
    return {
      deviceId,
      userId: approved.user_id,
      name: approved.name,
      thumbprint: approved.thumbprint,
      alreadyApproved: false,
    };
  });
}

// ---------------------------------------------------------------------------------------------
// Plumbing

/** `admin:cli:<login name>`: who acted, as the audit log records it. */
function adminActor(): string {
  try {
    const name = os.userInfo().username;
    return /^[A-Za-z0-9._-]{1,64}$/.test(name) ? `${DEFAULT_ADMIN_ACTOR}:${name}` : DEFAULT_ADMIN_ACTOR;
  } catch {
    return DEFAULT_ADMIN_ACTOR;
  }
}

function configOf(args: AdminArgs): ServerConfig {
  return loadServerConfig({
    config: args.config,
    dataDir: args['data-dir'],
    databaseUrl: args['database-url'],
  });
}

/** Closes what was opened; a failure to close does not hide the action's own error. */
async function closingAfter<R, T>(
  resource: R & { close(): Promise<void> },
  fn: (r: R) => Promise<T>,
): Promise<T> {
  let result: T;
  try {
    result = await fn(resource);
  } catch (error) {
    await resource.close().catch(() => undefined);
    throw error;
  }
  await resource.close();
  return result;
}

/** The database alone (migrated), for subcommands that need no key. */
async function withStorage<T>(args: AdminArgs, fn: (storage: Storage) => Promise<T>): Promise<T> {
  const config = configOf(args);
  ensureDataDir(config);
  const storage = await openStorage(config.databaseUrl);
  return closingAfter(storage, async (s) => {
    await migrate(s);
    return fn(s);
  });
}

/** The database and the KEK provider. */
async function withResources<T>(
  args: AdminArgs,
  fn: (r: { storage: Storage; kek: KekProvider }) => Promise<T>,
): Promise<T> {
  const resources = await openServerResources(configOf(args));
  return closingAfter(resources, fn);
}

function secretFromEnv(variable: string): string | undefined {
  const value = process.env[variable];
  return value === undefined || value === '' ? undefined : value;
}

/**
 * Rewrites a policy error about a supplied secret so that it names the variable it came from
 * (the value is in neither message nor context).
 */
function nameSecretSource(
  error: unknown,
  supplied: Partial<Record<keyof typeof SECRET_ENV, boolean>>,
): unknown {
  if (!(error instanceof ProfileError)) return error;
  const field = error.context['field'];
  if (typeof field !== 'string' || !(field in SECRET_ENV) || !supplied[field as keyof typeof SECRET_ENV]) {
    return error;
  }
  const variable = SECRET_ENV[field as keyof typeof SECRET_ENV];
  const problem = error.message.startsWith(`${field}: `)
    ? error.message.slice(field.length + 2)
    : error.message;
  return new ProfileError(field, `${problem} (environment variable ${variable})`, {
    ...error.context,
    source: `environment variable ${variable}`,
  });
}

const e = escapeControlCharacters;

function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

const hexSlot = (slot: number): string => slot.toString(16).toUpperCase().padStart(2, '0');

function cardJson(card: CardSummary): Record<string, unknown> {
  return { ...card, slots: card.slots.map((s) => ({ ...s, slot: hexSlot(s.slot) })) };
}

function describeChain(chain: ChainVerification): string {
  return chain.ok
    ? `audit chain ok: ${chain.count} entries, head ${chain.headHash}`
    : `audit chain BROKEN at entry ${chain.firstBadId} (${chain.reason}); ${chain.count} entries verified before it`;
}

function describeEntry(entry: AuditEntry): string {
  const card = entry.cardId ? ` card ${e(entry.cardId)}` : '';
  return `#${entry.id} ${entry.time} ${e(entry.actor)} ${e(entry.eventType)}${card} ${e(JSON.stringify(entry.details))}`;
}

// ---------------------------------------------------------------------------------------------
// Subcommands

interface CreateCardArgs extends AdminArgs {
  issuer: string;
  subject: string;
  tenant: string;
  profile: string | undefined;
  label: string | undefined;
}

const createCardCommand: CommandModule<AdminArgs, CreateCardArgs> = {
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
      .option('label', { type: 'string', describe: "card label (default: the profile's)" }),
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
        ...(args.label !== undefined ? { label: args.label } : {}),
        ...(pin !== undefined ? { pin } : {}),
        ...(puk !== undefined ? { puk } : {}),
        ...(managementKey !== undefined ? { managementKey } : {}),
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

interface ListUsersArgs extends AdminArgs {
  tenant: string | undefined;
}

const listUsersCommand: CommandModule<AdminArgs, ListUsersArgs> = {
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

interface ListCardsArgs extends AdminArgs {
  issuer: string | undefined;
  subject: string | undefined;
  tenant: string | undefined;
}

const listCardsCommand: CommandModule<AdminArgs, ListCardsArgs> = {
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

interface SessionsArgs extends AdminArgs {
  card: string | undefined;
}

const sessionsCommand: CommandModule<AdminArgs, SessionsArgs> = {
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

interface CardIdArgs extends AdminArgs {
  cardId: string;
}

const cardIdPositional = <T>(y: Argv<T>) =>
  y.positional('cardId', { type: 'string', demandOption: true, describe: 'the card id (see list-cards)' });

const unblockCommand: CommandModule<AdminArgs, CardIdArgs> = {
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

const forceLogoutCommand: CommandModule<AdminArgs, CardIdArgs> = {
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

const deleteCardCommand: CommandModule<AdminArgs, CardIdArgs> = {
  command: 'delete-card <cardId>',
  describe: 'Delete a card with its sealed keys, objects and sessions (crypto-shred; cannot be undone)',
  builder: cardIdPositional,
  handler: async (args) => {
    await withStorage(args, (storage) => deleteCard({ storage, cardId: args.cardId, actor: adminActor() }));
    if (args.json) return printJson({ cardId: args.cardId, deleted: true });
    print(`card ${args.cardId} deleted`);
  },
};

interface RotateKekArgs extends AdminArgs {
  retire: boolean;
}

const rotateKekCommand: CommandModule<AdminArgs, RotateKekArgs> = {
  command: 'rotate-kek',
  describe: 'Make a new key-encryption key version current and rewrap every data key under it',
  builder: (y) =>
    y.option('retire', {
      type: 'boolean',
      default: true,
      describe: 'destroy old KEK versions no row uses any more (--no-retire keeps them)',
    }),
  handler: async (args) => {
    const rotation = await withResources(args, ({ storage, kek }) =>
      rotateKek({ storage, kek, retire: args.retire, actor: adminActor() }),
    );
    if (args.json) return printJson(rotation);
    print(`KEK rotated: version ${rotation.previousVersion} -> ${rotation.currentVersion}`);
    print(`  data keys rewrapped  ${rotation.rewrapped} (${rotation.skipped} already rewritten by sessions)`);
    print(`  versions retired     ${rotation.retired.join(', ') || 'none'}`);
    print(`  versions kept        ${rotation.kept.join(', ') || 'none'}`);
    print('Restart running servers so that they wrap new keys under the new version.');
  },
};

interface DeviceArgs extends AdminArgs {
  deviceId: string;
}

const approveDeviceCommand: CommandModule<AdminArgs, DeviceArgs> = {
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

const auditVerifyCommand: CommandModule<AuditArgs, AuditArgs> = {
  command: 'verify',
  describe: 'Verify the hash chain of the whole audit log (exit status 1 when broken)',
  handler: async (args) => {
    const chain = await withStorage(args, async (storage) => {
      const result = await verifyChain(storage);
      await storage.transaction((tx) =>
        appendAudit(tx, {
          actor: adminActor(),
          eventType: ADMIN_AUDIT_EVENTS.auditVerified,
          details: result.ok
            ? { ok: true, count: result.count }
            : { ok: false, count: result.count, firstBadId: result.firstBadId, reason: result.reason },
        }),
      );
      return result;
    });
    if (args.json) printJson(chain);
    else print(describeChain(chain));
    if (!chain.ok) process.exitCode = 1;
  },
};

interface AuditArgs extends AdminArgs {
  card: string | undefined;
  event: string | undefined;
  limit: number | undefined;
  export: boolean | undefined;
}

const auditCommand: CommandModule<AdminArgs, AuditArgs> = {
  command: 'audit',
  describe: 'Show audit log entries (newest --limit, oldest first) with the chain check, or --export them',
  builder: (y) =>
    y
      .option('card', { type: 'string', describe: 'only entries of this card' })
      .option('event', { type: 'string', describe: 'only entries of this event type, e.g. card.created' })
      .option('limit', { type: 'number', describe: 'newest entries shown (default 100, at most 10000)' })
      .option('export', {
        type: 'boolean',
        describe: 'write every matching entry to stdout as JSON lines, with its hashes',
      })
      .conflicts('export', 'limit')
      .command(auditVerifyCommand),
  handler: async (args) => {
    const filter: AuditFilter = {
      ...(args.card !== undefined ? { cardId: args.card } : {}),
      ...(args.event !== undefined ? { eventType: args.event } : {}),
    };
    if (args.export === true) {
      const count = await withStorage(args, async (storage) => {
        const written = await exportJsonLines(storage, process.stdout, filter);
        await storage.transaction((tx) =>
          appendAudit(tx, {
            actor: adminActor(),
            eventType: ADMIN_AUDIT_EVENTS.auditExported,
            details: {
              count: written,
              ...(filter.cardId !== undefined ? { filterCardId: filter.cardId } : {}),
              ...(filter.eventType !== undefined ? { filterEventType: filter.eventType } : {}),
            },
          }),
        );
        return written;
      });
      process.stderr.write(`exported ${count} audit entries\n`);
      return;
    }
    const result = await withStorage(args, (storage) =>
      queryAudit({
        storage,
        filter,
        ...(args.limit !== undefined ? { limit: args.limit } : {}),
        actor: adminActor(),
      }),
    );
    if (args.json) return printJson(result);
    if (result.entries.length === 0) print('no matching audit entries');
    for (const entry of result.entries) print(describeEntry(entry));
    if (result.chain) {
      const line = describeChain(result.chain);
      if (result.chain.ok) print(line);
      else process.stderr.write(`cardlink: ${line}; see 'cardlink admin audit verify'\n`);
    }
  },
};

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
      .demandCommand(1, "Name an admin command; see 'cardlink admin --help'."),
  handler: () => undefined,
};
