/**
 * A real OpenID Provider for tests: the local IdP of `cardlink demo` (demo/idp/local-idp.ts, one
 * set-up for both) on 127.0.0.1 (random port), with
 * - one public native client (no secret, PKCE required, loopback redirect `http://127.0.0.1/callback`,
 *   grant types authorization_code, refresh_token and the device authorization grant);
 * - resource indicators (RFC 8707): access tokens are RFC 9068 JWTs whose `aud` is the card
 *   server's resource URL;
 * - a small account store (TEST_ACCOUNTS) and the IdP's login and consent pages, which `login()` and
 *   `deviceLogin()` fill in by program (demo/idp/idp-browser.ts), so a complete login needs no person;
 * - the user's part alone, for testing a real client: `approveDeviceCode()` / `denyDeviceCode()` for a
 *   device login the client started, `authorize()` / `completeBrowserLogin()` for a client's
 *   authorization URL up to (and including) the redirect to its loopback callback.
 *
 * For negative tests it mints tokens directly with jose (`mintAccessToken`, `mintBadToken`), and it
 * rotates its signing key (`rotateSigningKey`) the way an IdP does: a new key is published and made
 * current while the old one stays published.
 */
import { createHash, createPublicKey, randomBytes, randomUUID, type JsonWebKey } from 'node:crypto';
import { importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { driveAuthorization, enterDeviceCode, type IdpCredentials } from '../../demo/idp/idp-browser.js';
import {
  DEVICE_VERIFICATION_PATH,
  newSigningJwk,
  publicJwk,
  startLocalIdp,
} from '../../demo/idp/local-idp.js';

/** The native client registered at the test IdP. */
export const TEST_CLIENT_ID = 'cardlink-daemon';
/** Its loopback redirect (RFC 8252 section 7.3: any port is accepted). */
export const TEST_REDIRECT_URI = 'http://127.0.0.1/callback';
/** The card server's resource indicator, unless a test names another. */
export const DEFAULT_TEST_RESOURCE = 'https://cards.cardlink.test/';
/** The scope of the card server's resource. */
export const CARDS_SCOPE = 'cards';
/** Lifetime of access tokens the IdP issues, in seconds, unless a test says otherwise. */
export const DEFAULT_ACCESS_TOKEN_TTL_SECONDS = 600;

export interface TestAccount {
  readonly id: string;
  readonly password: string;
  readonly email: string;
}

export const TEST_ACCOUNTS: readonly TestAccount[] = [
  { id: 'alice', password: 'alice-password', email: 'alice@example.test' },
  { id: 'bob', password: 'bob-password', email: 'bob@example.test' },
];

/** Algorithms the test IdP can sign access tokens with. */
export type TestSigningAlg = 'ES256' | 'ES384' | 'RS256' | 'PS256' | 'EdDSA';

export interface StartTestIdpOptions {
  /** `aud` of the access tokens (the card server). */
  resource?: string;
  accessTokenTtlSeconds?: number;
  /** Algorithm of the access tokens' signature (default ES256). */
  accessTokenAlg?: TestSigningAlg;
  /** Lifetime of device codes (RFC 8628 `expires_in`), in seconds (default 600). */
  deviceCodeTtlSeconds?: number;
}

/** The page our loopback callback served to the "browser" (see TestIdp.completeBrowserLogin). */
export interface BrowserCallbackResult {
  /** The redirect URI with the authorization response (code, state, iss) that the IdP sent the browser to. */
  callbackUrl: URL;
  status: number;
  headers: Headers;
  body: string;
}

export interface TokenSet {
  accessToken: string;
  refreshToken: string | undefined;
  idToken: string | undefined;
  expiresIn: number;
}

/** Kinds of deliberately bad access tokens (see mintBadToken). */
export type BadTokenKind =
  | 'alg-none'
  | 'hs256-with-public-key'
  | 'disallowed-alg'
  | 'wrong-issuer'
  | 'wrong-audience'
  | 'expired'
  | 'not-yet-valid'
  | 'unknown-kid'
  | 'bad-signature';

export const BAD_TOKEN_KINDS: readonly BadTokenKind[] = [
  'alg-none',
  'hs256-with-public-key',
  'disallowed-alg',
  'wrong-issuer',
  'wrong-audience',
  'expired',
  'not-yet-valid',
  'unknown-kid',
  'bad-signature',
];

export interface MintOptions {
  /** Claims to set or replace; `undefined` removes a claim. */
  claims?: JWTPayload;
  /** Sign with this private JWK instead of the current signing key (it need not be published). */
  key?: JWK;
  /** Header `kid` (default: the signing key's). */
  kid?: string;
}

export interface TestIdp {
  readonly issuer: string;
  readonly resource: string;
  readonly clientId: string;
  readonly redirectUri: string;
  /** `kid` of the key that signs access tokens now. */
  readonly currentKid: string;
  /** Requests the IdP has served for its JWKS and its discovery document (for rate-limit tests). */
  readonly jwksRequests: number;
  readonly discoveryRequests: number;
  /** A complete Authorization Code + PKCE login of `account` (default alice), driven without a person. */
  login(options?: { account?: string; password?: string }): Promise<TokenSet>;
  /** A complete device authorization grant (RFC 8628), the user's part driven without a person. */
  deviceLogin(options?: { account?: string }): Promise<TokenSet>;
  refresh(refreshToken: string): Promise<TokenSet>;
  /**
   * Only the user's part of a device login (RFC 8628 section 3.3): opens the verification page,
   * enters `userCode`, confirms, logs in as `account` (default alice) and consents.
   */
  approveDeviceCode(
    userCode: string,
    options?: { account?: string; verificationUri?: string },
  ): Promise<void>;
  /** The user's part, refusing: enters `userCode` and aborts, so the device code ends in access_denied. */
  denyDeviceCode(userCode: string, options?: { verificationUri?: string }): Promise<void>;
  /**
   * Follows a client's authorization URL through login and consent as `account` (default alice) up to
   * the redirect to the client (any URL off the IdP's origin), and returns that redirect URL without
   * fetching it.
   */
  authorize(authorizationUrl: string | URL, options?: { account?: string; password?: string }): Promise<URL>;
  /** `authorize()`, then fetches the redirect like a browser would; returns what the client's page answered. */
  completeBrowserLogin(
    authorizationUrl: string | URL,
    options?: { account?: string; password?: string },
  ): Promise<BrowserCallbackResult>;
  /** Publishes a new signing key and makes it current (the old one stays published); returns its kid. */
  rotateSigningKey(): Promise<string>;
  /** An access token signed like the IdP's own (RFC 9068 claims), with overrides. */
  mintAccessToken(options?: MintOptions): Promise<string>;
  /** A token that a validator must refuse, one per kind. */
  mintBadToken(kind: BadTokenKind): Promise<string>;
  close(): Promise<void>;
}

/** What the card server, the daemon's set-up and the benchmarks need of an IdP (also across processes: idp-process.ts). */
export type TestIdpClient = Pick<
  TestIdp,
  'issuer' | 'resource' | 'clientId' | 'login' | 'approveDeviceCode' | 'mintAccessToken' | 'close'
>;

const b64u = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** Starts the IdP; `close()` it when done. */
export async function startTestIdp(options: StartTestIdpOptions = {}): Promise<TestIdp> {
  const resource = options.resource ?? DEFAULT_TEST_RESOURCE;
  const accessTokenTtl = options.accessTokenTtlSeconds ?? DEFAULT_ACCESS_TOKEN_TTL_SECONDS;
  const accessTokenAlg = options.accessTokenAlg ?? 'ES256';
  const accounts = new Map(TEST_ACCOUNTS.map((a) => [a.id, a]));

  // Signing keys, current first: the provider signs with the first key that fits the algorithm.
  let accessTokenKeys: JWK[] = [await newSigningJwk(accessTokenAlg)];
  let jwksRequests = 0;
  let discoveryRequests = 0;

  const local = await startLocalIdp({
    port: 0,
    clientId: TEST_CLIENT_ID,
    redirectUri: TEST_REDIRECT_URI,
    resource,
    resourceScope: CARDS_SCOPE,
    accounts: {
      find: (id) => accounts.get(id),
      verify: (id, password) => accounts.get(id)?.password === password,
    },
    accessTokenKeys,
    // ID tokens are RS256 (the OpenID Connect default), signed by a key of their own.
    idTokenKey: await newSigningJwk('RS256'),
    accessTokenAlg,
    accessTokenTtlSeconds: accessTokenTtl,
    deviceCodeTtlSeconds: options.deviceCodeTtlSeconds ?? 600,
    cookieKeys: [randomBytes(32).toString('hex')],
    title: 'cardlink test IdP',
    onRequest: (path) => {
      if (path === '/jwks') jwksRequests++;
      if (path === '/.well-known/openid-configuration') discoveryRequests++;
    },
  });
  const { issuer, port } = local;

  const credentialsOf = (account: string, password?: string): IdpCredentials => ({
    id: account,
    password: password ?? accounts.get(account)?.password ?? '',
  });

  /** The user's part of a device login, as `account` or refusing. */
  async function deviceUserPart(userCode: string, verificationUri: string, account: TestAccount | 'deny') {
    await enterDeviceCode(userCode, verificationUri, account === 'deny' ? 'deny' : credentialsOf(account.id));
  }

  /** Drives an authorization URL up to the redirect off the IdP's origin (the client's redirect URI). */
  async function authorizeAt(authorizationUrl: string | URL, account: string, password: string | undefined) {
    const redirect = await driveAuthorization(new URL(authorizationUrl), credentialsOf(account, password));
    if (redirect.origin === new URL(issuer).origin)
      throw new Error(`test IdP: the login ended at ${redirect.pathname}`);
    return redirect;
  }

  async function tokenRequest(params: Record<string, string>): Promise<TokenSet> {
    const response = await fetch(new URL('/token', issuer), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: TEST_CLIENT_ID, ...params }),
    });
    const json = (await response.json()) as Record<string, unknown>;
    if (!response.ok) throw new Error(`test IdP token endpoint: ${response.status} ${JSON.stringify(json)}`);
    return tokenSet(json);
  }

  async function mint(options: MintOptions = {}): Promise<string> {
    const jwk = options.key ?? accessTokenKeys[0]!;
    const alg = jwk.alg!;
    const now = Math.floor(Date.now() / 1000);
    const claims: JWTPayload = {
      iss: issuer,
      sub: TEST_ACCOUNTS[0]!.id,
      aud: resource,
      client_id: TEST_CLIENT_ID,
      scope: CARDS_SCOPE,
      jti: randomUUID(),
      iat: now,
      exp: now + accessTokenTtl,
      ...options.claims,
    };
    for (const k of Object.keys(claims)) if (claims[k] === undefined) delete claims[k];
    return new SignJWT(claims)
      .setProtectedHeader({ alg, typ: 'at+jwt', kid: options.kid ?? jwk.kid! })
      .sign(await importJWK(jwk, alg));
  }

  const idp: TestIdp = {
    issuer,
    resource,
    clientId: TEST_CLIENT_ID,
    redirectUri: TEST_REDIRECT_URI,
    get currentKid() {
      return accessTokenKeys[0]!.kid!;
    },
    get jwksRequests() {
      return jwksRequests;
    },
    get discoveryRequests() {
      return discoveryRequests;
    },

    async login({ account = TEST_ACCOUNTS[0]!.id, password } = {}) {
      const credentials = credentialsOf(account, password);
      const verifier = b64u(randomBytes(32));
      const state = b64u(randomBytes(16));
      const authorize = new URL('/auth', issuer);
      authorize.search = new URLSearchParams({
        client_id: TEST_CLIENT_ID,
        response_type: 'code',
        redirect_uri: TEST_REDIRECT_URI,
        scope: `openid email offline_access ${CARDS_SCOPE}`,
        resource,
        prompt: 'consent',
        state,
        nonce: b64u(randomBytes(16)),
        code_challenge: b64u(createHash('sha256').update(verifier).digest()),
        code_challenge_method: 'S256',
      }).toString();
      const callback = await driveAuthorization(authorize, credentials, {
        isClientRedirect: (next) => next.href.startsWith(TEST_REDIRECT_URI),
      });
      const code = callback.searchParams.get('code');
      if (callback.searchParams.get('state') !== state) throw new Error('test IdP: state mismatch');
      if (!code)
        throw new Error(`test IdP: no code in the redirect (${callback.searchParams.get('error') ?? '?'})`);
      return tokenRequest({
        grant_type: 'authorization_code',
        code,
        redirect_uri: TEST_REDIRECT_URI,
        code_verifier: verifier,
        resource,
      });
    },

    async deviceLogin({ account = TEST_ACCOUNTS[0]!.id } = {}) {
      const known = accounts.get(account);
      if (!known) throw new Error(`test IdP: no account ${account}`);
      const started = await fetch(new URL('/device/auth', issuer), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({
          client_id: TEST_CLIENT_ID,
          scope: `openid offline_access ${CARDS_SCOPE}`,
          resource,
        }),
      });
      const auth = (await started.json()) as {
        device_code: string;
        user_code: string;
        verification_uri: string;
      };
      if (!started.ok) throw new Error(`test IdP device authorization: ${JSON.stringify(auth)}`);
      // The user's part: open the verification page, enter the code, log in, consent, confirm.
      await deviceUserPart(auth.user_code, auth.verification_uri, known);
      return tokenRequest({
        grant_type: 'urn:ietf:params:oauth:grant-type:device_code',
        device_code: auth.device_code,
        resource,
      });
    },

    refresh(refreshToken: string) {
      return tokenRequest({ grant_type: 'refresh_token', refresh_token: refreshToken, resource });
    },

    async approveDeviceCode(userCode, { account = TEST_ACCOUNTS[0]!.id, verificationUri } = {}) {
      const known = accounts.get(account);
      if (!known) throw new Error(`test IdP: no account ${account}`);
      await deviceUserPart(
        userCode,
        verificationUri ?? new URL(DEVICE_VERIFICATION_PATH, issuer).href,
        known,
      );
    },

    async denyDeviceCode(userCode, { verificationUri } = {}) {
      await deviceUserPart(
        userCode,
        verificationUri ?? new URL(DEVICE_VERIFICATION_PATH, issuer).href,
        'deny',
      );
    },

    authorize(authorizationUrl, { account = TEST_ACCOUNTS[0]!.id, password } = {}) {
      return authorizeAt(authorizationUrl, account, password);
    },

    async completeBrowserLogin(authorizationUrl, { account = TEST_ACCOUNTS[0]!.id, password } = {}) {
      const callbackUrl = await authorizeAt(authorizationUrl, account, password);
      const response = await fetch(callbackUrl, { redirect: 'manual' });
      return { callbackUrl, status: response.status, headers: response.headers, body: await response.text() };
    },

    async rotateSigningKey() {
      const key = await newSigningJwk(accessTokenAlg);
      accessTokenKeys = [key, ...accessTokenKeys];
      local.setAccessTokenKeys(accessTokenKeys);
      return key.kid!;
    },

    mintAccessToken: mint,

    async mintBadToken(kind: BadTokenKind) {
      const now = Math.floor(Date.now() / 1000);
      switch (kind) {
        case 'alg-none': {
          const header = b64u(JSON.stringify({ alg: 'none', typ: 'at+jwt' }));
          const payload = b64u(
            JSON.stringify({
              iss: issuer,
              sub: 'alice',
              aud: resource,
              iat: now,
              exp: now + 600,
              client_id: TEST_CLIENT_ID,
            }),
          );
          return `${header}.${payload}.`;
        }
        case 'hs256-with-public-key': {
          // The classic key confusion: HMAC keyed with the bytes of the IdP's published public key.
          const current = accessTokenKeys[0]!;
          const pem = createPublicKey({ key: publicJwk(current) as JsonWebKey, format: 'jwk' })
            .export({ type: 'spki', format: 'pem' })
            .toString();
          return new SignJWT({ iss: issuer, sub: 'alice', aud: resource, client_id: TEST_CLIENT_ID })
            .setProtectedHeader({ alg: 'HS256', typ: 'at+jwt', kid: current.kid! })
            .setIssuedAt(now)
            .setExpirationTime(now + 600)
            .sign(new TextEncoder().encode(pem));
        }
        case 'disallowed-alg':
          return mint({ key: await newSigningJwk('ES512') });
        case 'wrong-issuer':
          return mint({ claims: { iss: `http://127.0.0.1:${port}/not-the-issuer` } });
        case 'wrong-audience':
          return mint({ claims: { aud: 'https://some-other-api.example/' } });
        case 'expired':
          return mint({ claims: { iat: now - 7200, exp: now - 3600 } });
        case 'not-yet-valid':
          return mint({ claims: { nbf: now + 3600 } });
        case 'unknown-kid':
          return mint({ key: await newSigningJwk(accessTokenAlg, 'never-published') });
        case 'bad-signature':
          // A key the IdP never had, claiming the IdP's current kid.
          return mint({ key: await newSigningJwk(accessTokenAlg), kid: accessTokenKeys[0]!.kid! });
      }
    },

    close: () => local.close(),
  };
  return idp;
}

function tokenSet(json: Record<string, unknown>): TokenSet {
  if (typeof json['access_token'] !== 'string') throw new Error('test IdP: no access_token');
  return {
    accessToken: json['access_token'],
    refreshToken: typeof json['refresh_token'] === 'string' ? json['refresh_token'] : undefined,
    idToken: typeof json['id_token'] === 'string' ? json['id_token'] : undefined,
    expiresIn: Number(json['expires_in']),
  };
}
