import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeJwt } from 'jose';
import { CardlinkError } from '../../../protocol/errors.js';
import { startDeviceCodeLogin } from '../../../daemon/login/device-code-login.js';
import { refreshAccessToken } from '../../../daemon/login/refresh-token.js';
import type { OidcClientSettings } from '../../../daemon/login/oidc-client-settings.js';
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

/** An issuer URL on which nothing listens. */
async function deadIssuer(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `http://127.0.0.1:${port}`;
}

describe('device code login against a real OpenID Provider', { concurrency: true }, () => {
  let idp: TestIdp;
  let settings: OidcClientSettings;
  before(async () => {
    idp = await startTestIdp();
    settings = { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource };
  });
  after(async () => {
    await idp.close();
  });

  it('signs in once the user approves: a JWT for the resource and the account, then refreshes', async () => {
    const login = await startDeviceCodeLogin(settings, insecure);
    assert.ok(login.verificationUri.startsWith(`${idp.issuer}/`), login.verificationUri);
    assert.ok(login.userCode.length > 0);
    assert.ok(login.verificationUriComplete?.startsWith(login.verificationUri));
    assert.ok(login.expiresIn > 0 && login.expiresIn <= 600, String(login.expiresIn));

    const completion = login.complete();
    assert.equal(login.complete(), completion, 'complete() returns the same promise');
    await idp.approveDeviceCode(login.userCode, { account: 'bob', verificationUri: login.verificationUri });
    const grant = await completion;

    const claims = decodeJwt(grant.accessToken);
    assert.equal(claims.aud, idp.resource);
    assert.equal(claims.sub, 'bob');
    assert.equal(claims.iss, idp.issuer);
    assert.equal(grant.subject, 'bob');
    assert.ok(grant.idToken);
    assert.ok(grant.refreshToken, 'offline_access yields a refresh token');
    const now = Math.floor(Date.now() / 1000);
    assert.ok(Math.abs(grant.expiresAt - (now + 600)) <= 5, `expiresAt ${grant.expiresAt} vs now ${now}`);

    const refreshed = await refreshAccessToken(settings, grant.refreshToken, insecure);
    assert.notEqual(refreshed.accessToken, grant.accessToken);
    const refreshedClaims = decodeJwt(refreshed.accessToken);
    assert.equal(refreshedClaims.aud, idp.resource);
    assert.equal(refreshedClaims.sub, 'bob');
    assert.ok(refreshed.refreshToken);
    // A fresh lifetime, and never later than the token's own `exp` (what the card server enforces).
    const later = Math.floor(Date.now() / 1000);
    assert.ok(
      Math.abs(refreshed.expiresAt - (later + 600)) <= 5,
      `expiresAt ${refreshed.expiresAt} vs now ${later}`,
    );
    assert.ok(refreshed.expiresAt <= refreshedClaims.exp!);
  });

  it('fails with ERR_LOGIN_DENIED when the user refuses', async () => {
    const login = await startDeviceCodeLogin(settings, insecure);
    const completion = login.complete();
    await idp.denyDeviceCode(login.userCode, { verificationUri: login.verificationUri });
    await assert.rejects(
      completion,
      typed('ERR_LOGIN_DENIED', (e) => {
        assert.equal(e.context['oauthError'], 'access_denied');
        assert.equal(e.context['issuer'], idp.issuer);
      }),
    );
  });

  it('stops polling with ERR_LOGIN_CANCELLED as soon as the signal aborts', async () => {
    const controller = new AbortController();
    const login = await startDeviceCodeLogin(settings, { ...insecure, signal: controller.signal });
    const completion = login.complete();
    const started = Date.now();
    setTimeout(() => controller.abort(), 100);
    await assert.rejects(completion, typed('ERR_LOGIN_CANCELLED'));
    assert.ok(Date.now() - started < 1000, `took ${Date.now() - started} ms`);
  });

  it('fails with ERR_LOGIN_CANCELLED when the signal has aborted before the start', async () => {
    await assert.rejects(
      startDeviceCodeLogin(settings, { ...insecure, signal: AbortSignal.abort() }),
      typed('ERR_LOGIN_CANCELLED'),
    );
  });

  it('refuses an unknown resource indicator as a configuration error', async () => {
    await assert.rejects(
      startDeviceCodeLogin({ ...settings, resource: 'https://not-the-card-server.test/' }, insecure),
      typed('ERR_CONFIG_INVALID', (e) => assert.equal(e.context['oauthError'], 'invalid_target')),
    );
  });

  it('gives ERR_IDP_UNAVAILABLE naming the issuer when nothing answers there', async () => {
    const issuer = await deadIssuer();
    await assert.rejects(
      startDeviceCodeLogin({ ...settings, issuer }, insecure),
      typed('ERR_IDP_UNAVAILABLE', (e) => {
        assert.equal(e.context['issuer'], issuer);
        assert.ok(e.message.includes(issuer), e.message);
        assert.equal(e.context['stage'], 'discovery');
        assert.equal(e.context['networkCode'], 'ECONNREFUSED');
      }),
    );
  });

  it('gives ERR_IDP_UNAVAILABLE when the issuer answers with a server error', async () => {
    const server = createServer((_req, res) => {
      res.statusCode = 500;
      res.end('oops');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      await assert.rejects(
        startDeviceCodeLogin({ ...settings, issuer }, insecure),
        typed('ERR_IDP_UNAVAILABLE', (e) => assert.ok(e.message.includes(issuer), e.message)),
      );
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('refuses http issuers unless allowed, and non-loopback http issuers always', async () => {
    await assert.rejects(startDeviceCodeLogin(settings), typed('ERR_CONFIG_INVALID'));
    await assert.rejects(
      startDeviceCodeLogin({ ...settings, issuer: 'http://idp.example.test' }, insecure),
      typed('ERR_CONFIG_INVALID', (e) => assert.equal(e.context['setting'], 'issuer')),
    );
    await assert.rejects(
      startDeviceCodeLogin({ ...settings, issuer: 'not a url' }, insecure),
      typed('ERR_CONFIG_INVALID'),
    );
  });
});

describe('device code expiry', () => {
  let idp: TestIdp;
  before(async () => {
    idp = await startTestIdp({ deviceCodeTtlSeconds: 1 });
  });
  after(async () => {
    await idp.close();
  });

  it('fails with ERR_LOGIN_EXPIRED when the user does not finish in time', async () => {
    const login = await startDeviceCodeLogin(
      { issuer: idp.issuer, clientId: idp.clientId, resource: idp.resource },
      insecure,
    );
    assert.equal(login.expiresIn, 1);
    const started = Date.now();
    await assert.rejects(
      login.complete(),
      typed('ERR_LOGIN_EXPIRED', (e) => {
        assert.equal(e.context['expiresIn'], 1);
        assert.equal(e.context['userCode'], login.userCode);
      }),
    );
    assert.ok(Date.now() - started < 3000, `took ${Date.now() - started} ms`);
  });
});
