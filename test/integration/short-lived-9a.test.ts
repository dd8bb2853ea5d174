/**
 * Short-lived 9A certificates (docs/personalization.md): with the profile's `shortLived9AHours`,
 * each sign-in gets a new 9A key and a certificate valid that many hours from the embedded CA.
 * Two sign-ins of the daemon give two different certificates, read by OpenSC through pcscd, each
 * valid exactly the profile's hours and each verifying against the CA; the 9A key signs for the
 * second one. Every part is real: the test IdP, the card server, pcscd, the daemon and OpenSC.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createVerify, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/profile.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { cardSteps, OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const HOURS = 8;
const PIN = '24681357';

describe('short-lived 9A certificates: a new one at each sign-in', () => {
  let stack: DaemonStack;
  let dir: string;
  let ca: X509Certificate;

  let steps: CardSteps;
  /** The 9A certificates the server issued for the card, oldest first. */
  const issued9a = () =>
    stack.cardServer.resources.storage.db
      .selectFrom('issued_certificates')
      .select(['serial', 'slot'])
      .where('card_id', '=', stack.cardIds[0]!)
      .orderBy('issued_at')
      .execute();
  /**
   * Signs in (a new session: OPEN_CARD) and reads the 9A certificate through pcscd once the
   * server has issued the sign-in's certificate; the reader gets it when the new session has
   * opened the card, so the read is repeated (bounded) until it is the newest issued one.
   */
  const signInAndRead = async (name: string, expectIssued: number): Promise<X509Certificate> => {
    await stack.daemon.login('alice');
    const deadline = Date.now() + 20_000;
    for (;;) {
      const rows = await issued9a();
      const cards = await stack.daemon.cards();
      if (rows.length === expectIssued && cards[0]?.state === 'inserted') {
        await waitForCardPresent(cards[0].readerName!);
        const der = await steps.readCertificateDer(OPENSC_ID['9a'], name);
        const cert = new X509Certificate(fs.readFileSync(der));
        if (BigInt(`0x${cert.serialNumber}`) === BigInt(`0x${rows.at(-1)!.serial}`)) return cert;
      }
      if (Date.now() > deadline) assert.fail(`the reader never showed sign-in ${expectIssued}'s certificate`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  before(async () => {
    const base = await loadDefaultProfile();
    const profile = parseCardProfile({
      ...profileToJson(base),
      name: 'short-lived',
      shortLived9AHours: HOURS,
    });
    stack = await startDaemonStack({
      name: 'short-lived',
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864', profile }],
      pcscd: { cardlink: { slots: 1, friendlyName: 'cardlink ShortLived Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir, pin: PIN });
    const { storage, kek } = stack.cardServer.resources;
    ca = new X509Certificate(
      (await initEmbeddedCa({ storage, kek, crlUrl: crlUrlFor(stack.serverUrl), actor: 'admin:test' }))
        .certificatePem,
    );
  });

  after(async () => {
    await stack?.stop();
  });

  it('two sign-ins give two 9A certificates, each valid the profile hours and issued by the CA', async () => {
    const first = await signInAndRead('first.der', 1);
    // Sign out (the card leaves the reader, the session ends), then a second sign-in: a new
    // session opens the card again.
    const control = await stack.daemon.control();
    try {
      await control.request('logout');
    } finally {
      await control.close();
    }
    const second = await signInAndRead('second.der', 2);
    assert.notEqual(first.serialNumber, second.serialNumber, 'a new certificate at the second sign-in');
    assert.notEqual(
      first.publicKey.export({ type: 'spki', format: 'pem' }),
      second.publicKey.export({ type: 'spki', format: 'pem' }),
      'with a new key',
    );
    for (const cert of [first, second]) {
      assert.ok(cert.checkIssued(ca) && cert.verify(ca.publicKey), 'issued and signed by the CA');
      const hours = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 3_600_000;
      assert.equal(hours, HOURS, `valid ${HOURS} hours, not the template's days`);
      assert.ok(Date.parse(cert.validTo) <= Date.now() + HOURS * 3_600_000);
    }
    const rows = await issued9a();
    assert.deepEqual(
      rows.map((r) => r.slot),
      [0x9a, 0x9a],
      'only 9A is re-issued',
    );
  });

  it('the 9A key on the card is the one the latest certificate names', async () => {
    const cert = new X509Certificate(fs.readFileSync(path.join(dir, 'second.der')));
    const data = path.join(dir, 'data.bin');
    fs.writeFileSync(data, 'short-lived');
    const sig = path.join(dir, 'data.sig');
    await steps.sign(OPENSC_ID['9a'], data, sig);
    assert.ok(
      createVerify('sha256').update(fs.readFileSync(data)).verify(cert.publicKey, fs.readFileSync(sig)),
    );
  });
});
