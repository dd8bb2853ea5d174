import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { padReferenceValue } from '../../../apdu/piv/index.js';
import {
  createCard,
  loadDefaultProfile,
  parseCardProfile,
  profileToJson,
} from '../../../server/admin/index.js';
import { createTokenValidator, type TokenValidator } from '../../../server/auth/token-validator.js';
import { setPinBySignIn, type PinBySignInDeps } from '../../../server/cards/pin-by-sign-in.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { referenceStatus, type Storage } from '../../../server/storage/index.js';
import type { CardlinkError } from '../../../protocol/errors.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';
import { auditOf, openSession, pinBytes } from './support/card-fixture.js';

const TENANT = 'tenant-pin';
const PIN_A = '97531864';
const PIN_B = '13572468';
const PIN_C = '864213';
const PUK = '24681357';

const field = (pin: string) => padReferenceValue(pinBytes(pin));
const concat = (a: Uint8Array, b: Uint8Array) => Buffer.concat([a, b]);

/** Expects `fn` to reject with a CardlinkError of `code` (and refusal, when given). */
async function refusedWith(fn: () => Promise<unknown>, code: string, refusal?: string) {
  await assert.rejects(fn, (error: CardlinkError) => {
    assert.equal(error.code, code, error.message);
    if (refusal) assert.equal(error.context.refusal, refusal);
    return true;
  });
}

