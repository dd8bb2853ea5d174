/**
 * The administrator's actions behind `cardlink admin`: each takes the storage (and, where it
 * needs one, the KEK provider) and arguments, audits itself and returns plain data. The CLI
 * (server/cli/admin/) only wires options to them and formats the result.
 */
export * from './admin-common.js';
export * from './profile.js';
export * from './create-card.js';
export * from './card-admin.js';
export * from './kek-admin.js';
export * from './audit-query.js';
export * from './session-admin.js';
export * from './device-admin.js';
export * from './recover-key.js';
