/**
 * The test IdP in its own process (test/support/idp-process.ts), as the benchmarks use it: its
 * tokens must be ones the card server's validator accepts, and closing it must end the process.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createTokenValidator, type TokenValidator } from '../../server/auth/token-validator.js';
import { startTestIdpProcess } from '../support/idp-process.js';
import type { TestIdpClient } from '../support/oidc-provider.js';

describe('the test IdP in a process of its own', () => {
  let idp: TestIdpClient;
  let validator: TokenValidator;

  before(async () => {
    idp = await startTestIdpProcess();
    validator = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: 'default' }],
      audience: idp.resource,
    });
  });
  after(async () => {
    await idp.close();
  });

  it('logs a user in with a token the card server accepts', async () => {
    const tokens = await idp.login({ account: 'bob' });
    const valid = await validator.validate(tokens.accessToken);
    assert.equal(valid.subject, 'bob');
  });

  it('mints tokens with the claims asked for', async () => {
    const token = await idp.mintAccessToken({ claims: { sub: 'carol' } });
    assert.equal((await validator.validate(token)).subject, 'carol');
  });

  it("passes the IdP's errors on instead of hanging", async () => {
    await assert.rejects(idp.approveDeviceCode('NOPE-NOPE'), /test IdP process: /);
  });

  it('is gone once closed', async () => {
    const other = await startTestIdpProcess();
    const discovery = new URL('.well-known/openid-configuration', `${other.issuer.replace(/\/?$/, '/')}`);
    assert.equal((await fetch(discovery)).status, 200);
    await other.close();
    await assert.rejects(fetch(discovery));
  });
});
