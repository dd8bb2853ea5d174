/** The hash-chained audit log. */
export * from './audit-log.js';
export * from './canonical-json.js';
