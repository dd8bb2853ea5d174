export * from './der.js';
export * from './self-signed.js';
export * from './piv-certificate-object.js';
