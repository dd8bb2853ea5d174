/** Shared by the `cardlink admin` functions. */

/** Audit actor of an administrator action when the caller names none. */
export const DEFAULT_ADMIN_ACTOR = 'admin:cli';

/** A user as the identity provider names them, and the tenant (id) they belong to. */
export interface AdminUser {
  readonly issuer: string;
  readonly subject: string;
  readonly tenant: string;
}

/** Audit events of administrator actions that have no card-state counterpart. */
export const ADMIN_AUDIT_EVENTS = {
  usersListed: 'admin.users-listed',
  cardsListed: 'admin.cards-listed',
  auditQueried: 'admin.audit-queried',
  auditExported: 'admin.audit-exported',
  auditVerified: 'admin.audit-verified',
  sessionsListed: 'admin.sessions-listed',
  /** The card was taken from whichever session held it (`cardlink admin force-logout`). */
  forcedLogout: 'admin.forced-logout',
  /** A card's archived key management keys were listed (`cardlink admin list-archived-keys`). */
  archivedKeysListed: 'admin.archived-keys-listed',
} as const;
