export * from './card-key-crypto.js';
export * from './self-signed.js';
export * from './piv-certificate-object.js';
