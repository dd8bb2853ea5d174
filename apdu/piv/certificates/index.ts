export * from './card-key-crypto.js';
export * from './self-signed.js';
export * from './piv-certificate-object.js';
export * from './x509-toolkit.js';
export * from './slot-usage.js';
