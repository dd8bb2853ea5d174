/**
 * The card server's persistence: one Kysely code path over SQLite and PostgreSQL, and the home of
 * every database query (eslint.config.js refuses them anywhere else in the product).
 */
export * from './database-url.js';
export * from './errors.js';
export * from './schema.js';
export * from './storage.js';
export * from './migrations.js';
export * from './cards.js';
export * from './card-sessions.js';
export * from './card-keys.js';
export * from './card-objects.js';
export * from './reference-data.js';
export * from './identities.js';
export * from './audit.js';
export * from './wrapped-keys.js';
export * from './listings.js';
export * from './issuing-ca.js';
export * from './ca-key-location.js';
export * from './renewal.js';
export * from './pin-history.js';
export * from './archived-keys.js';
