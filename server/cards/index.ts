/** Database-backed, sealed PIV card state for the card server (one card, one session). */
export * from './persistent-card-state.js';
export * from './command-unit.js';
export * from './errors.js';
export { wrongReferenceResponse } from './reference-store.js';
export { STORED_TOUCH_POLICY } from './key-store.js';
export { OBJECT_WRITTEN_EVENT } from './object-store.js';
