import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { CardStateError } from '../../../apdu/piv/crypto/errors.js';
import { createMemoryCardState } from '../../../apdu/piv/memory-card-state.js';
import { provisionStandardKeys } from '../../../apdu/piv/provisioning.js';
import { decodeCertificateObject } from '../../../apdu/piv/certificates/piv-certificate-object.js';
import type { PivCardState } from '../../../apdu/piv/card-state.js';

const newState = (): PivCardState =>
  createMemoryCardState({
    pin: new TextEncoder().encode('246810'),
    puk: new TextEncoder().encode('13579111'),
    managementKey: { algorithm: 'AES192', key: new Uint8Array(24).fill(0x42) },
  });

describe('provisionStandardKeys', () => {
  it('fills 9A, 9C, 9D and 9E with keys, policies and certificate objects', async () => {
    const state = newState();
    const done = await provisionStandardKeys(state);
    assert.deepEqual(
      done.map((d) => [d.slot, d.info.algorithm, d.info.pinPolicy, d.objectTag]),
      [
        [0x9a, 'RSA2048', 'once', 0x5fc105],
        [0x9c, 'ECCP256', 'always', 0x5fc10a],
        [0x9d, 'RSA2048', 'once', 0x5fc10b],
        [0x9e, 'ECCP256', 'never', 0x5fc101],
      ],
    );
    for (const d of done) {
      const object = (await state.objects.get(d.objectTag))!;
      assert.equal(object[0], 0x70);
      assert.equal(Buffer.from(object.subarray(-5)).toString('hex'), '710100fe00');
      const der = decodeCertificateObject(object);
      assert.deepEqual(der, d.certificate);
      const cert = new X509Certificate(der);
      const info = (await state.keys.info(d.slot))!;
      assert.equal(info.origin, 'generated');
      const pub = createPublicKey({ key: Buffer.from(info.publicKeySpki), format: 'der', type: 'spki' });
      assert.ok(cert.verify(pub));
      assert.match(cert.subject, /^CN=cardlink /);
    }
  });

  it('takes other algorithms and a subject', async () => {
    const state = newState();
    const done = await provisionStandardKeys(state, {
      algorithms: { 0x9a: 'ECCP384', 0x9d: 'ECCP256' },
      subject: 'alice',
    });
    assert.equal(done[0]!.info.algorithm, 'ECCP384');
    assert.equal(done[2]!.info.algorithm, 'ECCP256');
    assert.equal(new X509Certificate(done[0]!.certificate).subject, 'CN=alice PIV Authentication');
  });

  it('refuses other slots and over-long subjects before touching the card', async () => {
    const state = newState();
    const isReason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;
    await assert.rejects(
      provisionStandardKeys(state, { algorithms: { 0x82: 'ECCP256' } }),
      isReason('SLOT_INVALID'),
    );
    await assert.rejects(provisionStandardKeys(state, { subject: 'x'.repeat(60) }), isReason('INPUT_LENGTH'));
    assert.equal(await state.keys.info(0x9a), undefined);
  });
});
