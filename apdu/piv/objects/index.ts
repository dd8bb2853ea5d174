export * from './catalogue.js';
export * from './fasc-n.js';
export * from './chuid.js';
export * from './ccc.js';
export * from './discovery.js';
export * from './key-history.js';
export * from './default-objects.js';
