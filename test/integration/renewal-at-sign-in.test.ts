/**
 * Renewal at sign-in and re-insertion of a changed card after a reconnect (docs/personalization.md
 * "Renewal at sign-in", docs/daemon.md), every part real: the test IdP, the card server on SQLite
 * with its embedded CA, a TCP proxy between daemon and server, pcscd with the cardlink reader,
 * `cardlink daemon`, OpenSC, a PC/SC application and the OpenSSL pkcs11 engine.
 *
 * The card's profile has `renewal: { key: "new", windowDays: 30, atSignIn: true }`; it is enrolled
 * with certificates issued "340 days ago" (365-day validity: 25 days left, inside the window).
 *
 *   1. Signing in through the daemon renews it at OPEN_CARD: `pkcs11-tool --read-object` reads the
 *      renewed certificates, audited as the user; a message encrypted with `openssl cms` to the OLD
 *      9D certificate still decrypts with the card (retired key 1).
 *   2. The server restarts (a new session reopens the card, not due any more): the card is not
 *      re-inserted, a PC/SC handle opened before stays valid.
 *   3. While the daemon cannot reach the server, `admin renew` renews the card and the server
 *      restarts: the new session's snapshot differs, the card IS re-inserted (the old PC/SC handle
 *      is gone) and OpenSC reads the new certificate.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { certificateObjectTag, decodeCertificateObject } from '../../apdu/piv/certificates/index.js';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { enrollCard, type EnrolledCard } from '../../server/admin/enroll.js';
import { loadDefaultProfile, parseCardProfile, profileToJson } from '../../server/admin/profile.js';
import { renewCard } from '../../server/admin/renew.js';
import { initEmbeddedCa } from '../../server/ca/issuing-ca.js';
import { crlUrlFor } from '../../server/http/ca-routes.js';
import { getCardObject, listAuditRows } from '../../server/storage/index.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { PcscClient, type PcscCard } from '../support/pcsc-client.js';
import { cardSteps, OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const DAY_MS = 86_400_000;
/** Issued this long ago with the default 365 days: 25 days left, inside the 30-day window. */
const ENROLLED_DAYS_AGO = 340;
/** OpenSC's object ids: 9A = 01, 9D = 03, retired key management key 1 (slot 82) = 05. */
const MESSAGE = 'Board minutes, for Alice only.\n';
const SELECT_PIV = Buffer.from('00A4040009A0000003080000100000', 'hex');
/** How long a daemon gets to reconnect and reopen its cards. */
const RESYNC_WAIT_MS = 30_000;

const sw = (answer: Buffer) => answer.subarray(-2).toString('hex');

