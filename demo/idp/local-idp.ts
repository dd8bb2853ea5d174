/**
 * A small OpenID Provider on 127.0.0.1 (`oidc-provider` 9.x) for local use only: the demo identity
 * provider of `cardlink demo`, and the IdP the tests sign in at (test/support/oidc-provider.ts adds
 * its test-only powers on top), so there is one set-up of it, not two.
 *
 * - one public native client (no secret, PKCE required, the loopback redirect
 *   `http://127.0.0.1/callback` on any port, RFC 8252 section 7.3; grant types authorization_code,
 *   refresh_token and the device authorization grant);
 * - resource indicators (RFC 8707): access tokens are RFC 9068 JWTs for one resource (the card
 *   server) with one scope;
 * - its own login and consent pages: plain HTML forms that a person fills in, and that
 *   idp-browser.ts fills in for an unattended login (`cardlink demo --yes`, the tests);
 * - the device flow's pages (enter the code, confirm it).
 *
 * It is not an identity provider for anything but this machine: it listens on 127.0.0.1 only, speaks
 * plain HTTP (allowed for a loopback issuer only, RFC 8252 section 8.3), keeps sessions and grants in
 * memory and knows only the accounts it is given (docs/demo.md).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWK } from 'jose';

/** The interface the IdP listens on: loopback only. */
export const LOCAL_IDP_HOST = '127.0.0.1';
/** Path of the device verification page (oidc-provider's default `code_verification` route). */
export const DEVICE_VERIFICATION_PATH = '/device';
/** Prefix of the login and consent pages. */
export const INTERACTION_PATH = '/interaction/';
/** Largest form body the login and consent pages read. */
const MAX_FORM_BYTES = 64 * 1024;

/** Algorithms the IdP can sign access tokens with. */
export type LocalSigningAlg = 'ES256' | 'ES384' | 'ES512' | 'RS256' | 'PS256' | 'EdDSA';

export interface LocalIdpAccount {
  readonly id: string;
  readonly email: string;
}

/** Who may sign in. */
export interface LocalIdpAccounts {
  find(id: string): LocalIdpAccount | undefined;
  /** Whether `password` is the account's (the caller compares in constant time). */
  verify(id: string, password: string): boolean;
}

export interface LocalIdpOptions {
  /** Port on 127.0.0.1; 0 picks a free one. */
  port: number;
  clientId: string;
  /** The client's loopback redirect URI (any port is accepted, RFC 8252 section 7.3). */
  redirectUri: string;
  /** The card server's resource indicator: the access tokens' `aud`. */
  resource: string;
  /** The scope of that resource. */
  resourceScope: string;
  accounts: LocalIdpAccounts;
  /** Keys that sign access tokens, the current one first; all are published. */
  accessTokenKeys: readonly JWK[];
  /** The key that signs ID tokens (RS256, the OpenID Connect default). */
  idTokenKey: JWK;
  accessTokenAlg: LocalSigningAlg;
  accessTokenTtlSeconds: number;
  deviceCodeTtlSeconds: number;
  /** Keys of the provider's signed cookies, current first. */
  cookieKeys: readonly string[];
  /** Names the IdP on its pages. */
  title: string;
  /** Called with the path of every request (the tests count JWKS and discovery fetches). */
  onRequest?: (path: string) => void;
}

export interface LocalIdp {
  readonly issuer: string;
  readonly port: number;
  /**
   * Publishes `keys` (current first) as the access-token keys. oidc-provider reads its key set once,
   * so this builds a new provider on the same issuer, port and store: what an IdP restart with a
   * rotated key configuration looks like (sessions, grants and refresh tokens survive).
   */
  setAccessTokenKeys(keys: readonly JWK[]): void;
  close(): Promise<void>;
}

const KEY_PARAMETERS: Record<LocalSigningAlg, Parameters<typeof generateKeyPair>[1]> = {
  ES256: {},
  ES384: {},
  ES512: {},
  RS256: { modulusLength: 2048 },
  PS256: { modulusLength: 2048 },
  EdDSA: { crv: 'Ed25519' },
};