for (const kind of BACKENDS) {
  describe(`PIN policy and the set-PIN after a fresh sign-in, on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;
    let idp: TestIdp;
    let validator: TokenValidator;
    let deps: PinBySignInDeps;

    /** A card of `subject` at the test IdP, from the default profile with `pin` members merged. */
    async function newCard(
      pin: Record<string, unknown>,
      options: { noPin?: boolean; subject?: string } = {},
    ) {
      const base = profileToJson(await loadDefaultProfile());
      const profile = parseCardProfile({ ...base, pin: { ...(base.pin as object), ...pin } });
      return createCard({
        storage,
        kek,
        user: { issuer: idp.issuer, subject: options.subject ?? 'alice', tenant: TENANT },
        profile,
        ...(options.noPin ? {} : { pin: PIN_A }),
        puk: PUK,
        ...(options.noPin ? { noPin: true } : {}),
      });
    }
    const token = (claims: Record<string, unknown>) => idp.mintAccessToken({ claims });
    const now = () => Math.floor(Date.now() / 1000);

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      keys = await tempKeyFileProvider();
      kek = keys.provider;
      idp = await startTestIdp();
      validator = createTokenValidator({
        issuers: [{ issuer: idp.issuer, tenant: TENANT }],
        audience: idp.resource,
      });
      deps = { storage, kek, validator, maxAgeSeconds: 120, clockToleranceSeconds: 5 };
    });
    after(async () => {
      await idp.close();
      await backend.cleanup();
      await keys.cleanup();
    });

    it('CHANGE REFERENCE DATA: a trivial PIN is refused (6A80) before any try, a reused one only after the current PIN matched', async () => {
      const card = await newCard({ rejectTrivial: true, history: 3 });
      const s = await openSession(storage, kek, card.cardId);
      const change = (from: string, to: string) =>
        s.host.send({ ins: 0x24, p1: 0, p2: 0x80, data: concat(field(from), field(to)) });
      const tries = async () => (await referenceStatus(storage, card.cardId, 'pin')).remaining;

      for (const trivial of ['111111', '123456', '87654321']) {
        assert.equal((await change(PIN_A, trivial)).sw, 0x6a80, trivial);
        assert.equal(await tries(), 3, 'no try consumed');
      }
      assert.equal((await change(PIN_A, PIN_B)).sw, 0x9000);
      assert.equal((await change(PIN_B, PIN_C)).sw, 0x9000);
      // PIN_A and PIN_B are among the last 3 PINs (PIN_C current, PIN_B, PIN_A).
      assert.equal((await change(PIN_C, PIN_A)).sw, 0x6a80, 'reused PIN_A refused');
      assert.equal(await tries(), 3, 'the try is restored: the current PIN was right');
      assert.equal((await change(PIN_C, PIN_C)).sw, 0x6a80, 'the current PIN is in the history too');
      // A wrong current PIN says nothing about the history: the usual 63Cx.
      assert.equal((await change('11223344', PIN_A)).sw, 0x63c2);
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_C) })).sw, 0x9000);
      // A fourth PIN pushes PIN_A out of the history of 3.
      assert.equal((await change(PIN_C, '24680135')).sw, 0x9000);
      assert.equal((await change('24680135', PIN_A)).sw, 0x9000, 'PIN_A is 3 PINs back: allowed');
      const history = await storage.db
        .selectFrom('pin_history')
        .selectAll()
        .where('card_id', '=', card.cardId)
        .execute();
      assert.equal(history.length, 2, 'history keeps limit - 1 earlier verifiers beside the current one');
      for (const h of history)
        assert.ok(!Buffer.from(h.verifier).includes(Buffer.from(PIN_A)), 'verifiers, not PINs');
    });

    it('PUK policy: CHANGE REFERENCE DATA on the PUK refuses a trivial or mis-sized PUK (6A80) before any try', async () => {
      const base = profileToJson(await loadDefaultProfile());
      const profile = parseCardProfile({
        ...base,
        puk: { minLength: 8, maxLength: 8, retries: 5, rejectTrivial: true },
      });
      assert.deepEqual(profile.puk, {
        minLength: 8,
        maxLength: 8,
        retries: 5,
        generatedLength: 8,
        rejectTrivial: true,
      });
      const card = await createCard({
        storage,
        kek,
        user: { issuer: idp.issuer, subject: 'puk-policy', tenant: TENANT },
        profile,
        pin: PIN_A,
        puk: PUK,
      });
      const s = await openSession(storage, kek, card.cardId);
      const changePuk = (from: string, to: string) =>
        s.host.send({ ins: 0x24, p1: 0, p2: 0x81, data: concat(field(from), field(to)) });
      const tries = async () => (await referenceStatus(storage, card.cardId, 'puk')).remaining;

      for (const refused of ['11111111', '12345678', '98765432', '1357924', 'abcdefgh']) {
        assert.equal((await changePuk(PUK, refused)).sw, 0x6a80, refused);
        assert.equal(await tries(), 5, 'no try consumed');
      }
      assert.equal((await changePuk(PUK, '80246813')).sw, 0x9000);
      // The new PUK unblocks; the old one no longer does.
      const reset = (puk: string) =>
        s.host.send({ ins: 0x2c, p1: 0, p2: 0x80, data: concat(field(puk), field(PIN_B)) });
      assert.equal((await reset(PUK)).sw, 0x63c4);
      assert.equal((await reset('80246813')).sw, 0x9000);
      // The PIN's own policy is not the PUK's: the default profile's PIN rules still apply to PINs.
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_B) })).sw, 0x9000);
    });

    it('PUK policy at create-card: a trivial PUK is refused, generated ones never are; off by default', async () => {
      const base = profileToJson(await loadDefaultProfile());
      const strict = parseCardProfile({ ...base, puk: { ...(base.puk as object), rejectTrivial: true } });
      const user = { issuer: idp.issuer, subject: 'puk-create', tenant: TENANT };
      for (const puk of ['00000000', '23456789', '76543210']) {
        await refusedWith(
          () => createCard({ storage, kek, user, profile: strict, pin: PIN_A, puk }),
          'ERR_CONFIG_INVALID',
        );
      }
      const generated = await createCard({ storage, kek, user, profile: strict, pin: PIN_A });
      assert.equal(generated.generated.puk, true);
      assert.match(generated.puk, /^[0-9]{8}$/);
      // The default profile has no PUK rule beyond its lengths: an administrator's PUK of choice.
      assert.equal((await loadDefaultProfile()).puk.rejectTrivial, false);
      await createCard({
        storage,
        kek,
        user,
        profile: await loadDefaultProfile(),
        pin: PIN_A,
        puk: '12345678',
      });
      assert.throws(() => parseCardProfile({ ...base, puk: { ...(base.puk as object), history: 2 } }), {
        code: 'ERR_CONFIG_INVALID',
      });
    });

    it('RESET RETRY COUNTER applies the same policy to the new PIN', async () => {
      const card = await newCard({ rejectTrivial: true, history: 2 });
      const s = await openSession(storage, kek, card.cardId);
      const reset = (pin: string) =>
        s.host.send({ ins: 0x2c, p1: 0, p2: 0x80, data: concat(field(PUK), field(pin)) });
      assert.equal((await reset('555555')).sw, 0x6a80, 'trivial');
      assert.equal((await reset(PIN_A)).sw, 0x6a80, 'the current PIN again');
      assert.equal((await referenceStatus(storage, card.cardId, 'puk')).remaining, 3);
      assert.equal((await reset(PIN_B)).sw, 0x9000);
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_B) })).sw, 0x9000);
    });

    it('a card made with no PIN answers VERIFY as blocked until its user sets the first PIN after a fresh sign-in', async () => {
      const card = await newCard({ rejectTrivial: true, history: 2 }, { noPin: true });
      assert.equal(card.pinUnset, true);
      assert.equal(card.generated.pin, false, 'no PIN to show');
      const s = await openSession(storage, kek, card.cardId);
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80 })).sw, 0x6983, 'VERIFY status: blocked');
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_A) })).sw, 0x6983);

      const stale = await token({ auth_time: now() - 600 });
      await refusedWith(
        () => setPinBySignIn(deps, stale, card.cardId, pinBytes(PIN_A)),
        'ERR_SIGN_IN_NOT_FRESH',
      );
      const noAuthTime = await token({});
      await refusedWith(
        () => setPinBySignIn(deps, noAuthTime, card.cardId, pinBytes(PIN_A)),
        'ERR_SIGN_IN_NOT_FRESH',
      );
      const bob = await token({ sub: 'bob', auth_time: now() });
      await refusedWith(() => setPinBySignIn(deps, bob, card.cardId, pinBytes(PIN_A)), 'ERR_CARD_NOT_FOUND');
      const fresh = await token({ auth_time: now() - 10 });
      await refusedWith(
        () => setPinBySignIn(deps, fresh, card.cardId, pinBytes('123456')),
        'ERR_PIN_POLICY',
        'trivial',
      );
      await refusedWith(
        () => setPinBySignIn(deps, fresh, card.cardId, pinBytes('12345')),
        'ERR_PIN_POLICY',
        'too-short',
      );
      await refusedWith(
        () => setPinBySignIn(deps, 'not-a-token', card.cardId, pinBytes(PIN_A)),
        'ERR_AUTH_TOKEN_INVALID',
      );

      assert.deepEqual(await setPinBySignIn(deps, fresh, card.cardId, pinBytes(PIN_A)), { kind: 'first' });
      // The open session keeps the card and sees the new PIN at once.
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_A) })).sw, 0x9000);
      const audits = await auditOf(storage, card.cardId, 'pin.set-by-sign-in');
      assert.equal(audits.length, 1);
      assert.equal(audits[0]!.details.kind, 'first');
      assert.equal(
        (await auditOf(storage, card.cardId, 'pin.set-refused')).length,
        2,
        'the two policy refusals',
      );

      // The PIN is now set and the profile has no resetBySignIn: a sign-in cannot replace it.
      await refusedWith(
        () => setPinBySignIn(deps, fresh, card.cardId, pinBytes(PIN_B)),
        'ERR_PIN_SET_NOT_ALLOWED',
      );
    });

    it('forgotten PIN: with resetBySignIn a fresh sign-in replaces a blocked PIN, never with a recent one', async () => {
      const card = await newCard({ rejectTrivial: true, history: 2, resetBySignIn: true });
      const s = await openSession(storage, kek, card.cardId);
      for (let i = 0; i < 3; i++) await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field('11223344') });
      assert.equal((await referenceStatus(storage, card.cardId, 'pin')).remaining, 0, 'blocked');
      const fresh = await token({ auth_time: now() });
      await refusedWith(
        () => setPinBySignIn(deps, fresh, card.cardId, pinBytes(PIN_A)),
        'ERR_PIN_POLICY',
        'reused',
      );
      assert.deepEqual(await setPinBySignIn(deps, fresh, card.cardId, pinBytes(PIN_B)), { kind: 'reset' });
      assert.equal((await referenceStatus(storage, card.cardId, 'pin')).remaining, 3, 'tries restored');
      assert.equal((await s.host.send({ ins: 0x20, p1: 0, p2: 0x80, data: field(PIN_B) })).sw, 0x9000);
      // A sign-in older than the limit (plus the clock tolerance) is not fresh.
      const old = await token({ auth_time: now() - 130 });
      await refusedWith(
        () => setPinBySignIn(deps, old, card.cardId, pinBytes(PIN_C)),
        'ERR_SIGN_IN_NOT_FRESH',
      );
    });
  });
}
