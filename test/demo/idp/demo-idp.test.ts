/**
 * The demo identity provider: its keys outlive a restart (0600 in the state directory), and its
 * login page takes the demo user's generated password and nothing else, through the real
 * authorization endpoint (the way `cardlink demo --yes` signs in).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  DEMO_CLIENT_ID,
  DEMO_USER,
  generateDemoPassword,
  loadOrCreateDemoIdpKeys,
  startDemoIdp,
} from '../../../demo/demo-idp.js';
import { driveAuthorization, IdpBrowserError } from '../../../demo/idp/idp-browser.js';
import type { LocalIdp } from '../../../demo/idp/local-idp.js';

const RESOURCE = 'https://127.0.0.1:18443/';

describe('demo identity provider', () => {
  let dir: string;
  let idp: LocalIdp;
  let password: string;

  /** An authorization request of the daemon's kind (PKCE S256, the card server as resource). */
  const authorizationUrl = () => {
    const url = new URL('/auth', idp.issuer);
    url.search = new URLSearchParams({
      client_id: DEMO_CLIENT_ID,
      response_type: 'code',
      redirect_uri: 'http://127.0.0.1:40000/callback',
      scope: 'openid offline_access cards',
      resource: RESOURCE,
      prompt: 'consent',
      state: 'st',
      code_challenge: createHash('sha256').update(randomBytes(32)).digest('base64url'),
      code_challenge_method: 'S256',
    }).toString();
    return url;
  };

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-demo-idp-'));
    password = generateDemoPassword();
    const keys = await loadOrCreateDemoIdpKeys(path.join(dir, 'keys.json'));
    idp = await startDemoIdp({ port: 0, resource: RESOURCE, keys, password });
  });
  after(async () => {
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('keeps its keys in a 0600 file and loads the same keys again', async () => {
    const file = path.join(dir, 'keys.json');
    assert.equal(fs.statSync(file).mode & 0o777, 0o600);
    const again = await loadOrCreateDemoIdpKeys(file);
    assert.deepEqual(again, JSON.parse(fs.readFileSync(file, 'utf8')));
    assert.notEqual(generateDemoPassword(), generateDemoPassword());
  });

  it('serves a login page a person can fill in, with headers that keep it private', async () => {
    const first = await fetch(authorizationUrl(), { redirect: 'manual' });
    const page = await fetch(new URL(first.headers.get('location')!, idp.issuer), {
      headers: {
        cookie: first.headers
          .getSetCookie()
          .map((c) => c.split(';')[0])
          .join('; '),
      },
    });
    assert.equal(page.status, 200);
    assert.equal(page.headers.get('cache-control'), 'no-store');
    assert.match(page.headers.get('content-security-policy') ?? '', /default-src 'none'/);
    const html = await page.text();
    assert.match(html, /<form method="post" action="\/interaction\/[^"]+\/login" data-prompt="login">/);
    assert.match(html, /type="password" name="password"/);
    assert.match(html, /for use on this machine only/);
  });

  it('refuses a wrong password with 401 and the form again', async () => {
    await assert.rejects(
      driveAuthorization(authorizationUrl(), { id: DEMO_USER, password: `${password}x` }),
      (e: unknown) => {
        assert.ok(e instanceof IdpBrowserError);
        assert.equal(e.status, 401);
        assert.match(e.message, /wrong user name or password/);
        assert.ok(!e.message.includes(password), 'the password is not in the error');
        return true;
      },
    );
    await assert.rejects(
      driveAuthorization(authorizationUrl(), { id: 'alice', password }),
      (e: unknown) => e instanceof IdpBrowserError && e.status === 401,
    );
  });

  it("signs the demo user in with the generated password: the redirect carries a code for the daemon's callback", async () => {
    const redirect = await driveAuthorization(authorizationUrl(), { id: DEMO_USER, password });
    assert.equal(redirect.origin, 'http://127.0.0.1:40000');
    assert.equal(redirect.pathname, '/callback');
    assert.equal(redirect.searchParams.get('state'), 'st');
    assert.ok(redirect.searchParams.get('code'));
  });
});
