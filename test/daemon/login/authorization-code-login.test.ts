import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { decodeJwt } from 'jose';
import { CardlinkError } from '../../../protocol/errors.js';
import { startBrowserLogin, type BrowserLogin } from '../../../daemon/login/authorization-code-login.js';
import { refreshAccessToken } from '../../../daemon/login/refresh-token.js';
import type { OidcClientSettings } from '../../../daemon/login/oidc-client-settings.js';
import { freePort } from '../../support/free-port.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';

const insecure = { allowInsecureHttpIssuer: true };

function typed(code: string, check: (e: CardlinkError) => void = () => undefined) {
  return (e: unknown) => {
    assert.ok(e instanceof CardlinkError, `expected CardlinkError(${code}), got ${String(e)}`);
    assert.equal(e.code, code, `${e.code}: ${e.message}`);
    check(e);
    return true;
  };
}

/** 'open', or the error code of a TCP connection attempt. */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve('open');
    });
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
}

function portOf(login: BrowserLogin): number {
  return Number(new URL(login.redirectUri).port);
}

function assertPageHeaders(headers: Headers) {
  assert.equal(headers.get('cache-control'), 'no-store');
  assert.equal(headers.get('x-content-type-options'), 'nosniff');
  assert.match(headers.get('content-type') ?? '', /^text\/html/);
}

/** A GET with an arbitrary Host header (fetch does not allow setting it). */
function getWithHost(url: string, hostHeader: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers: { host: hostHeader } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.once('error', reject);
    req.end();
  });
}

