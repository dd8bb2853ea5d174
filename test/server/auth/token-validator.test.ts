import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { decodeJwt } from 'jose';
import {
  createTokenValidator,
  IdpUnavailableError,
  TokenRejectedError,
  type TokenRejectReason,
  type TokenValidator,
} from '../../../server/auth/index.js';
import { MAX_ACCESS_TOKEN_BYTES } from '../../../protocol/wire/index.js';
import {
  BAD_TOKEN_KINDS,
  startTestIdp,
  type BadTokenKind,
  type TestIdp,
} from '../../support/oidc-provider.js';

const TENANT = 'acme';

function rejected(reason: TokenRejectReason) {
  return (e: unknown) => {
    assert.ok(e instanceof TokenRejectedError, `expected TokenRejectedError(${reason}), got ${String(e)}`);
    assert.equal(e.code, 'ERR_AUTH_TOKEN_INVALID');
    assert.equal(e.reason, reason);
    assert.equal(e.context['reason'], reason);
    return true;
  };
}

const EXPECTED_REASON: Record<BadTokenKind, TokenRejectReason> = {
  'alg-none': 'disallowed_alg',
  'hs256-with-public-key': 'disallowed_alg',
  'disallowed-alg': 'disallowed_alg',
  'wrong-issuer': 'wrong_issuer',
  'wrong-audience': 'wrong_audience',
  expired: 'expired',
  'not-yet-valid': 'not_yet_valid',
  'unknown-kid': 'unknown_kid',
  'bad-signature': 'bad_signature',
};

