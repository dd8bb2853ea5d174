/** The functions behind `cardlink admin` (the CLI wiring lives elsewhere). */
export * from './admin-common.js';
export * from './profile.js';
export * from './create-card.js';
export * from './card-admin.js';
export * from './kek-admin.js';
export * from './audit-query.js';
export * from './session-admin.js';
export * from './device-admin.js';
