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
} as const;