describe('renewal at sign-in; a reopened card is re-inserted only when its contents changed', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let caFile: string;
  let oldCertFile: string;
  let oldEnvelope: string;
  let enrolled: EnrolledCard;
  let pcsc: PcscClient;

  let steps: CardSteps;
  /** The certificate OpenSC reads from the card in the reader under PKCS#11 id `id`. */
  const readFromReader = async (id: string, name: string): Promise<X509Certificate> =>
    new X509Certificate(fs.readFileSync(await steps.readCertificateDer(id, `${name}.der`)));
  /** The certificate the card server holds in `slot` now. */
  const storedCertificate = async (slot: number): Promise<X509Certificate> => {
    const value = await getCardObject(
      stack.cardServer.resources.storage,
      cardId,
      certificateObjectTag(slot)!,
    );
    return new X509Certificate(decodeCertificateObject(value!));
  };
  const serialOf = (der: Uint8Array) => new X509Certificate(der).serialNumber;
  const renewals = () =>
    listAuditRows(stack.cardServer.resources.storage, { cardId, eventType: 'card.renewed' }, { limit: 100 });
  const count = (text: string, needle: string) => text.split(needle).length - 1;
  /** Resolves once the daemon's log has more than `before` lines saying `needle`. */
  const logSays = async (needle: string, before: number) => {
    const deadline = Date.now() + RESYNC_WAIT_MS;
    while (count(stack.daemonLog(), needle) <= before) {
      if (Date.now() > deadline) assert.fail(`the daemon never logged "${needle}"\n${stack.daemonLog()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  before(async () => {
    const profile = parseCardProfile({
      ...profileToJson(await loadDefaultProfile()),
      name: 'renew-at-sign-in',
      renewal: { key: 'new', windowDays: 30, atSignIn: true },
    });
    stack = await startDaemonStack({
      name: 'renew-at-sign-in',
      proxy: true,
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864', profile }],
      pcscd: { cardlink: { slots: 1, friendlyName: 'cardlink RenewAtSignIn Reader' } },
      daemon: {
        deviceName: 'alice-laptop',
        settings: {
          reconnect: { initialDelayMs: 100, maxDelayMs: 400 },
          // The card stays in the reader while the server is away (the test's whole point).
          timeouts: { graceSeconds: 600 },
        },
      },
    });
    dir = stack.dir;
    steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir, pin: PIN });
    cardId = stack.cardIds[0]!;
    const { storage, kek } = stack.cardServer.resources;
    const ca = await initEmbeddedCa({
      storage,
      kek,
      crlUrl: crlUrlFor(stack.serverUrl),
      actor: 'admin:test',
    });
    caFile = path.join(dir, 'ca.pem');
    fs.writeFileSync(caFile, ca.certificatePem);
    enrolled = await enrollCard({
      storage,
      kek,
      cardId,
      claims: CLAIMS,
      actor: 'admin:test',
      now: new Date(Date.now() - ENROLLED_DAYS_AGO * DAY_MS),
    });

    // A sender encrypts to the first 9D certificate, as a mail client would from a directory.
    const oldDer = path.join(dir, 'old-9d.der');
    fs.writeFileSync(oldDer, enrolled.slots.find((s) => s.slot === 0x9d)!.certificate);
    oldCertFile = path.join(dir, 'old-9d.pem');
    await steps.run('openssl', ['x509', '-inform', 'DER', '-in', oldDer, '-out', oldCertFile]);
    fs.writeFileSync(path.join(dir, 'message.txt'), MESSAGE);
    oldEnvelope = path.join(dir, 'old-envelope.pem');
    await steps.cmsEncrypt(oldCertFile, path.join(dir, 'message.txt'), oldEnvelope);
    assert.equal((await renewals()).length, 0);
    pcsc = await PcscClient.open();
  });

  after(async () => {
    await pcsc?.close();
    await stack?.stop();
  });

  it('signing in renews the card inside its window: the reader shows the renewed certificates', async () => {
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    await waitForCardPresent(cards[0]!.readerName!);

    const read = await readFromReader(OPENSC_ID['9a'], 'renewed-9a');
    const stored = await storedCertificate(0x9a);
    assert.equal(read.serialNumber, stored.serialNumber, 'the reader shows the certificate the server holds');
    assert.notEqual(read.serialNumber, serialOf(enrolled.slots.find((s) => s.slot === 0x9a)!.certificate));
    const ca = new X509Certificate(fs.readFileSync(caFile));
    assert.ok(read.checkIssued(ca) && read.verify(ca.publicKey), 'issued by the CA');
    assert.ok(Date.parse(read.validTo) > Date.now() + 300 * DAY_MS, 'a full validity again');
    const nine = await readFromReader(OPENSC_ID['9d'], 'renewed-9d');
    assert.notEqual(nine.serialNumber, serialOf(enrolled.slots.find((s) => s.slot === 0x9d)!.certificate));

    const audit = await renewals();
    assert.equal(audit.length, 1, 'renewed once');
    assert.match(audit[0]!.actor, /^user:/, 'the user is the actor');
    assert.match(audit[0]!.details, /"trigger":"sign-in"/);
    assert.match(audit[0]!.details, /"retiredTo":"0x82"/);
  });

  it('a message encrypted to the OLD 9D certificate still decrypts with the card (retired key 1)', async () => {
    const retired = await readFromReader(OPENSC_ID.retired1, 'retired1');
    assert.equal(retired.serialNumber, serialOf(enrolled.slots.find((s) => s.slot === 0x9d)!.certificate));
    assert.equal(await steps.cmsDecrypt(oldEnvelope, OPENSC_ID.retired1, oldCertFile), MESSAGE);
  });

  it('after a server restart the unchanged card is not re-inserted: a PC/SC handle stays valid', async () => {
    const reader = stack.pcscd.readerName(0);
    const card: PcscCard = await pcsc.connect(reader);
    try {
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000');
      const synced = count(stack.daemonLog(), 'cards synchronised');
      await stack.restartServer();
      // The daemon cannot resume (the old process's sessions are gone): a new session reopens the card.
      await logSays('cards synchronised', synced);
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000', 'the handle survived the reconnect');
      assert.equal(count(stack.daemonLog(), 'card contents changed while away'), 0);
      assert.equal((await renewals()).length, 1, 'not due any more: no second renewal');
      assert.equal((await stack.daemon.cards())[0]!.state, 'inserted');
    } finally {
      await card.disconnect().catch(() => undefined);
    }
  });

  it('a card renewed while the daemon was away IS re-inserted and shows the new certificate', async () => {
    const reader = stack.pcscd.readerName(0);
    const card: PcscCard = await pcsc.connect(reader);
    try {
      assert.equal(sw(await card.transmit(SELECT_PIV)), '9000');
      const before = (await storedCertificate(0x9a)).serialNumber;
      const synced = count(stack.daemonLog(), 'cards synchronised');
      // The daemon loses the server: its connection is cut and new ones are refused.
      stack.proxy!.pause();
      stack.proxy!.cutAll();
      const { storage, kek } = stack.cardServer.resources;
      const renewed = await renewCard({ storage, kek, cardId, actor: 'admin:test' });
      // A restart ends the old session (and whatever it would have pushed): a new one must notice.
      await stack.restartServer();
      stack.proxy!.resume();
      await logSays('cards synchronised', synced);

      const now = renewed.slots.find((s) => s.slot === 0x9a)!;
      assert.notEqual(serialOf(now.certificate), before);
      await waitForCardPresent(reader);
      const read = await readFromReader(OPENSC_ID['9a'], 'after-away-9a');
      assert.equal(read.serialNumber, serialOf(now.certificate), 'the reader shows the new certificate');
      // The card was taken out and put back: the handle opened before is gone.
      await assert.rejects(card.transmit(SELECT_PIV));
      assert.equal((await stack.daemon.cards())[0]!.state, 'inserted');
      assert.equal(count(stack.daemonLog(), 'card contents changed while away: re-inserted'), 1);
    } finally {
      await card.disconnect().catch(() => undefined);
    }
  });
});
