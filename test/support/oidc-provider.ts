/**
 * A real OpenID Provider for tests: `oidc-provider` 9.x on 127.0.0.1 (random port), with
 * - one public native client (no secret, PKCE required, loopback redirect `http://127.0.0.1/callback`,
 *   grant types authorization_code, refresh_token and the device authorization grant);
 * - resource indicators (RFC 8707): access tokens are RFC 9068 JWTs whose `aud` is the card
 *   server's resource URL;
 * - a small account store (TEST_ACCOUNTS) and our own interaction endpoints, which `login()` and
 *   `deviceLogin()` drive with fetch and a cookie jar, so a complete login needs no person;
 * - the user's part alone, for testing a real client: `approveDeviceCode()` / `denyDeviceCode()` for a
 *   device login the client started, `authorize()` / `completeBrowserLogin()` for a client's
 *   authorization URL up to (and including) the redirect to its loopback callback.
 *
 * For negative tests it mints tokens directly with jose (`mintAccessToken`, `mintBadToken`), and it
 * rotates its signing key (`rotateSigningKey`) the way an IdP does: a new key is published and made
 * current while the old one stays published.
 */
import { createHash, createPublicKey, randomBytes, randomUUID, type JsonWebKey } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';

/** Path of oidc-provider's device verification page (its default `code_verification` route). */
const DEVICE_VERIFICATION_PATH = '/device';

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

// oidc-provider ships no type declarations: the little used here is typed locally.
interface Interaction {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}
interface Grant {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(resource: string, scope: string): void;
  save(): Promise<string>;
}
interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<Interaction>;
  interactionFinished(req: IncomingMessage, res: ServerResponse, result: object): Promise<void>;
  Grant: {
    new (init: { accountId: string; clientId: string }): Grant;
    find(id: string): Promise<Grant | undefined>;
  };
  on(event: string, listener: (...args: unknown[]) => void): void;
}
interface OidcProviderModule {
  Provider: new (issuer: string, configuration: object) => ProviderInstance;
  errors: { InvalidTarget: new (description?: string) => Error };
}

/**
 * The provider's storage: one in-memory adapter per test IdP, shared by the provider instances
 * that key rotation creates (so sessions, grants and refresh tokens survive a rotation).
 */
function memoryAdapterFactory(): new (name: string) => object {
  const store = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const live = (key: string) => {
    const entry = store.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      store.delete(key);
      return undefined;
    }
    return entry;
  };
  return class MemoryAdapter {
    constructor(private readonly name: string) {}
    private key(id: string) {
      return `${this.name}:${id}`;
    }
    async upsert(id: string, payload: Record<string, unknown>, expiresIn: number) {
      store.set(this.key(id), {
        payload: { ...payload },
        expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : Infinity,
      });
    }
    async find(id: string) {
      return live(this.key(id))?.payload;
    }
    async findByUserCode(userCode: string) {
      for (const [key] of store) {
        const entry = key.startsWith(`${this.name}:`) ? live(key) : undefined;
        if (entry?.payload['userCode'] === userCode) return entry.payload;
      }
      return undefined;
    }
    async findByUid(uid: string) {
      for (const [key] of store) {
        const entry = key.startsWith(`${this.name}:`) ? live(key) : undefined;
        if (entry?.payload['uid'] === uid) return entry.payload;
      }
      return undefined;
    }
    async consume(id: string) {
      const entry = live(this.key(id));
      if (entry) entry.payload['consumed'] = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string) {
      store.delete(this.key(id));
    }
    async revokeByGrantId(grantId: string) {
      for (const [key, entry] of store) if (entry.payload['grantId'] === grantId) store.delete(key);
    }
  };
}

/** Bare HTML for the device flow's pages (the driver only needs the forms). */
const devicePage = (ctx: { body: string }, form: string) => {
  ctx.body = `<!DOCTYPE html><html><body>${form}</body></html>`;
};

