/**
 * `cardlink admin audit [verify]`: wires its options to server/admin/audit-query.ts and prints the
 * entries and the chain check (or, with --json, returns them as JSON; with --export, JSON lines).
 */
import type { CommandModule } from 'yargs';
import { exportAudit, queryAudit, verifyAudit } from '../../admin/index.js';
import type { AuditEntry, AuditFilter, ChainVerification } from '../../audit/audit-log.js';
import { adminActor, e, print, printJson, withStorage, type AdminArgs } from './admin-cli.js';

function describeChain(chain: ChainVerification): string {
  return chain.ok
    ? `audit chain ok: ${chain.count} entries, head ${chain.headHash}`
    : `audit chain BROKEN at entry ${chain.firstBadId} (${chain.reason}); ${chain.count} entries verified before it`;
}

function describeEntry(entry: AuditEntry): string {
  const card = entry.cardId ? ` card ${e(entry.cardId)}` : '';
  return `#${entry.id} ${entry.time} ${e(entry.actor)} ${e(entry.eventType)}${card} ${e(JSON.stringify(entry.details))}`;
}

interface AuditArgs extends AdminArgs {
  card: string | undefined;
  event: string | undefined;
  limit: number | undefined;
  export: boolean | undefined;
}

const auditVerifyCommand: CommandModule<AuditArgs, AuditArgs> = {
  command: 'verify',
  describe: 'Verify the hash chain of the whole audit log (exit status 1 when broken)',
  handler: async (args) => {
    const chain = await withStorage(args, (storage) => verifyAudit({ storage, actor: adminActor() }));
    if (args.json) printJson(chain);
    else print(describeChain(chain));
    if (!chain.ok) process.exitCode = 1;
  },
};

export const auditCommand: CommandModule<AdminArgs, AuditArgs> = {
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
      const count = await withStorage(args, (storage) =>
        exportAudit({ storage, stream: process.stdout, filter, actor: adminActor() }),
      );
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
