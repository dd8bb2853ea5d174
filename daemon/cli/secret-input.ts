/** Reading PINs and PUKs for `cardlink pin`: the shared reader in protocol/secret-input.ts. */
export { MAX_SECRET_LINE_BYTES, readSecrets, type SecretInput } from '../../protocol/secret-input.js';
