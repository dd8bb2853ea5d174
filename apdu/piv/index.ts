export * from './core/index.js';
// The in-memory card state (private keys) and provisioning (certificates): see core/index.ts for
// who imports the core alone.
export * from './memory-card-state.js';
export * from './provisioning.js';
