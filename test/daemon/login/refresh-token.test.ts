import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { CardlinkError } from '../../../protocol/errors.js';
import { refreshAccessToken } from '../../../daemon/login/refresh-token.js';
import type { OidcClientSettings } from '../../../daemon/login/oidc-client-settings.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';

const insecure = { allowInsecureHttpIssuer: true };

async function body(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString('utf8');
}

/**
 * A pass-through in front of the test IdP that presents itself as the issuer and answers refresh
 * grants without a new refresh token (and without an ID token, whose `iss` would be the real IdP's),
 * like IdPs that do not rotate refresh tokens.
 */
async function startNonRotatingProxy(idp: TestIdp): Promise<{ issuer: string; close(): Promise<void> }> {
  let issuer = '';
  const rewrite = (value: unknown): unknown =>
    typeof value === 'string' && (value === idp.issuer || value.startsWith(`${idp.issuer}/`))
      ? issuer + value.slice(idp.issuer.length)
      : value;
  const server: Server = createServer((req, res) => {
    void (async () => {
      const requestBody = await body(req);
      const upstream = await fetch(new URL(req.url ?? '/', idp.issuer), {
        method: req.method ?? 'GET',
        headers: { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' },
        body: req.method === 'GET' || req.method === 'HEAD' ? undefined : requestBody,
        redirect: 'manual',
      });
      let text = await upstream.text();
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/.well-known/openid-configuration') {
        const metadata = JSON.parse(text) as Record<string, unknown>;
        text = JSON.stringify(Object.fromEntries(Object.entries(metadata).map(([k, v]) => [k, rewrite(v)])));
      }
      if (
        path === '/token' &&
        upstream.ok &&
        new URLSearchParams(requestBody).get('grant_type') === 'refresh_token'
      ) {
        const tokens = JSON.parse(text) as Record<string, unknown>;
        delete tokens['refresh_token'];
        delete tokens['id_token'];
        text = JSON.stringify(tokens);
      }
      res.writeHead(upstream.status, {
        'content-type': upstream.headers.get('content-type') ?? 'application/json',
      });
      res.end(text);
    })().catch(() => {
      res.statusCode = 502;
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    issuer,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('refreshing the access token', { concurrency: true }, () => {
  let idp: TestIdp;
  let settings: OidcClientSettings;
  before(async () => {
    idp = await startTestIdp();
    settings = { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource };
  });
  after(async () => {
    await idp.close();
  });

  it('yields a new access token for the resource, with the ID token subject', async () => {
    const tokens = await idp.login({ account: 'alice' });
    const refreshed = await refreshAccessToken(settings, tokens.refreshToken!, insecure);
    assert.notEqual(refreshed.accessToken, tokens.accessToken);
    const claims = decodeJwt(refreshed.accessToken);
    assert.equal(claims.aud, idp.resource);
    assert.equal(claims.sub, 'alice');
    assert.equal(refreshed.subject, 'alice');
    assert.ok(refreshed.refreshToken);
    assert.ok(refreshed.expiresAt > Date.now() / 1000);
  });

  it('keeps the old refresh token when the IdP returns none', async () => {
    const proxy = await startNonRotatingProxy(idp);
    try {
      const tokens = await idp.login({ account: 'bob' });
      const refreshed = await refreshAccessToken(
        { ...settings, issuer: proxy.issuer },
        tokens.refreshToken!,
        insecure,
      );
      assert.equal(refreshed.refreshToken, tokens.refreshToken);
      assert.equal(refreshed.idToken, undefined);
      assert.equal(refreshed.subject, undefined);
      assert.equal(decodeJwt(refreshed.accessToken).sub, 'bob');
    } finally {
      await proxy.close();
    }
  });

  it('fails with ERR_LOGIN_EXPIRED for a refresh token the IdP no longer accepts, without echoing it', async () => {
    const tokens = await idp.login();
    await refreshAccessToken(settings, tokens.refreshToken!, insecure); // rotates: the old one is now spent
    await assert.rejects(refreshAccessToken(settings, tokens.refreshToken!, insecure), (e: unknown) => {
      assert.ok(e instanceof CardlinkError);
      assert.equal(e.code, 'ERR_LOGIN_EXPIRED', e.message);
      assert.equal(e.context['oauthError'], 'invalid_grant');
      const text = `${e.message} ${JSON.stringify(e.context)}`;
      assert.ok(!text.includes(tokens.refreshToken!));
      return true;
    });
  });
});