describe('access token validation against a real OpenID Provider', () => {
  let idp: TestIdp;
  let validator: TokenValidator;
  before(async () => {
    idp = await startTestIdp();
    validator = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
    });
  });
  after(async () => {
    await idp.close();
  });

  it('accepts the access token of a complete Authorization Code + PKCE login', async () => {
    const tokens = await idp.login();
    const result = await validator.validate(tokens.accessToken);
    assert.equal(result.issuer, idp.issuer);
    assert.equal(result.subject, 'alice');
    assert.equal(result.tenant, TENANT);
    assert.equal(result.expiresAt.getTime(), decodeJwt(tokens.accessToken).exp! * 1000);
    assert.deepEqual(Buffer.from(result.tokenHash), createHash('sha256').update(tokens.accessToken).digest());
  });

  it('accepts tokens from the device flow and from a refresh, and tells users apart', async () => {
    const device = await idp.deviceLogin({ account: 'bob' });
    assert.equal((await validator.validate(device.accessToken)).subject, 'bob');
    const refreshed = await idp.refresh((await idp.login()).refreshToken!);
    assert.equal((await validator.validate(refreshed.accessToken)).subject, 'alice');
  });

  it('refuses the ID token: its audience is the client, not the card server', async () => {
    const { idToken } = await idp.login();
    await assert.rejects(validator.validate(idToken!), rejected('wrong_audience'));
  });

  for (const kind of BAD_TOKEN_KINDS) {
    it(`refuses a token with ${kind} (${EXPECTED_REASON[kind]})`, async () => {
      await assert.rejects(validator.validate(await idp.mintBadToken(kind)), rejected(EXPECTED_REASON[kind]));
    });
  }

  it('never contacts an issuer that is not configured', async () => {
    const before = idp.discoveryRequests + idp.jwksRequests;
    await assert.rejects(
      validator.validate(await idp.mintBadToken('wrong-issuer')),
      rejected('wrong_issuer'),
    );
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { iss: 'https://evil.example/' } })),
      rejected('wrong_issuer'),
    );
    assert.equal(idp.discoveryRequests + idp.jwksRequests, before);
  });

  it('tolerates 30 s of clock skew on exp and nbf, no more', async () => {
    const now = Math.floor(Date.now() / 1000);
    await validator.validate(await idp.mintAccessToken({ claims: { exp: now - 10 } }));
    await validator.validate(await idp.mintAccessToken({ claims: { nbf: now + 10 } }));
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { exp: now - 45 } })),
      rejected('expired'),
    );
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { nbf: now + 45 } })),
      rejected('not_yet_valid'),
    );
    const strict = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
      clockToleranceSeconds: 0,
    });
    await assert.rejects(
      strict.validate(await idp.mintAccessToken({ claims: { exp: now - 10 } })),
      rejected('expired'),
    );
  });

  it('requires exp and sub, accepts an audience list that contains ours', async () => {
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { exp: undefined } })),
      rejected('invalid_claim'),
    );
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { sub: undefined } })),
      rejected('invalid_claim'),
    );
    await assert.rejects(
      validator.validate(await idp.mintAccessToken({ claims: { sub: '' } })),
      rejected('invalid_claim'),
    );
    const multi = await idp.mintAccessToken({ claims: { aud: ['https://other.example/', idp.resource] } });
    assert.equal((await validator.validate(multi)).subject, 'alice');
  });

  it('refuses exp, iat or nbf that the protocol cannot carry (not whole u32 seconds), though the IdP signed it', async () => {
    const now = Math.floor(Date.now() / 1000);
    const cases: [string, Record<string, number>][] = [
      ['exp past 2^32', { exp: 2 ** 32 + 600 }],
      ['exp far past 2^32', { exp: 1e15 }],
      ['exp with a fraction', { exp: now + 600.5 }],
      ['iat past 2^32', { iat: 2 ** 32 }],
      ['iat negative', { iat: -1 }],
      ['nbf with a fraction', { nbf: now - 0.5 }],
    ];
    for (const [name, claims] of cases) {
      const token = await idp.mintAccessToken({ claims });
      await assert.rejects(validator.validate(token), rejected('invalid_claim'), name);
      await assert.rejects(validator.validate(token), (e: TokenRejectedError) => {
        assert.equal(e.context['claim'], Object.keys(claims)[0], name);
        return true;
      });
    }
    // The largest time a u32 holds is still a time.
    const last = await idp.mintAccessToken({ claims: { exp: 2 ** 32 - 1 } });
    assert.equal((await validator.validate(last)).expiresAt.getTime(), (2 ** 32 - 1) * 1000);
  });

  it('checks typ only when the issuer is configured to', async () => {
    const typed = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT, requireAtJwtType: true }],
      audience: idp.resource,
    });
    await typed.validate((await idp.login()).accessToken);
    const { idToken } = await idp.login();
    await assert.rejects(typed.validate(idToken!), rejected('invalid_claim'));
  });

  it('refuses what is not a JWT, or too long, as malformed', async () => {
    for (const bad of ['', 'abc', 'a.b.c', 'a.b', `${'x'.repeat(MAX_ACCESS_TOKEN_BYTES)}.a.b`]) {
      await assert.rejects(validator.validate(bad), rejected('malformed'), bad.slice(0, 20));
    }
  });

  it('says the IdP is unavailable (not that the token is bad) when its keys cannot be fetched', async () => {
    const down = 'http://127.0.0.1:9/';
    const v = createTokenValidator({
      issuers: [{ issuer: down, tenant: TENANT }],
      audience: idp.resource,
      fetchTimeoutMs: 2000,
    });
    const token = await idp.mintAccessToken({ claims: { iss: down } });
    await assert.rejects(v.validate(token), (e: unknown) => {
      assert.ok(e instanceof IdpUnavailableError);
      assert.equal(e.code, 'ERR_IDP_UNAVAILABLE');
      return true;
    });
  });

  it('refuses bad settings up front', () => {
    const issuers = [{ issuer: idp.issuer, tenant: TENANT }];
    assert.throws(() => createTokenValidator({ issuers, audience: '' }), RangeError);
    assert.throws(
      () =>
        createTokenValidator({ issuers: [{ issuer: 'http://idp.example/', tenant: 't' }], audience: 'a' }),
      RangeError,
    );
    assert.throws(
      () => createTokenValidator({ issuers: [{ issuer: idp.issuer, tenant: '' }], audience: 'a' }),
      RangeError,
    );
    assert.throws(
      () => createTokenValidator({ issuers: [...issuers, ...issuers], audience: 'a' }),
      RangeError,
    );
    assert.throws(
      () => createTokenValidator({ issuers, audience: 'a', algorithms: ['HS256' as never] }),
      RangeError,
    );
  });
});

