/** The cardlink wire protocol between daemon and card server (docs/protocol.md). */
export * from './limits.js';
export * from './frames.js';
export * from './byte-io.js';
export * from './frame-codec.js';
export * from './close-codes.js';
export * from './device-proof.js';
export * from './session-url.js';
export * from './snapshot-signature.js';
