export * from './status-words.js';
export * from './apdu-error.js';
export * from './command-apdu.js';
export * from './response-apdu.js';
export * from './ber-tlv.js';
export * from './chaining.js';
