import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import {
  checkPinVerifier,
  createPinVerifier,
  PIN_VERIFIER_BYTES,
  pinVerifierKeyVersion,
} from '../../../server/keys/pin-verifier.js';
import { tempKeyFileProvider } from '../storage/backends.js';

describe('PIN verifiers', () => {
  let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
  let provider: KekProvider;
  const context = { cardId: 'card-1', kind: 'pin' as const };

  before(async () => {
    keys = await tempKeyFileProvider();
    provider = keys.provider;
  });
  after(() => keys.cleanup());

  it('accepts the PIN it was made from and nothing else', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uint8Array({ minLength: 6, maxLength: 8 }),
        fc.uint8Array({ minLength: 6, maxLength: 8 }),
        async (pin, other) => {
          const verifier = await createPinVerifier(provider, context, pin);
          assert.equal((await checkPinVerifier(provider, context, verifier, pin)).match, true);
          const same = Buffer.from(pin).equals(Buffer.from(other));
          assert.equal((await checkPinVerifier(provider, context, verifier, other)).match, same);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('is salted: the same PIN gives different verifiers, none containing or hashing to the PIN', async () => {
    const pin = Buffer.from('123456\xff\xff', 'latin1');
    const a = await createPinVerifier(provider, context, pin);
    const b = await createPinVerifier(provider, context, pin);
    assert.equal(a.length, PIN_VERIFIER_BYTES);
    assert.ok(!a.equals(b));
    assert.equal(a.indexOf(pin), -1);
    const unkeyed = createHash('sha256').update(pin).digest();
    assert.equal(a.indexOf(unkeyed.subarray(0, 8)), -1);
  });

  it('is bound to the card and to PIN vs PUK', async () => {
    const pin = Buffer.from('12345678');
    const verifier = await createPinVerifier(provider, context, pin);
    assert.equal(
      (await checkPinVerifier(provider, { cardId: 'card-2', kind: 'pin' }, verifier, pin)).match,
      false,
    );
    assert.equal(
      (await checkPinVerifier(provider, { cardId: 'card-1', kind: 'puk' }, verifier, pin)).match,
      false,
    );
  });

  it('cannot be checked without the provider key (another key file gives no match)', async () => {
    const pin = Buffer.from('12345678');
    const verifier = await createPinVerifier(provider, context, pin);
    const stranger = await tempKeyFileProvider();
    try {
      assert.equal((await checkPinVerifier(stranger.provider, context, verifier, pin)).match, false);
    } finally {
      await stranger.cleanup();
    }
  });

  it('migrates to the current PIN key on a match', async () => {
    const pin = Buffer.from('87654321');
    const old = await createPinVerifier(provider, context, pin);
    const oldVersion = pinVerifierKeyVersion(old);
    const newVersion = await provider.rotatePinKey();
    const wrong = await checkPinVerifier(provider, context, old, Buffer.from('00000000'));
    assert.deepEqual(wrong, { match: false });
    const result = await checkPinVerifier(provider, context, old, pin);
    assert.equal(result.match, true);
    assert.ok(result.replacementVerifier);
    assert.equal(pinVerifierKeyVersion(result.replacementVerifier), newVersion);
    assert.notEqual(oldVersion, newVersion);
    const current = await checkPinVerifier(provider, context, result.replacementVerifier, pin);
    assert.deepEqual(current, { match: true });
  });

  it('rejects a verifier of unknown format', async () => {
    await assert.rejects(
      checkPinVerifier(provider, context, Buffer.alloc(PIN_VERIFIER_BYTES), Buffer.from('1')),
      (e: Error & { code?: string }) => e.code === 'ERR_SEALED_KEY_INVALID',
    );
  });
});
