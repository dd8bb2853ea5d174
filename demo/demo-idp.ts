/**
 * The demo identity provider: the local IdP (idp/local-idp.ts) with one account, the demo user,
 * whose password is generated on the first run and kept 0600 in the state directory, and signing
 * keys kept there too (so a second run issues tokens the card server already trusts the same way).
 * For use on this machine only: 127.0.0.1, plain HTTP (docs/demo.md).
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import type { JWK } from 'jose';
import { CardlinkError } from '../protocol/errors.js';
import { writeFileAtomic } from './demo-state.js';
import { newSigningJwk, startLocalIdp, type LocalIdp } from './idp/local-idp.js';

/** The demo user's name: the IdP account, the `sub` of its tokens, the card's owner. */
export const DEMO_USER = 'demo';
/** The daemon's client id at the demo IdP (the daemon config's login.clientId). */
export const DEMO_CLIENT_ID = 'cardlink-daemon';
/** Its loopback redirect; any port (RFC 8252 section 7.3). */
export const DEMO_REDIRECT_URI = 'http://127.0.0.1/callback';
/** The card server's scope. */
export const DEMO_SCOPE = 'cards';
/** Lifetime of the demo's access tokens; the daemon refreshes them with the refresh token. */
export const DEMO_ACCESS_TOKEN_TTL_SECONDS = 600;
/** Lifetime of a device code (the user has this long to enter it). */
export const DEMO_DEVICE_CODE_TTL_SECONDS = 600;
/** Bytes of randomness in a generated password (base64url: 22 characters). */
const PASSWORD_BYTES = 16;

interface DemoIdpKeys {
  accessToken: JWK;
  idToken: JWK;
  cookieKeys: string[];
}

/** A new demo password. */
export function generateDemoPassword(): string {
  return randomBytes(PASSWORD_BYTES).toString('base64url');
}

/** The IdP's keys from `file`, or new ones written there (0600) on the first run. */
export async function loadOrCreateDemoIdpKeys(file: string): Promise<DemoIdpKeys> {
  if (fs.existsSync(file)) {
    try {
      const keys = JSON.parse(fs.readFileSync(file, 'utf8')) as DemoIdpKeys;
      if (keys.accessToken?.d && keys.idToken?.d && Array.isArray(keys.cookieKeys)) return keys;
    } catch {
      // fall through to the error below
    }
    throw new CardlinkError('ERR_DEMO_STATE', `${file} is damaged: start over with 'cardlink demo --reset'`, {
      file,
    });
  }
  const keys: DemoIdpKeys = {
    accessToken: await newSigningJwk('ES256'),
    // ID tokens are RS256 (the OpenID Connect default).
    idToken: await newSigningJwk('RS256'),
    cookieKeys: [randomBytes(32).toString('hex')],
  };
  writeFileAtomic(file, `${JSON.stringify(keys)}\n`, 0o600);
  return keys;
}

const digest = (text: string) => createHash('sha256').update(text, 'utf8').digest();

export interface StartDemoIdpOptions {
  port: number;
  /** The card server's URL: the access tokens' audience. */
  resource: string;
  keys: DemoIdpKeys;
  password: string;
}

/** Starts the demo IdP; rejects with the listen error (EADDRINUSE) when the port is taken. */
export function startDemoIdp(options: StartDemoIdpOptions): Promise<LocalIdp> {
  const expected = digest(options.password);
  const account = { id: DEMO_USER, email: `${DEMO_USER}@cardlink.localhost` };
  return startLocalIdp({
    port: options.port,
    clientId: DEMO_CLIENT_ID,
    redirectUri: DEMO_REDIRECT_URI,
    resource: options.resource,
    resourceScope: DEMO_SCOPE,
    accounts: {
      find: (id) => (id === DEMO_USER ? account : undefined),
      // Digests of equal length, compared in constant time.
      verify: (id, password) => id === DEMO_USER && timingSafeEqual(digest(password), expected),
    },
    accessTokenKeys: [options.keys.accessToken],
    idTokenKey: options.keys.idToken,
    accessTokenAlg: 'ES256',
    accessTokenTtlSeconds: DEMO_ACCESS_TOKEN_TTL_SECONDS,
    deviceCodeTtlSeconds: DEMO_DEVICE_CODE_TTL_SECONDS,
    cookieKeys: options.keys.cookieKeys,
    title: 'cardlink demo identity provider',
  });
}