/** A new private signing key as a JWK with `kid`, `alg` and `use`. */
export async function newSigningJwk(alg: LocalSigningAlg, kid: string = randomUUID()): Promise<JWK> {
  const { privateKey } = await generateKeyPair(alg, { ...KEY_PARAMETERS[alg], extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

/** The public part of a JWK. */
export function publicJwk(jwk: JWK): JWK {
  const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = jwk;
  return pub;
}

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
 * The provider's storage: in memory, one per IdP, shared by the provider instances that key
 * rotation creates.
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

const escapeHtml = (text: string) =>
  text.replace(
    /[&<>"']/g,
    (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c,
  );

/** Headers of every page the IdP serves itself (no scripts, no framing, nothing cached). */
const PAGE_HEADERS = {
  'Content-Type': 'text/html; charset=utf-8',
  'Cache-Control': 'no-store',
  'X-Content-Type-Options': 'nosniff',
  // No form-action: after the consent form, the browser is redirected to the client's loopback port.
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  'Referrer-Policy': 'no-referrer',
} as const;

const STYLE =
  'body{font-family:sans-serif;max-width:28em;margin:3em auto}label{display:block;margin:.6em 0}' +
  'input{display:block;width:100%;padding:.3em;box-sizing:border-box}button{margin-top:.8em;padding:.4em 1.2em}' +
  '.note{color:#555;font-size:.9em}.error{color:#b00}';

function htmlPage(title: string, heading: string, body: string): string {
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>` +
    `<style>${STYLE}</style></head><body><h1>${escapeHtml(heading)}</h1>${body}` +
    `<p class="note">${escapeHtml(title)}: for use on this machine only.</p></body></html>\n`
  );
}

/**
 * A prompt's form. Its first tag is always `<form method="post" action="…" data-prompt="…">`:
 * idp-browser.ts finds it by that shape.
 */
function promptForm(action: string, prompt: 'login' | 'consent', fields: string, button: string): string {
  return (
    `<form method="post" action="${escapeHtml(action)}" data-prompt="${prompt}">${fields}` +
    `<button type="submit">${escapeHtml(button)}</button></form>`
  );
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_FORM_BYTES) throw new Error('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** The one warning oidc-provider prints when it is loaded on Node 20 (it asks for 22 or later). */
const RUNTIME_WARNING = 'oidc-provider WARNING: Unsupported runtime.';

/**
 * Loads oidc-provider without its "Unsupported runtime" line on Node 20, the runtime cardlink
 * supports (and tests the IdP on); every other warning passes.
 */
async function importOidcProvider(): Promise<OidcProviderModule> {
  const warn = console.warn;
  console.warn = (...args: unknown[]) => {
    if (typeof args[0] === 'string' && args[0].includes(RUNTIME_WARNING)) return;
    warn.apply(console, args);
  };
  try {
    // The module is untyped; a computed specifier keeps tsc from looking for declarations.
    const specifier = 'oidc-provider';
    return (await import(specifier)) as OidcProviderModule;
  } finally {
    console.warn = warn;
  }
}

/** Starts the IdP on 127.0.0.1; `close()` it when done. Rejects with the listen error (EADDRINUSE). */
export async function startLocalIdp(options: LocalIdpOptions): Promise<LocalIdp> {
  const { Provider, errors } = await importOidcProvider();
  const adapter = memoryAdapterFactory();
  const { accounts, resource, title } = options;
  let accessTokenKeys = [...options.accessTokenKeys];
  let provider: ProviderInstance | undefined;

  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    options.onRequest?.(path);
    if (!provider) {
      res.statusCode = 503;
      res.end();
      return;
    }
    if (path.startsWith(INTERACTION_PATH)) {
      void handleInteraction(provider, req, res, path).catch((e: unknown) => {
        if (res.headersSent) return res.destroy();
        const message = e instanceof Error ? e.message : String(e);
        res.writeHead(500, PAGE_HEADERS);
        res.end(htmlPage(title, 'Sign-in failed', `<p class="error">${escapeHtml(message)}</p>`));
      });
      return;
    }
    provider.callback()(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port: options.port, host: LOCAL_IDP_HOST, exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://${LOCAL_IDP_HOST}:${port}`;

  /** The device flow's pages: oidc-provider's form (hidden fields and the code input) and our buttons. */
  const devicePage =
    (heading: string, buttons: string) =>
    (ctx: { body: string }, form: string): void => {
      ctx.body = htmlPage(title, heading, `${form}${buttons}`);
    };

  function buildProvider(): ProviderInstance {
    const p = new Provider(issuer, {
      clients: [
        {
          client_id: options.clientId,
          application_type: 'native',
          token_endpoint_auth_method: 'none',
          redirect_uris: [options.redirectUri],
          response_types: ['code'],
          grant_types: [
            'authorization_code',
            'refresh_token',
            'urn:ietf:params:oauth:grant-type:device_code',
          ],
        },
      ],
      adapter,
      jwks: { keys: [...accessTokenKeys, options.idTokenKey] },
      cookies: { keys: [...options.cookieKeys] },
      ttl: {
        AccessToken: options.accessTokenTtlSeconds,
        AuthorizationCode: 60,
        DeviceCode: options.deviceCodeTtlSeconds,
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
        const account = accounts.find(sub);
        if (!account) return undefined;
        return { accountId: sub, claims: () => ({ sub, email: account.email }) };
      },
      interactions: {
        url: (_ctx: unknown, interaction: Interaction) => `${INTERACTION_PATH}${interaction.uid}`,
      },
      // The JWT access token names the user as organisations' IdPs do (Entra ID, Keycloak: the
      // account name as preferred_username, which the daemon shows as the user): the card
      // server's self-service enrollment takes the certificates' names from it. And (RFC 9068
      // section 2.2.1) it says when the user signed in, so the card server can ask for a fresh
      // sign-in before a PIN is set (server/cards/pin-by-sign-in.ts); a refreshed token keeps the
      // original sign-in's time.
      extraTokenClaims: (
        ctx: { oidc?: { entities?: Record<string, { authTime?: number } | undefined> } },
        token: { accountId?: string },
      ) => {
        const account = token.accountId === undefined ? undefined : accounts.find(token.accountId);
        const entities = ctx.oidc?.entities ?? {};
        const authTime = (entities.AuthorizationCode ?? entities.RefreshToken ?? entities.DeviceCode)
          ?.authTime;
        const claims: Record<string, unknown> = account
          ? { preferred_username: account.id, email: account.email, name: account.id }
          : {};
        if (typeof authTime === 'number') claims['auth_time'] = authTime;
        return Object.keys(claims).length > 0 ? claims : undefined;
      },
      features: {
        devInteractions: { enabled: false },
        // RFC 7009: the tray revokes its refresh token at sign-out.
        revocation: {
          enabled: true,
          // A client revokes only its own tokens (RFC 7009 section 2.1); the public client proves
          // nothing more than its id, so another client's token is silently not revoked.
          allowedPolicy: (_ctx: unknown, client: { clientId: string }, token: { clientId?: string }) =>
            token.clientId === client.clientId,
        },
        deviceFlow: {
          enabled: true,
          userCodeInputSource: devicePage(
            'Enter the code',
            '<button type="submit" form="op.deviceInputForm">Continue</button>',
          ),
          userCodeConfirmSource: devicePage(
            'Is this the code on your device?',
            '<button type="submit" form="op.deviceConfirmForm" name="confirm" value="yes">Continue</button> ' +
              '<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>',
          ),
          successSource: (ctx: { body: string }) => {
            ctx.body = htmlPage(title, 'Signed in', '<p>You can close this window.</p>');
          },
        },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => resource,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, indicator: string) => {
            if (indicator !== resource) throw new errors.InvalidTarget();
            return {
              scope: options.resourceScope,
              audience: resource,
              accessTokenTTL: options.accessTokenTtlSeconds,
              accessTokenFormat: 'jwt',
              jwt: { sign: { alg: options.accessTokenAlg } },
            };
          },
        },
      },
    });
    // Quiet: a failed request shows up as the client's own failure.
    p.on('server_error', () => undefined);
    return p;
  }

  async function handleInteraction(
    p: ProviderInstance,
    req: IncomingMessage,
    res: ServerResponse,
    path: string,
  ): Promise<void> {
    const [, , uid, action] = path.split('/');
    const details = await p.interactionDetails(req, res);
    if (details.uid !== uid) throw new Error('This sign-in page belongs to another sign-in.');
    const prompt = details.prompt.name;
    const showPrompt = (status: number, error?: string) => {
      const notice = error ? `<p class="error">${escapeHtml(error)}</p>` : '';
      let body: string;
      if (prompt === 'login') {
        const hint = typeof details.params['login_hint'] === 'string' ? details.params['login_hint'] : '';
        body = promptForm(
          `${INTERACTION_PATH}${uid}/login`,
          'login',
          `${notice}<label>User <input name="login" autocomplete="username" value="${escapeHtml(hint)}"></label>` +
            '<label>Password <input type="password" name="password" autocomplete="current-password"></label>',
          'Sign in',
        );
      } else if (prompt === 'consent') {
        const client = String(details.params['client_id']);
        body = promptForm(
          `${INTERACTION_PATH}${uid}/confirm`,
          'consent',
          `${notice}<p>${escapeHtml(client)} asks to use your cards at ${escapeHtml(resource)} ` +
            `(scope: ${escapeHtml(String(details.params['scope'] ?? ''))}).</p>`,
          'Allow',
        );
      } else {
        body = `<p class="error">Unknown step ${escapeHtml(prompt)}.</p>`;
      }
      res.writeHead(status, PAGE_HEADERS);
      res.end(htmlPage(title, prompt === 'login' ? 'Sign in' : 'Allow access', body));
    };

    if (req.method === 'GET' && action === undefined) return showPrompt(200);
    if (req.method !== 'POST') {
      res.writeHead(405, { ...PAGE_HEADERS, Allow: 'GET, POST' });
      res.end();
      return;
    }
    const form = await readForm(req);
    if (action === 'login' && prompt === 'login') {
      const id = form.get('login') ?? '';
      const account = accounts.find(id);
      if (!account || !accounts.verify(id, form.get('password') ?? ''))
        return showPrompt(401, 'Wrong user name or password.');
      await p.interactionFinished(req, res, { login: { accountId: account.id } });
      return;
    }
    if (action === 'confirm' && prompt === 'consent') {
      const accountId = details.session?.accountId;
      if (!accountId) throw new Error('Consent before sign-in.');
      const grant = details.grantId
        ? await p.Grant.find(details.grantId)
        : new p.Grant({ accountId, clientId: String(details.params['client_id']) });
      if (!grant) throw new Error('The grant is gone: start the sign-in again.');
      const missing = details.prompt.details as {
        missingOIDCScope?: string[];
        missingOIDCClaims?: string[];
        missingResourceScopes?: Record<string, string[]>;
      };
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {}))
        grant.addResourceScope(indicator, scopes.join(' '));
      const grantId = await grant.save();
      await p.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } });
      return;
    }
    res.writeHead(404, PAGE_HEADERS);
    res.end(htmlPage(title, 'Not found', '<p>This step does not exist here.</p>'));
  }

  provider = buildProvider();

  return {
    issuer,
    port,
    setAccessTokenKeys(keys) {
      accessTokenKeys = [...keys];
      provider = buildProvider();
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
