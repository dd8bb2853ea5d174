import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createPublicKey, verify } from 'node:crypto';
import { openPkcs11Provider } from '../../../server/keys/pkcs11-provider.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import type { Storage } from '../../../server/storage/index.js';
import { expectSw } from '../../apdu/piv/support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block } from '../../apdu/piv/support/keys.js';
import { createSoftHsmToken, type SoftHsmToken } from '../../support/softhsm.js';
import { BACKENDS, createBackend, type Backend } from '../storage/backends.js';
import { CARD_MGMT_KEY, CARD_PIN, createTestCard, openSession, pinBytes } from './support/card-fixture.js';

for (const kind of BACKENDS) {
  describe(`a card sealed under a SoftHSM2 KEK on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let token: SoftHsmToken;
    let kek: KekProvider;
    const openProvider = () =>
      openPkcs11Provider({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: token.pin });

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      token = await createSoftHsmToken();
      kek = await openProvider();
    });
    after(async () => {
      await kek.close();
      await backend.cleanup();
    });

    it('signs RSA-2048 and P-256 through APDUs, also with a freshly opened provider', async () => {
      const created = await createTestCard(storage, kek);
      const msg = Buffer.from('signed under an HSM-wrapped key');
      const spki = (slot: number) =>
        createPublicKey({
          key: Buffer.from(created.slots.find((s) => s.slot === slot)!.publicKeySpki),
          format: 'der',
          type: 'spki',
        });

      for (const provider of [kek, await openProvider()]) {
        const s = await openSession(storage, provider, created.cardId);
        expectSw(await s.host.verifyPin(pinBytes(CARD_PIN)), '9000');
        const rsa = await s.host.privateKeyOp(
          ALGORITHM_IDS.RSA2048,
          0x9a,
          0x81,
          pkcs1v15Sha256Block(msg, 256),
        );
        expectSw(rsa, '9000');
        assert.ok(verify('sha256', msg, spki(0x9a), rsa.data));
        const ec = await s.host.privateKeyOp(
          ALGORITHM_IDS.ECCP256,
          0x9e,
          0x81,
          createHash('sha256').update(msg).digest(),
        );
        expectSw(ec, '9000');
        assert.ok(verify('sha256', msg, { key: spki(0x9e), dsaEncoding: 'der' }, ec.data));
        expectSw(
          await s.host.mutualAuth('AES192', CARD_MGMT_KEY),
          '9000',
          'management key unsealed through the HSM',
        );
        s.state.dispose();
        if (provider !== kek) await provider.close();
      }
      const row = await storage.db
        .selectFrom('card_keys')
        .select('kek_version')
        .where('card_id', '=', created.cardId)
        .execute();
      assert.ok(row.every((r) => r.kek_version === kek.currentVersion));
    });
  });
}
