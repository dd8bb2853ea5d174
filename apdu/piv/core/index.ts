/**
 * The PIV card without its key material: the card logic (PivCard), its constants, data objects,
 * state interfaces and the public snapshot. Loading it loads no private-key code and no
 * certificate toolkit, so a process that only answers a card's public commands (the daemon's
 * front card, daemon/cards/front-card.ts) stays small: the in-memory card state (private-key
 * operations on @noble/curves) and provisioning (certificates with @peculiar/x509) cost about
 * 20 MiB of resident memory together, more than the rest of the daemon (docs/performance.md).
 *
 * `apdu/piv/index.ts` exports all of this plus those two; import from here where they are not
 * needed. PivCard loads an instruction's handler when it first runs it (commands/index.ts), so a
 * card that only answers SELECT and GET DATA never loads GENERAL AUTHENTICATE or IMPORT KEY.
 */
export * from '../card-state.js';
export * from '../constants.js';
export * from '../atr.js';
export * from '../piv-card.js';
export * from '../security-state.js';
export * from '../reference-data.js';
export * from '../key-policy.js';
export * from '../public-key-template.js';
export * from '../objects/index.js';
export { applicationPropertyTemplate, isPivAid, APPLICATION_LABEL } from '../commands/select.js';
export { IMPLEMENTED_INSTRUCTIONS } from '../commands/index.js';
export * from '../card-state-rules.js';
export * from '../dynamic-auth.js';
export * from '../snapshot.js';
export * from '../reference-blocking.js';
export * from '../pin-change.js';
export * from '../pin-policy.js';
