import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  createHash,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  randomBytes,
  verify,
} from 'node:crypto';
import { decodeCertificateObject } from '../../../apdu/piv/certificates/index.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/index.js';
import { findTlv, parseTlvList } from '../../../apdu/codec/index.js';
import { PivCard, padReferenceValue } from '../../../apdu/piv/index.js';
import type { CreatedCard } from '../../../server/admin/index.js';
import { openPersistentCardState } from '../../../server/cards/index.js';
import { verifyChain } from '../../../server/audit/audit-log.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { migrate, openStorage, referenceStatus, type Storage } from '../../../server/storage/index.js';
import { expectSw, hex, Host, swHex, toHex } from '../../apdu/piv/support/host.js';
import { ALGORITHM_IDS, pkcs1v15Sha256Block, publicKeyFromTemplate } from '../../apdu/piv/support/keys.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';
import {
  auditOf,
  CARD_MGMT_KEY,
  CARD_PIN,
  createTestCard,
  openSession,
  pinBytes,
  type Session,
} from './support/card-fixture.js';

/** Wrong PINs sent at once; the PIN's retry limit equals it, so every try must count. */
const CONCURRENT_TRIES = 50;

const message = (label: string) => Buffer.from(`cardlink persistent state test: ${label}`);

async function signRsa(
  host: Host,
  slot: number,
  algorithmId: number,
  spki: Uint8Array,
  k: number,
  label: string,
) {
  const msg = message(label);
  const r = await host.privateKeyOp(algorithmId, slot, 0x81, pkcs1v15Sha256Block(msg, k));
  expectSw(r, '9000', `RSA sign in slot ${slot.toString(16)}`);
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  assert.ok(verify('sha256', msg, key, r.data), 'RSA signature verifies with node:crypto');
  return r.data;
}

async function signEc(
  host: Host,
  slot: number,
  algorithmId: number,
  spki: Uint8Array,
  hash: 'sha256' | 'sha384',
  label: string,
) {
  const msg = message(label);
  const r = await host.privateKeyOp(algorithmId, slot, 0x81, createHash(hash).update(msg).digest());
  expectSw(r, '9000', `ECDSA sign in slot ${slot.toString(16)}`);
  const key = createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' });
  assert.ok(
    verify(hash, msg, { key, dsaEncoding: 'der' }, r.data),
    'ECDSA signature verifies with node:crypto',
  );
  return r.data;
}

