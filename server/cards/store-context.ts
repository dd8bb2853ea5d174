import type { KeyLocation } from '../keys/sealing.js';
import type { KekProvider } from '../keys/kek-provider.js';
import type { CardFence, Storage } from '../storage/index.js';
import type { CommandUnit } from './command-unit.js';
import type { SessionCache } from './session-cache.js';

/** What the four stores of a persistent card state share (see persistent-card-state.ts). */
export interface StoreContext {
  readonly storage: Storage;
  readonly kek: KekProvider;
  /** The card and the session's epoch: every write is fenced with it. */
  readonly fence: CardFence;
  readonly tenantId: string;
  readonly sessionId: string;
  /** Audit actor of the session (`user:<id>`, ...). */
  readonly actor: string;
  readonly cache: SessionCache;
  /**
   * Key archival of the card (profile `archiveKeyManagementKey`): a 9D key generated or imported
   * through the card's interface is archived like one made by an administrator
   * (server/archival/key-archive.ts), or refused when the recovery certificate is unusable.
   */
  readonly keyArchival: KeyArchivalSettings;
  /**
   * Runs one store call in the unit of the command running on this state (`runCommand`), or in
   * a unit of its own that commits when the call returns.
   */
  call<T>(fn: (unit: CommandUnit) => Promise<T>): Promise<T>;
  /**
   * Queues an audit entry about this card in the unit (fenced; commits with the unit). `lazy`: see
   * CommandUnit.audit.
   */
  audit(
    unit: CommandUnit,
    eventType: string,
    details: Record<string, unknown>,
    options?: { readonly lazy?: boolean },
  ): Promise<void>;
}

export interface KeyArchivalSettings {
  readonly required: boolean;
  /** The server setting `keyArchival.recoveryCertificate`. */
  readonly recoveryCertificate?: string | undefined;
}

/** Where a slot's sealed key belongs: its AAD binding. */
export function keyLocation(ctx: StoreContext, slot: number): KeyLocation {
  return { tenantId: ctx.tenantId, cardId: ctx.fence.cardId, slot };
}

/** `0x9a`, as slots appear in audit details. */
export function slotName(slot: number): string {
  return `0x${slot.toString(16).padStart(2, '0')}`;
}