const ALG_KEY: Record<TestSigningAlg | 'ES512', Parameters<typeof generateKeyPair>[1]> = {
  ES256: {},
  ES384: {},
  ES512: {},
  RS256: { modulusLength: 2048 },
  PS256: { modulusLength: 2048 },
  EdDSA: { crv: 'Ed25519' },
};

async function newSigningJwk(alg: TestSigningAlg | 'ES512', kid: string = randomUUID()): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { ...ALG_KEY[alg], extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
  return pub;
}

const b64u = (data: string | Buffer) => Buffer.from(data).toString('base64url');

/** A cookie jar for one host: enough for the provider's session and interaction cookies. */
class CookieJar {
  private readonly cookies = new Map<string, { value: string; path: string }>();

  store(response: Response): void {
    for (const line of response.headers.getSetCookie()) {
      const [pair, ...attributes] = line.split(';');
      const eq = pair!.indexOf('=');
      const name = pair!.slice(0, eq).trim();
      const value = pair!.slice(eq + 1).trim();
      let path = '/';
      let expired = value === '';
      for (const a of attributes) {
        const [k, v = ''] = a.trim().split('=');
        if (k!.toLowerCase() === 'path') path = v;
        if (k!.toLowerCase() === 'expires' && Date.parse(v) <= Date.now()) expired = true;
        if (k!.toLowerCase() === 'max-age' && Number(v) <= 0) expired = true;
      }
      const key = `${name};${path}`;
      if (expired) this.cookies.delete(key);
      else this.cookies.set(key, { value, path });
    }
  }