describe('browser login (Authorization Code + PKCE, loopback redirect)', { concurrency: true }, () => {
  let idp: TestIdp;
  let settings: OidcClientSettings;
  before(async () => {
    idp = await startTestIdp();
    settings = { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource };
  });
  after(async () => {
    await idp.close();
  });

  it('signs in through the browser: a JWT for the resource and the account, then refreshes', async () => {
    const login = await startBrowserLogin(settings, insecure);
    assert.match(login.redirectUri, /^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    const url = new URL(login.authorizationUrl);
    assert.ok(url.href.startsWith(`${idp.issuer}/`));
    const p = url.searchParams;
    assert.equal(p.get('redirect_uri'), login.redirectUri);
    assert.equal(p.get('client_id'), idp.clientId);
    assert.equal(p.get('response_type'), 'code');
    assert.equal(p.get('code_challenge_method'), 'S256');
    assert.match(p.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.ok(p.get('state'));
    assert.ok(p.get('nonce'));
    assert.equal(p.get('resource'), idp.resource);
    assert.equal(p.get('scope'), 'openid offline_access cards');

    const completion = login.complete();
    const page = await idp.completeBrowserLogin(login.authorizationUrl, { account: 'bob' });
    assert.equal(page.status, 200);
    assertPageHeaders(page.headers);
    assert.match(page.body, /You can close this window/);
    assert.equal(page.callbackUrl.origin, new URL(login.redirectUri).origin);

    const grant = await completion;
    const claims = decodeJwt(grant.accessToken);
    assert.equal(claims.aud, idp.resource);
    assert.equal(claims.sub, 'bob');
    assert.equal(grant.subject, 'bob');
    assert.ok(grant.idToken);
    assert.ok(grant.refreshToken);

    // One callback only: the listener is gone.
    assert.notEqual(await tryConnect('127.0.0.1', portOf(login)), 'open');

    const refreshed = await refreshAccessToken(settings, grant.refreshToken, insecure);
    assert.notEqual(refreshed.accessToken, grant.accessToken);
    assert.equal(decodeJwt(refreshed.accessToken).sub, 'bob');
    assert.equal(decodeJwt(refreshed.accessToken).aud, idp.resource);
  });

  it('refuses a callback with the wrong state and fails the login', async () => {
    const login = await startBrowserLogin(settings, insecure);
    const completion = login.complete();
    const callback = await idp.authorize(login.authorizationUrl);
    assert.ok(callback.searchParams.get('code'));
    const forged = new URL(callback);
    forged.searchParams.set('state', 'not-the-state');
    const response = await fetch(forged);
    assert.equal(response.status, 400);
    assertPageHeaders(response.headers);
    assert.match(await response.text(), /Sign-in refused/);
    await assert.rejects(
      completion,
      typed('ERR_LOGIN_DENIED', (e) => assert.equal(e.context['reason'], 'state-mismatch')),
    );
    // The genuine callback cannot be replayed afterwards.
    assert.notEqual(await tryConnect('127.0.0.1', portOf(login)), 'open');
  });

  it('fails with ERR_LOGIN_DENIED when the IdP answers access_denied', async () => {
    const login = await startBrowserLogin(settings, insecure);
    const completion = login.complete();
    const state = new URL(login.authorizationUrl).searchParams.get('state')!;
    const callback = new URL(login.redirectUri);
    callback.search = new URLSearchParams({ error: 'access_denied', state, iss: idp.issuer }).toString();
    const response = await fetch(callback);
    assert.equal(response.status, 400);
    assertPageHeaders(response.headers);
    await response.arrayBuffer();
    await assert.rejects(
      completion,
      typed('ERR_LOGIN_DENIED', (e) => assert.equal(e.context['oauthError'], 'access_denied')),
    );
  });

  it('listens on 127.0.0.1 only, and ignores requests for other hosts and paths', async () => {
    const login = await startBrowserLogin(settings, insecure);
    const port = portOf(login);
    assert.equal(await tryConnect('127.0.0.1', port), 'open');
    assert.notEqual(await tryConnect('::1', port), 'open');
    for (const addresses of Object.values(networkInterfaces())) {
      for (const a of addresses ?? []) {
        if (a.internal) continue;
        assert.notEqual(await tryConnect(a.address, port), 'open', `reachable on ${a.address}`);
      }
    }
    // DNS rebinding: a request naming another host is refused and does not use up the callback.
    assert.equal(await getWithHost(login.redirectUri, `evil.example:${port}`), 400);
    const other = await fetch(new URL('/favicon.ico', login.redirectUri));
    assert.equal(other.status, 404);
    await other.arrayBuffer();

    const completion = login.complete();
    const page = await idp.completeBrowserLogin(login.authorizationUrl);
    assert.equal(page.status, 200);
    assert.equal((await completion).subject, 'alice');
  });

  it('closes the listener and fails with ERR_LOGIN_EXPIRED after the timeout', async () => {
    const login = await startBrowserLogin(settings, { ...insecure, timeoutMs: 200 });
    await assert.rejects(login.complete(), typed('ERR_LOGIN_EXPIRED'));
    assert.notEqual(await tryConnect('127.0.0.1', portOf(login)), 'open');
  });

  it('closes the listener and fails with ERR_LOGIN_CANCELLED on cancel() or an aborted signal', async () => {
    const login = await startBrowserLogin(settings, insecure);
    login.cancel();
    await assert.rejects(login.complete(), typed('ERR_LOGIN_CANCELLED'));
    assert.notEqual(await tryConnect('127.0.0.1', portOf(login)), 'open');

    const controller = new AbortController();
    const second = await startBrowserLogin(settings, { ...insecure, signal: controller.signal });
    controller.abort();
    await assert.rejects(second.complete(), typed('ERR_LOGIN_CANCELLED'));
    assert.notEqual(await tryConnect('127.0.0.1', portOf(second)), 'open');
  });

  it('listens on the fixed redirect port when one is set (login.redirectPort), and names it when it is taken', async () => {
    const port = await freePort();
    const login = await startBrowserLogin(settings, { ...insecure, redirectPort: port });
    assert.equal(login.redirectUri, `http://127.0.0.1:${port}/callback`);
    assert.equal(new URL(login.authorizationUrl).searchParams.get('redirect_uri'), login.redirectUri);
    // A second sign-in on the same port while the first waits.
    await assert.rejects(
      startBrowserLogin(settings, { ...insecure, redirectPort: port }),
      typed('ERR_PORT_IN_USE', (e) => {
        assert.equal(e.context['port'], port);
        assert.match(e.message, /login\.redirectPort/);
      }),
    );
    const result = await idp.completeBrowserLogin(login.authorizationUrl);
    assert.equal(result.status, 200);
    assert.ok((await login.complete()).accessToken);
  });

  it('refuses a callback whose iss names another issuer (RFC 9207), before the code is used', async () => {
    const login = await startBrowserLogin(settings, insecure);
    const callback = await idp.authorize(login.authorizationUrl);
    callback.searchParams.set('iss', 'https://mix-up.example/');
    const response = await fetch(callback);
    assert.equal(response.status, 400);
    await assert.rejects(
      login.complete(),
      typed('ERR_LOGIN_DENIED', (e) => assert.equal(e.context['reason'], 'issuer-mismatch')),
    );
  });

  it('gives ERR_IDP_UNAVAILABLE naming the issuer when the issuer is unreachable', async () => {
    const issuer = 'http://127.0.0.1:1';
    await assert.rejects(
      startBrowserLogin({ ...settings, issuer }, insecure),
      typed('ERR_IDP_UNAVAILABLE', (e) => {
        assert.equal(e.context['issuer'], issuer);
        assert.ok(e.message.includes(issuer));
      }),
    );
  });
});