for (const kind of BACKENDS) {
  describe(`persistent card state on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let keys: Awaited<ReturnType<typeof tempKeyFileProvider>>;
    let kek: KekProvider;

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open({ poolSize: 20 });
      keys = await tempKeyFileProvider();
      kek = keys.provider;
    });
    after(async () => {
      await backend.cleanup();
      await keys.cleanup();
    });

    describe('a card created by the admin functions, driven with APDUs', () => {
      let created: CreatedCard;
      let session: Session;
      const spkiOf = (slot: number) => created.slots.find((s) => s.slot === slot)!.publicKeySpki;
      let rsa3072Spki: Uint8Array;

      before(async () => {
        created = await createTestCard(storage, kek);
        session = await openSession(storage, kek, created.cardId);
      });

      it('serves the installed objects and certificates', async () => {
        const { host } = session;
        expectSw(await host.select(), '9000');
        const chuid = await host.getData(OBJECT_TAG.CHUID);
        expectSw(chuid, '9000');
        const guid = findTlv(parseTlvList(chuidContent(chuid.data)), 0x34)!.value;
        assert.equal(toHex(guid), created.guid.toUpperCase());
        assert.equal(toHex(session.state.identity.guid), created.guid.toUpperCase());
        const cert = await host.getData(0x5fc105);
        expectSw(cert, '9000');
        assert.equal(
          toHex(decodeCertificateObject(chuidContent(cert.data))),
          toHex(created.slots.find((s) => s.slot === 0x9a)!.certificate!),
        );
        const serial = await host.send({ ins: 0xf8, p1: 0, p2: 0 });
        assert.equal(Buffer.from(serial.data).readUInt32BE(0), created.serial);
      });

      it('verifies the PIN, counts a wrong one and restores the counter on success', async () => {
        const { host } = session;
        expectSw(await host.verifyPin(pinBytes('999999')), '63C2');
        assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 2);
        expectSw(await host.verifyPin(pinBytes(CARD_PIN)), '9000');
        assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 3);
        expectSw(await host.send({ ins: 0x20, p1: 0, p2: 0x80 }), '9000', 'verified status');
      });

      it('signs with the provisioned RSA-2048 (9A) and P-256 (9C) keys', async () => {
        const { host } = session;
        await signRsa(host, 0x9a, ALGORITHM_IDS.RSA2048, spkiOf(0x9a), 256, 'rsa2048');
        expectSw(await host.verifyPin(pinBytes(CARD_PIN)), '9000'); // 9C is PIN-always
        await signEc(host, 0x9c, ALGORITHM_IDS.ECCP256, spkiOf(0x9c), 'sha256', 'p256');
        const used = await auditOf(storage, created.cardId, 'key.used');
        assert.ok(used.length >= 2);
        const last = used[used.length - 1]!.details;
        assert.equal(last.slot, '0x9c');
        assert.equal(last.algorithm, 'ECCP256');
        assert.equal(
          last.inputSha256,
          createHash('sha256')
            .update(createHash('sha256').update(message('p256')).digest())
            .digest('hex'),
        );
        assert.ok(
          !JSON.stringify(used).includes(
            toHex(createHash('sha256').update(message('p256')).digest()).toLowerCase(),
          ),
          'input not logged',
        );
      });

      it('refuses GENERATE and PUT DATA without the management key, then does both after mutual auth', async () => {
        const { host } = session;
        expectSw(await host.generate(0x9a, ALGORITHM_IDS.RSA3072), '6982');
        expectSw(await host.putData(0x5fc108, hex('BC00')), '6982');
        expectSw(await host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
        const gen = await host.generate(0x9a, ALGORITHM_IDS.RSA3072);
        expectSw(gen, '9000');
        const pub = publicKeyFromTemplate('RSA3072', gen.data);
        rsa3072Spki = new Uint8Array(pub.export({ type: 'spki', format: 'der' }));
        const info = await session.state.keys.info(0x9a);
        assert.deepEqual(info?.publicKeySpki, rsa3072Spki);
        await signRsa(host, 0x9a, ALGORITHM_IDS.RSA3072, rsa3072Spki, 384, 'rsa3072');

        const value = hex('BC 03 01 02 03 FE 00');
        expectSw(await host.putData(0x5fc108, value), '9000');
        const back = await host.getData(0x5fc108);
        expectSw(back, '9000');
        assert.equal(toHex(chuidContent(back.data)), toHex(value));
      });

      it('generates P-384 in a retired slot, signs with it and updates the Key History', async () => {
        const { host } = session;
        expectSw(await host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
        const gen = await host.generate(0x82, ALGORITHM_IDS.ECCP384);
        expectSw(gen, '9000');
        const spki = new Uint8Array(
          publicKeyFromTemplate('ECCP384', gen.data).export({ type: 'spki', format: 'der' }),
        );
        expectSw(await host.verifyPin(pinBytes(CARD_PIN)), '9000');
        await signEc(host, 0x82, ALGORITHM_IDS.ECCP384, spki, 'sha384', 'p384');
      });

      it('derives an ECDH shared secret with a P-256 key', async () => {
        const { host } = session;
        expectSw(await host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
        const gen = await host.generate(0x83, ALGORITHM_IDS.ECCP256);
        expectSw(gen, '9000');
        const cardPublic = publicKeyFromTemplate('ECCP256', gen.data);
        const peer = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
        const jwk = peer.publicKey.export({ format: 'jwk' });
        const point = Buffer.concat([
          Buffer.of(4),
          Buffer.from(jwk.x!, 'base64url'),
          Buffer.from(jwk.y!, 'base64url'),
        ]);
        expectSw(await host.verifyPin(pinBytes(CARD_PIN)), '9000');
        const r = await host.privateKeyOp(ALGORITHM_IDS.ECCP256, 0x83, 0x85, point);
        expectSw(r, '9000');
        const expected = diffieHellman({ privateKey: peer.privateKey, publicKey: cardPublic });
        assert.equal(toHex(r.data), toHex(expected));
        const used = await auditOf(storage, created.cardId, 'key.used');
        assert.equal(used[used.length - 1]!.details.operation, 'ecdh');
      });

      it('still works with the same keys after the storage is closed and reopened', async () => {
        const signatureBefore = await signRsa(
          session.host,
          0x9a,
          ALGORITHM_IDS.RSA3072,
          rsa3072Spki,
          384,
          'before restart',
        );
        session.state.dispose();
        let reopened: Storage;
        if (kind === 'sqlite') {
          await storage.close();
          reopened = await openStorage(backend.url);
          await migrate(reopened);
        } else {
          reopened = await backend.open();
        }
        try {
          const again = await openSession(reopened, kek, created.cardId);
          expectSw(await again.host.select(), '9000');
          expectSw(await again.host.verifyPin(pinBytes(CARD_PIN)), '9000');
          const signatureAfter = await signRsa(
            again.host,
            0x9a,
            ALGORITHM_IDS.RSA3072,
            rsa3072Spki,
            384,
            'before restart',
          );
          assert.equal(
            toHex(signatureAfter),
            toHex(signatureBefore),
            'RSA PKCS#1 v1.5 is deterministic: same key',
          );
          await signEc(again.host, 0x9e, ALGORITHM_IDS.ECCP256, spkiOf(0x9e), 'sha256', 'after restart');
          expectSw(await again.host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
          const obj = await again.host.getData(0x5fc108);
          expectSw(obj, '9000');
          assert.equal((await verifyChain(reopened)).ok, true);
          again.state.dispose();
        } finally {
          if (kind === 'sqlite') {
            await reopened.close();
            storage = await backend.open({ poolSize: 20 });
          }
        }
      });
    });

    it('refuses every write of a session that was taken over', async () => {
      const created = await createTestCard(storage, kek);
      const first = await openSession(storage, kek, created.cardId);
      expectSw(await first.host.select(), '9000');
      expectSw(await first.host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
      expectSw(await first.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      // More states of the same (soon stale) session, not yet told of the takeover.
      const openStale = () =>
        openPersistentCardState({
          storage,
          kek,
          cardId: created.cardId,
          sessionId: first.sessionId,
          epoch: first.epoch,
          actor: 'user:test',
        });
      const staleForPut = await openStale();
      const staleForVerify = await openStale();
      const staleForSign = await openStale();
      const signer = new Host(new PivCard(staleForSign));
      expectSw(await signer.privateKeyOp(ALGORITHM_IDS.ECCP256, 0x9e, 0x81, randomBytes(32)), '9000'); // key cached
      const objectBefore = await first.state.objects.get(0x5fc108);

      const second = await openSession(storage, kek, created.cardId);

      const takenOver = (e: Error & { code?: string }) => e.code === 'ERR_CARD_TAKEN_OVER';
      await assert.rejects(
        first.state.runCommand(first.nextSeq(), (view) =>
          first.card.transmit(
            Uint8Array.from([0x00, 0xdb, 0x3f, 0xff, 0x07, 0x5c, 0x03, 0x5f, 0xc1, 0x08, 0x53, 0x00]),
            view,
          ),
        ),
        takenOver,
      );
      assert.equal(first.state.disposed, true, 'the state disposed itself');
      await assert.rejects(
        first.state.objects.put(0x5fc108, hex('BC00')),
        (e: Error & { code?: string }) => e.code === 'ERR_CARD_STATE',
      );
      await assert.rejects(staleForPut.objects.put(0x5fc108, hex('BC00')), takenOver);
      await assert.rejects(openStale(), takenOver);

      const answer = await new Host(new PivCard(staleForVerify)).verifyPin(pinBytes('999999'));
      assert.equal(swHex(answer.sw), '6F00');
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 3, 'no try consumed');
      assert.deepEqual(await second.state.objects.get(0x5fc108), objectBefore);

      const usedBefore = (await auditOf(storage, created.cardId, 'key.used')).length;
      const signed = await signer.privateKeyOp(ALGORITHM_IDS.ECCP256, 0x9e, 0x81, randomBytes(32));
      assert.equal(swHex(signed.sw), '6F00', 'no signature for a stale session, even with its key cached');
      assert.equal((await auditOf(storage, created.cardId, 'key.used')).length, usedBefore);
      assert.equal(staleForSign.disposed, true);

      // The new holder works.
      expectSw(await second.host.verifyPin(pinBytes(CARD_PIN)), '9000');
      expectSw(await second.host.mutualAuth('AES192', CARD_MGMT_KEY), '9000');
      expectSw(await second.host.putData(0x5fc108, hex('BC00')), '9000');
      second.state.dispose();
    });

    it(`counts ${CONCURRENT_TRIES} concurrent wrong VERIFYs through the card exactly, ending blocked`, async () => {
      const created = await createTestCard(storage, kek, {
        pin: { minLength: 6, maxLength: 8, retries: CONCURRENT_TRIES },
      });
      const session = await openSession(storage, kek, created.cardId);
      // One PivCard per try, all on the one state: the store calls really run concurrently.
      const wrong = padReferenceValue(pinBytes('000000'));
      const answers = await Promise.all(
        Array.from({ length: CONCURRENT_TRIES }, async () => {
          const card = new PivCard(session.state);
          return swHex((await new Host(card).send({ ins: 0x20, p1: 0, p2: 0x80, data: wrong })).sw);
        }),
      );
      assert.equal(answers.filter((sw) => sw === '6983').length, 1, 'exactly one try hit zero');
      assert.ok(answers.every((sw) => sw === '6983' || /^63C[0-9A-F]$/.test(sw)));
      assert.deepEqual(await referenceStatus(storage, created.cardId, 'pin'), {
        remaining: 0,
        limit: CONCURRENT_TRIES,
      });
      const failed = await auditOf(storage, created.cardId, 'pin.failed');
      const blocked = await auditOf(storage, created.cardId, 'pin.blocked');
      assert.deepEqual(
        [...failed, ...blocked].map((e) => e.details.remaining as number).sort((a, b) => a - b),
        Array.from({ length: CONCURRENT_TRIES }, (_, i) => i),
        'each try saw its own counter value',
      );
      // Blocked: even the right PIN fails and consumes nothing.
      expectSw(await session.host.verifyPin(pinBytes(CARD_PIN)), '6983');
      assert.equal((await referenceStatus(storage, created.cardId, 'pin')).remaining, 0);
      session.state.dispose();
    });
  });
}

/** The content of tag 53 in a GET DATA answer. */
function chuidContent(data: Uint8Array): Uint8Array {
  assert.equal(data[0], 0x53);
  let offset = 2;
  let length = data[1]!;
  if (length === 0x81) {
    length = data[2]!;
    offset = 3;
  } else if (length === 0x82) {
    length = (data[2]! << 8) | data[3]!;
    offset = 4;
  }
  return data.subarray(offset, offset + length);
}