describe('IdP signing key rotation', () => {
  let idp: TestIdp;
  before(async () => {
    idp = await startTestIdp();
  });
  after(async () => {
    await idp.close();
  });

  it('accepts a token signed with a newly added key without restarting the validator', async () => {
    const refetchMs = 300;
    const validator = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
      jwksRefetchIntervalMs: refetchMs,
    });
    const oldToken = (await idp.login()).accessToken;
    await validator.validate(oldToken);
    const fetchesBefore = idp.jwksRequests;

    const newKid = await idp.rotateSigningKey();
    const newToken = (await idp.login()).accessToken;
    assert.equal((await import('jose')).decodeProtectedHeader(newToken).kid, newKid);
    await sleep(refetchMs + 50);
    assert.equal((await validator.validate(newToken)).subject, 'alice');
    assert.equal(idp.jwksRequests, fetchesBefore + 1, 'one refetch for the unknown kid');
    // The old key is still published: tokens issued before the rotation stay valid, without a fetch.
    await validator.validate(oldToken);
    assert.equal(idp.jwksRequests, fetchesBefore + 1);
  });

  it('refetches at most once per interval per issuer, however many unknown kids arrive', async () => {
    const validator = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
    });
    await validator.validate(await idp.mintAccessToken());
    const fetchesBefore = idp.jwksRequests;
    // Within the default 10 s interval: a burst of made-up kids costs the IdP nothing.
    const burst = await Promise.all(Array.from({ length: 20 }, () => idp.mintBadToken('unknown-kid')));
    const results = await Promise.allSettled(burst.map((t) => validator.validate(t)));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      rejected('unknown_kid')((r as PromiseRejectedResult).reason);
    }
    assert.equal(idp.jwksRequests, fetchesBefore);

    // After the interval: one refetch for a concurrent burst, not one per token.
    const quick = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
      jwksRefetchIntervalMs: 200,
    });
    await quick.validate(await idp.mintAccessToken());
    await sleep(250);
    const base = idp.jwksRequests;
    await Promise.allSettled(burst.map((t) => quick.validate(t)));
    assert.equal(idp.jwksRequests, base + 1);
  });

  it('a key used right after rotation is refused only while a refetch is not yet allowed', async () => {
    const validator = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
      jwksRefetchIntervalMs: 60_000,
    });
    await validator.validate(await idp.mintAccessToken());
    await idp.rotateSigningKey();
    await assert.rejects(validator.validate(await idp.mintAccessToken()), rejected('unknown_kid'));
    // A fresh validator (or one whose interval has passed) accepts it.
    const fresh = createTokenValidator({
      issuers: [{ issuer: idp.issuer, tenant: TENANT }],
      audience: idp.resource,
    });
    await fresh.validate(await idp.mintAccessToken());
  });
});

describe('access token algorithms', () => {
  for (const alg of ['RS256', 'PS256', 'ES384', 'EdDSA'] as const) {
    it(`accepts ${alg} tokens from the IdP`, async () => {
      const idp = await startTestIdp({ accessTokenAlg: alg });
      try {
        const validator = createTokenValidator({
          issuers: [{ issuer: idp.issuer, tenant: TENANT }],
          audience: idp.resource,
        });
        const token = (await idp.login()).accessToken;
        assert.equal((await import('jose')).decodeProtectedHeader(token).alg, alg);
        assert.equal((await validator.validate(token)).subject, 'alice');
        // The same token under a validator that allows only ES256 is refused by its algorithm.
        const es256 = createTokenValidator({
          issuers: [{ issuer: idp.issuer, tenant: TENANT }],
          audience: idp.resource,
          algorithms: ['ES256'],
        });
        await assert.rejects(es256.validate(token), rejected('disallowed_alg'));
      } finally {
        await idp.close();
      }
    });
  }
});
