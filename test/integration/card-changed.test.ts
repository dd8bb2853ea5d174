/**
 * CARD_CHANGED pushed (docs/personalization.md "The card in the reader changes at once"): the
 * daemon holds the card in the reader, an administrator enrolls it on the server, and the new
 * CA-issued certificate is what OpenSC reads through pcscd (`pkcs11-tool --read-object`) without
 * any `cardlink connect` or new login: the server reloaded the card for the same claim and pushed
 * CARD_CHANGED, the daemon fetched the signed snapshot and re-inserted the card. Before the
 * change, enrollment took the card from its holder (TAKEN_OVER): here the card stays inserted,
 * in the same slot, never taken over, and the 9A key still signs (the new key, after a fresh PIN).
 * Every part is real: the test IdP, the card server on SQLite, pcscd with the cardlink reader,
 * `cardlink daemon` and OpenSC.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createVerify, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { enrollCard } from '../../server/admin/enroll.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { cardSteps, OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };

describe('CARD_CHANGED: an enrollment reaches the card in the reader without reconnecting', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let caPem: string;
  let readerName: string;

  let steps: CardSteps;
  /** The 9A certificate as OpenSC reads it from the card through pcscd, now. */
  const read9a = async (name: string): Promise<X509Certificate> =>
    new X509Certificate(fs.readFileSync(await steps.readCertificateDer(OPENSC_ID['9a'], name)));

  before(async () => {
    stack = await startDaemonStack({
      name: 'card-changed',
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink Changed Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir, pin: PIN });
    cardId = stack.cardIds[0]!;
    const { storage, kek } = stack.cardServer.resources;
    caPem = (await initEmbeddedCa({ storage, kek, crlUrl: crlUrlFor(stack.serverUrl), actor: 'admin:test' }))
      .certificatePem;
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    readerName = cards[0]!.readerName!;
    await waitForCardPresent(readerName);
  });

  after(async () => {
    await stack?.stop();
  });

  it('OpenSC reads the CA-issued 9A certificate right after the enrollment, the card never leaving the daemon', async () => {
    const ca = new X509Certificate(caPem);
    const before = await read9a('before.der');
    assert.equal(before.checkIssued(ca), false, 'the card starts with a certificate the CA did not issue');
    const events = await stack.daemon.events();
    try {
      const { storage, kek } = stack.cardServer.resources;
      const enrolled = await enrollCard({ storage, kek, cardId, claims: CLAIMS, actor: 'admin:test' });
      const issued9a = enrolled.slots.find((s) => s.slot === 0x9a)!;

      // The push and the re-insertion take a moment; pkcs11-tool is run until it sees the new
      // certificate (a bounded wait, not a timed assertion).
      let after = before;
      const deadline = Date.now() + 15_000;
      while (Date.now() < deadline) {
        await waitForCardPresent(readerName);
        after = await read9a('after.der');
        if (after.fingerprint256 !== before.fingerprint256) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.equal(
        BigInt(`0x${after.serialNumber}`),
        BigInt(`0x${issued9a.serial}`),
        'the enrolled 9A certificate',
      );
      assert.ok(
        after.checkIssued(ca) && after.verify(ca.publicKey),
        'the new 9A certificate verifies against the CA',
      );
      assert.match(after.subjectAltName ?? '', /alice@example\.com/);

      // Never taken over, still in the same slot, and no new claim: the card was reloaded in place.
      const cards = await stack.daemon.cards();
      assert.equal(cards[0]!.state, 'inserted');
      assert.equal(cards[0]!.readerName, readerName);
      assert.equal(cards[0]!.takenOverBy, undefined);
      const kinds = events.seen.map((e) => JSON.stringify(e));
      assert.ok(!kinds.some((k) => k.includes('taken-over')), `no takeover event: ${kinds.join(' ')}`);
      const claims = await storage.db
        .selectFrom('sessions')
        .select(['id', 'ended_at'])
        .where('card_id', '=', cardId)
        .execute();
      assert.equal(claims.length, 1, 'one claim: the daemon never opened the card again');
      assert.equal(claims[0]!.ended_at, null);
      assert.match(stack.daemonLog(), /card changed on the server: re-inserted/);
    } finally {
      await events.close();
    }
  });

  it('the 9A key that signs now is the enrolled one: its signature verifies with the new certificate', async () => {
    const cert = await read9a('now.der');
    const data = path.join(dir, 'data.bin');
    fs.writeFileSync(data, 'signed after the enrollment, on the same connection');
    const sig = path.join(dir, 'data.sig');
    await steps.sign(OPENSC_ID['9a'], data, sig);
    const ok = createVerify('sha256')
      .update(fs.readFileSync(data))
      .verify(cert.publicKey, fs.readFileSync(sig));
    assert.ok(ok, 'the signature verifies with the CA-issued certificate read from the card');
    assert.ok(cert.verify(new X509Certificate(caPem).publicKey));
  });
});
