export * from './errors.js';
export * from './key-algorithms.js';
export * from './key-generation.js';
export * from './private-key-operations.js';
export * from './management-key.js';
export * from './pkcs8.js';
