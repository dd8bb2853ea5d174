/** Key protection: KEK providers, sealing, PIN verifiers, KEK rotation. */
export * from './kek-provider.js';
export * from './key-file-provider.js';
export * from './pkcs11-provider.js';
export * from './token-keys.js';
export * from './sealing.js';
export * from './pin-verifier.js';
export * from './rewrap.js';
