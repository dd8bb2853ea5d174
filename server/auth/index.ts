/** Authentication: access tokens from trusted issuers, and the device proof. */
export * from './types.js';
export * from './errors.js';
export * from './issuer-keys.js';
export * from './token-validator.js';
export * from './device-proof.js';
export * from './failure-throttle.js';
