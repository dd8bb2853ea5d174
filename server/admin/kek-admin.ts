/**
 * `cardlink admin rotate-kek`: a new KEK version for new wraps, every data key rewrapped under it
 * (sealed keys stay byte for byte, see server/keys/rewrap.ts), and with `retire` the old versions
 * destroyed once no row uses them. Live sessions are unaffected: they hold unsealed keys, and
 * their next seal uses the new version. The audit entry is appended after the rotation (the
 * provider's change cannot share a database transaction).
 */
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import type { KekProvider } from '../keys/kek-provider.js';
import { kekVersionsInUse, retireKekVersion, rewrapAll } from '../keys/rewrap.js';
import type { Storage } from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR } from './admin-common.js';

export interface KekRotation {
  readonly previousVersion: number;
  readonly currentVersion: number;
  /** Data keys moved to the new version. */
  readonly rewrapped: number;
  /** Rows a session replaced meanwhile (already under the new version). */
  readonly skipped: number;
  /** Old versions destroyed (with `retire`). */
  readonly retired: readonly number[];
  /** Old versions kept because rows still use them (with `retire`), or all old ones (without). */
  readonly kept: readonly number[];
}

export async function rotateKek(options: {
  storage: Storage;
  kek: KekProvider;
  /** Destroy old KEK versions no row uses any more (default true). */
  retire?: boolean;
  actor?: string;
}): Promise<KekRotation> {
  const { storage, kek } = options;
  const previousVersion = kek.currentVersion;
  const currentVersion = await kek.rotate();
  const { rewrapped, skipped } = await rewrapAll(storage, kek);
  const retired: number[] = [];
  const kept: number[] = [];
  const inUse = await kekVersionsInUse(storage);
  for (const version of kek.versions) {
    if (version === currentVersion) continue;
    if (options.retire === false || (inUse.get(version) ?? 0) > 0) {
      kept.push(version);
      continue;
    }
    await retireKekVersion(storage, kek, version);
    retired.push(version);
  }
  await storage.transaction((tx) =>
    appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: AUDIT_EVENTS.kekRotated,
      details: { provider: kek.kind, previousVersion, currentVersion, rewrapped, skipped, retired, kept },
    }),
  );
  return { previousVersion, currentVersion, rewrapped, skipped, retired, kept };
}