  header(url: URL): string {
    const out: string[] = [];
    for (const [key, c] of this.cookies) {
      if (
        url.pathname === c.path ||
        url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`) ||
        c.path === '/'
      ) {
        out.push(`${key.slice(0, key.indexOf(';'))}=${c.value}`);
      }
    }
    return out.join('; ');
  }
}

/** Starts the IdP; `close()` it when done. */
export async function startTestIdp(options: StartTestIdpOptions = {}): Promise<TestIdp> {
  // The module is untyped; a computed specifier keeps tsc from looking for declarations.
  const specifier = 'oidc-provider';
  const { Provider, errors } = (await import(specifier)) as OidcProviderModule;

  const resource = options.resource ?? DEFAULT_TEST_RESOURCE;
  const accessTokenTtl = options.accessTokenTtlSeconds ?? DEFAULT_ACCESS_TOKEN_TTL_SECONDS;
  const accessTokenAlg = options.accessTokenAlg ?? 'ES256';
  const accounts = new Map(TEST_ACCOUNTS.map((a) => [a.id, a]));
  const cookieKeys = [randomBytes(32).toString('hex')];
  const adapter = memoryAdapterFactory();

  // Signing keys, current first: the provider signs with the first key that fits the algorithm.
  let accessTokenKeys: JWK[] = [await newSigningJwk(accessTokenAlg)];
  // ID tokens are RS256 (the OpenID Connect default), signed by a key of their own.
  const idTokenKey = await newSigningJwk('RS256');

  let jwksRequests = 0;
  let discoveryRequests = 0;
  let provider: ProviderInstance | undefined;

  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    if (path === '/jwks') jwksRequests++;
    if (path === '/.well-known/openid-configuration') discoveryRequests++;
    if (!provider) {
      res.statusCode = 503;
      res.end();
      return;
    }
    if (path.startsWith('/interaction/')) {
      void handleInteraction(provider, req, res, path).catch((e: unknown) => {
        res.statusCode = 500;
        res.setHeader('Content-Type', 'application/json');
        res.end(
          JSON.stringify({
            error: 'interaction_failed',
            message: e instanceof Error ? e.message : String(e),
          }),
        );
      });
      return;
    }
    provider.callback()(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;

  function buildProvider(): ProviderInstance {
    const p = new Provider(issuer, {
      clients: [
        {
          client_id: TEST_CLIENT_ID,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          redirect_uris: [TEST_REDIRECT_URI],
          response_types: ['code'],
          grant_types: [
            'authorization_code',
            'refresh_token',
            'urn:ietf:params:oauth:grant-type:device_code',
          ],
        },
      ],
      adapter,
      jwks: { keys: [...accessTokenKeys, idTokenKey] },
      cookies: { keys: cookieKeys },
      ttl: {
        AccessToken: accessTokenTtl,
        AuthorizationCode: 60,
        DeviceCode: options.deviceCodeTtlSeconds ?? 600,
        Grant: 3600,
        IdToken: 3600,
        Interaction: 600,
        RefreshToken: 86_400,
        Session: 3600,
      },
      scopes: ['openid', 'offline_access', 'email'],
      claims: { openid: ['sub'], email: ['email'] },
      pkce: { required: () => true },
      findAccount: (_ctx: unknown, sub: string) => {
        const account = accounts.get(sub);
        if (!account) return undefined;
        return { accountId: sub, claims: () => ({ sub, email: account.email }) };
      },
      interactions: { url: (_ctx: unknown, interaction: Interaction) => `/interaction/${interaction.uid}` },
      features: {
        devInteractions: { enabled: false },
        deviceFlow: {
          enabled: true,
          userCodeInputSource: devicePage,
          userCodeConfirmSource: devicePage,
          successSource: (ctx: { body: string }) => devicePage(ctx, '<p>Signed in.</p>'),
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => resource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, indicator: string) => {
            if (indicator !== resource) throw new errors.InvalidTarget();
            return {
              scope: CARDS_SCOPE,
              audience: resource,
              accessTokenTTL: accessTokenTtl,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: accessTokenAlg } },
            };
          },
        },
      },
    });
    // Keep test output quiet; a failed request shows up as the test's own failure.
    p.on('server_error', () => undefined);
    return p;
  }

  async function handleInteraction(
    p: ProviderInstance,
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
  ) {
    const [, , uid, action] = path.split('/');
    const details = await p.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('interaction uid mismatch');
    if (req.method === 'GET' && action === undefined) {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ uid: details.uid, prompt: details.prompt.name }));
      return;
    }
    const form = new URLSearchParams(await readBody(req));
    if (req.method === 'POST' && action === 'login') {
      const account = accounts.get(form.get('login') ?? '');
      if (!account || account.password !== form.get('password')) {
        res.statusCode = 401;
        res.setHeader('Content-Type', 'application/json');
        res.end(JSON.stringify({ error: 'access_denied' }));
        return;
      }
      await p.interactionFinished(req, res, { login: { accountId: account.id } });
      return;
    }
    if (req.method === 'POST' && action === 'confirm') {
      const accountId = details.session?.accountId;
      if (!accountId) throw new Error('consent before login');
      const grant = details.grantId
        ? await p.Grant.find(details.grantId)
        : new p.Grant({ accountId, clientId: String(details.params['client_id']) });
      if (!grant) throw new Error('grant vanished');
      const d = details.prompt.details as {
        missingOIDCScope?: string[];
        missingOIDCClaims?: string[];
        missingResourceScopes?: Record<string, string[]>;
      };
      if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(' '));
      if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      await p.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } });
      return;
    }
    res.statusCode = 404;
    res.end();
  }

  provider = buildProvider();

  /** Follows the browser's part from `start` until the redirect to the client, answering prompts. */
  async function driveBrowser(
    start: URL,
    account: TestAccount | { id: string; password: string },
    jar: CookieJar,
    isClientRedirect: (next: URL) => boolean = (next) => next.href.startsWith(TEST_REDIRECT_URI),
  ) {
    let url = start;
    let method = 'GET';
    let body: URLSearchParams | undefined;
    for (let step = 0; step < 20; step++) {
      const headers: Record<string, string> = { cookie: jar.header(url) };
      if (body) headers['content-type'] = 'application/x-www-form-urlencoded';
      const response = await fetch(url, { method, headers, body, redirect: 'manual' });
      jar.store(response);
      method = 'GET';
      body = undefined;
      const location = response.headers.get('location');
      if (response.status >= 300 && response.status < 400 && location) {
        await response.arrayBuffer();
        const next = new URL(location, url);
        if (isClientRedirect(next)) return next;
        url = next;
        continue;
      }
      if (url.pathname.startsWith('/interaction/') && response.ok) {
        const { uid, prompt } = (await response.json()) as { uid: string; prompt: string };
        method = 'POST';
        if (prompt === 'login') {
          url = new URL(`/interaction/${uid}/login`, issuer);
          body = new URLSearchParams({ login: account.id, password: account.password });
        } else if (prompt === 'consent') {
          url = new URL(`/interaction/${uid}/confirm`, issuer);
          body = new URLSearchParams();
        } else {
          throw new Error(`test IdP: unexpected prompt ${prompt}`);
        }
        continue;
      }
      const text = await response.text();
      if (response.ok) return url;
      throw new Error(`test IdP: ${response.status} at ${url.pathname}: ${text.slice(0, 300)}`);
    }
    throw new Error('test IdP: too many steps in the login');
  }

  /**
   * The user's part of a device login at `verificationUri`: enter the code, then confirm, log in and
   * consent as `account`, or (account 'deny') abort at the confirmation.
   */
  async function deviceUserPart(userCode: string, verificationUri: string, account: TestAccount | 'deny') {
    const jar = new CookieJar();
    const page = await fetch(verificationUri, { headers: { cookie: '' } });
    jar.store(page);
    const html = await page.text();
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
    if (!xsrf) throw new Error('test IdP: no xsrf token on the device page');
    const submit = new URL(verificationUri);
    const post = async (fields: Record<string, string>) => {
      const response = await fetch(submit, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', cookie: jar.header(submit) },
        body: new URLSearchParams(fields),
        redirect: 'manual',
      });
      jar.store(response);
      return response;
    };
    // The code entry answers with a confirmation page ("is this the code on your device?").
    const entered = await post({ xsrf, user_code: userCode });
    const confirmXsrf = /name="xsrf" value="([^"]+)"/.exec(await entered.text())?.[1];
    if (!entered.ok || !confirmXsrf)
      throw new Error(`test IdP: device code not accepted (${entered.status})`);
    if (account === 'deny') {
      const aborted = await post({ xsrf: confirmXsrf, user_code: userCode, abort: 'yes' });
      await aborted.arrayBuffer();
      if (aborted.status >= 500) throw new Error(`test IdP: device abort failed (${aborted.status})`);
      return;
    }
    const confirmed = await post({ xsrf: confirmXsrf, user_code: userCode, confirm: 'yes' });
    await confirmed.arrayBuffer();
    const location = confirmed.headers.get('location');
    if (!location) throw new Error(`test IdP: device confirmation not accepted (${confirmed.status})`);
    await driveBrowser(new URL(location, issuer), account, jar);
  }

  /** Drives an authorization URL up to the redirect off the IdP's origin (the client's redirect URI). */
  async function authorizeAt(authorizationUrl: string | URL, account: string, password: string | undefined) {
    const known = accounts.get(account);
    const credentials = { id: account, password: password ?? known?.password ?? '' };
    const issuerOrigin = new URL(issuer).origin;
    const redirect = await driveBrowser(
      new URL(authorizationUrl),
      credentials,
      new CookieJar(),
      (next) => next.origin !== issuerOrigin,
    );
    if (redirect.origin === issuerOrigin)
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
      const known = accounts.get(account);
      const credentials = { id: account, password: password ?? known?.password ?? '' };
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
      const callback = await driveBrowser(authorize, credentials, new CookieJar());
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
      // oidc-provider reads its key set once: a new instance on the same issuer and port, sharing the
      // in-memory store, is what an IdP restart with a rotated key configuration looks like.
      provider = buildProvider();
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

    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
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

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > 64 * 1024) throw new Error('request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}
