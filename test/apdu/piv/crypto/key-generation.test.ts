import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { generateKeyPair } from '../../../../apdu/piv/crypto/key-generation.js';
import { keyAlgorithmOf } from '../../../../apdu/piv/crypto/key-algorithms.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';

describe('key generation', () => {
  for (const algorithm of ['RSA2048', 'RSA3072', 'ECCP256', 'ECCP384'] as const) {
    it(`generates ${algorithm} with a matching SPKI`, async () => {
      const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
      assert.equal(privateKey.type, 'private');
      assert.equal(keyAlgorithmOf(privateKey), algorithm);
      const pub = createPublicKey({ key: Buffer.from(publicKeySpki), format: 'der', type: 'spki' });
      assert.ok(pub.equals(createPublicKey(privateKey)));
      if (algorithm.startsWith('RSA')) assert.equal(pub.asymmetricKeyDetails?.publicExponent, 65537n);
    });
  }

  it('refuses unknown algorithms', async () => {
    await assert.rejects(
      generateKeyPair('RSA1024' as never),
      (e: unknown) => e instanceof CardStateError && e.reason === 'UNSUPPORTED_ALGORITHM',
    );
  });
});
