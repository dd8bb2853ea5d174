/**
 * Renewal at sign-in at the card server (server/session/card-handling.ts, profile
 * `renewal.atSignIn`), through the wire protocol with a real IdP's tokens, the server over TLS on
 * SQLite and its embedded CA:
 *   - a card not due opens unchanged; once inside its window, the next OPEN_CARD renews it with the
 *     names of the session's token (not the old certificates'), audited with the user as actor,
 *     and the session holding it meanwhile gets CARD_CHANGED before it is taken over;
 *   - a renewal that fails (a claim the template needs is in neither the token nor the certificates)
 *     is logged as a warning and the card opens with its certificates; the next sign-in within
 *     RENEWAL_RETRY_AFTER_MS does not try again;
 *   - two OPEN_CARDs of one due card at once renew it once (one retired slot), with no warning;
 *   - with short-lived 9A too, the 9A certificate (always hours from expiry) does not make the card
 *     due, and a due card is renewed in its other slots while 9A gets its short-lived certificate.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  certificateObjectTag,
  decodeCertificateObject,
  SubjectAlternativeNameExtension,
  X509Certificate,
} from '../../../apdu/piv/certificates/index.js';
import { decodeSnapshot } from '../../../apdu/piv/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import { createCard, loadDefaultProfile, profileToJson } from '../../../server/admin/index.js';
import { renewalDueSince } from '../../../server/admin/renew.js';
import { parseCardProfile } from '../../../server/admin/profile.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import {
  getCardObject,
  listAuditRows,
  listCardCertificates,
  listCardKeys,
} from '../../../server/storage/index.js';
import { capturedLogger, type CapturedLog } from '../../support/captured-log.js';
import { startTestCardServer, TEST_TENANT, type TestCardServer } from '../../support/card-server.js';
import { startTestIdp, type TestIdp } from '../../support/oidc-provider.js';
import { newDeviceKey, SessionClient, type DeviceKey } from '../../support/session-client.js';

const DAY_MS = 86_400_000;
const CLAIMS = { email: 'old@example.com', upn: 'old@corp.example', name: 'Old Name' };
/** Issued this long ago with the default 365 days: 25 days left, inside the 30-day window. */
const DUE_DAYS_AGO = 340;
const SHORT_HOURS = 8;

describe('renewal at sign-in (OPEN_CARD)', () => {
  let idp: TestIdp;
  let dir: string;
  let node: TestCardServer;
  let log: CapturedLog;
  /** One device per user (a device key belongs to one user). */
  const devices = new Map<string, DeviceKey>();
  const clients: SessionClient[] = [];

  const storage = () => node.resources.storage;
  const kek = () => node.resources.kek;
  const signIn = async (subject: string, claims: Record<string, string> = {}) => {
    const client = await SessionClient.connect(node.server.sessionUrl, node.tls.cert);
    clients.push(client);
    await client.hello();
    const token = await idp.mintAccessToken({ claims: { sub: subject, ...claims } });
    if (!devices.has(subject)) devices.set(subject, newDeviceKey());
    const ok = await client.auth(token, devices.get(subject)!, `${subject}-laptop`);
    assert.equal(ok.type, 'AUTH_OK', ok.type === 'ERROR' ? ok.code : '');
    return client;
  };
  const open = async (client: SessionClient, cardId: string) => {
    const opened = await client.request({ type: 'OPEN_CARD', cardId, takeOver: true });
    assert.equal(opened.type, 'CARD_OPENED', opened.type === 'ERROR' ? opened.code : '');
    return opened as { handle: number; snapshot: Uint8Array };
  };
  const certificateIn = (snapshot: Uint8Array, slot: number) =>
    new X509Certificate(
      decodeCertificateObject(decodeSnapshot(snapshot).objects.get(certificateObjectTag(slot)!)!),
    );
  const renewals = (cardId: string) =>
    listAuditRows(storage(), { cardId, eventType: 'card.renewed' }, { limit: 100 });
  const newCard = async (subject: string, profile: unknown, enrolledDaysAgo?: number) => {
    const card = await createCard({
      storage: storage(),
      kek: kek(),
      user: { issuer: idp.issuer, subject, tenant: TEST_TENANT },
      profile,
    });
    if (enrolledDaysAgo !== undefined)
      await enrollCard({
        storage: storage(),
        kek: kek(),
        cardId: card.cardId,
        claims: CLAIMS,
        actor: 'admin:test',
        now: new Date(Date.now() - enrolledDaysAgo * DAY_MS),
      });
    return card.cardId;
  };
  const waitFor = async (what: string, check: () => boolean) => {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) assert.fail(`never: ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  let atSignIn: Record<string, unknown>;

  before(async () => {
    idp = await startTestIdp();
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-renew-at-sign-in-'));
    log = capturedLogger('test-server', 'info');
    node = await startTestCardServer(dir, idp, { deviceRegistration: 'first-device' }, log.logger);
    await initEmbeddedCa({
      storage: storage(),
      kek: kek(),
      crlUrl: 'http://127.0.0.1/ca/crl',
      actor: 'admin:test',
    });
    atSignIn = {
      ...profileToJson(await loadDefaultProfile()),
      name: 'renew-at-sign-in',
      renewal: { key: 'new', windowDays: 30, atSignIn: true },
    };
  });

  after(async () => {
    for (const c of clients) c.close();
    await node?.stop();
    await idp?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('renews a due card with the names of the token, audited as the user; the holder gets CARD_CHANGED', async () => {
    const cardId = await newCard('alice', atSignIn, 0);
    const first = await signIn('alice');
    const before = certificateIn((await open(first, cardId)).snapshot, 0x9a);
    assert.equal((await renewals(cardId)).length, 0, 'not due: not renewed');

    // The card comes inside its window while the first session holds it (certificates issued
    // "340 days ago"); the first session is told of that change too.
    await enrollCard({
      storage: storage(),
      kek: kek(),
      cardId,
      claims: CLAIMS,
      actor: 'admin:test',
      now: new Date(Date.now() - DUE_DAYS_AGO * DAY_MS),
    });
    await waitFor('CARD_CHANGED of the enrollment', () =>
      first.pushes.some((p) => p.type === 'CARD_CHANGED'),
    );
    first.pushes.length = 0;

    const second = await signIn('alice', { email: 'alice.new@example.com', name: 'Alice New' });
    const opened = await open(second, cardId);
    const renewed = certificateIn(opened.snapshot, 0x9a);
    assert.notEqual(renewed.serialNumber, before.serialNumber);
    assert.ok(renewed.notAfter.getTime() > Date.now() + 300 * DAY_MS, 'a full validity again');
    assert.equal(renewed.subjectName.getField('CN')[0], 'Alice New', "the token's name");
    const san = renewed.getExtension(SubjectAlternativeNameExtension)!;
    assert.ok(
      san.names.items.some((n) => n.type === 'email' && n.value === 'alice.new@example.com'),
      "the token's e-mail address",
    );
    assert.ok(
      san.names.items.some((n) => n.type === 'upn' && n.value === 'old@corp.example'),
      'a name the token lacks comes back from the old certificate',
    );
    const stored = await getCardObject(storage(), cardId, certificateObjectTag(0x9a)!);
    assert.equal(new X509Certificate(decodeCertificateObject(stored!)).serialNumber, renewed.serialNumber);

    const audit = await renewals(cardId);
    assert.equal(audit.length, 1);
    assert.match(audit[0]!.actor, /^user:/);
    assert.match(audit[0]!.details, /"trigger":"sign-in"/);
    assert.match(audit[0]!.details, /"retiredTo":"0x82"/);
    assert.ok(audit[0]!.details.includes(`"session":"${second.session!.sessionId}"`), audit[0]!.details);
    assert.match(log.raw(), /certificates renewed at sign-in/);

    await waitFor('TAKEN_OVER of the first session', () => first.pushes.some((p) => p.type === 'TAKEN_OVER'));
    assert.ok(
      first.pushes.some((p) => p.type === 'CARD_CHANGED'),
      `the holder learns of the renewal: ${first.pushes.map((p) => p.type).join(', ')}`,
    );

    // Renewed: the next sign-in opens it as it is.
    const third = await signIn('alice');
    assert.equal(
      certificateIn((await open(third, cardId)).snapshot, 0x9a).serialNumber,
      renewed.serialNumber,
    );
    assert.equal((await renewals(cardId)).length, 1);
  });

  it('a renewal that fails is logged and the card opens with the certificates it has', async () => {
    // The template needs {org}, which neither the certificates nor the token carry.
    const json = {
      ...atSignIn,
      slots: [
        { slot: '9C', algorithm: 'ECCP256', template: { subject: [{ CN: '{name}' }, { O: '{org}' }] } },
      ],
    };
    const cardId = await newCard(
      'bob',
      { ...json, slots: [{ slot: '9C', algorithm: 'ECCP256' }] },
      DUE_DAYS_AGO,
    );
    // Stored profiles are what renewal reads: the new template arrives with the profile row.
    await storage()
      .db.updateTable('cards')
      .set({ profile: JSON.stringify(profileToJson(parseCardProfile(json))) })
      .where('id', '=', cardId)
      .execute();
    const before = await getCardObject(storage(), cardId, certificateObjectTag(0x9c)!);
    const client = await signIn('bob');
    const opened = await open(client, cardId);
    assert.deepEqual(
      decodeSnapshot(opened.snapshot).objects.get(certificateObjectTag(0x9c)!),
      new Uint8Array(before!),
      'the old certificate',
    );
    assert.equal((await renewals(cardId)).length, 0);
    const warning = log.lines.find((l) => JSON.stringify(l).includes('certificates not renewed at sign-in'));
    assert.ok(warning, log.raw());
    assert.equal(warning.level, 'warn');
    assert.ok(JSON.stringify(warning).includes(cardId));

    // Remembered: the next sign-in opens the card without trying (no key made, no CA signature).
    const warnings = () =>
      log.lines.filter((l) => {
        const line = JSON.stringify(l);
        return line.includes('certificates not renewed at sign-in') && line.includes(cardId);
      }).length;
    await open(await signIn('bob'), cardId);
    assert.equal(warnings(), 1, 'not tried again within RENEWAL_RETRY_AFTER_MS');
    assert.equal((await renewals(cardId)).length, 0);
  });

  it('two OPEN_CARDs of one due card at once: renewed once, one retired slot, no warning', async () => {
    const cardId = await newCard('erin', atSignIn, DUE_DAYS_AGO);
    const enrolled = (await listCardCertificates(storage(), cardId)).map((c) => c.serial);
    const [one, two] = await Promise.all([signIn('erin'), signIn('erin')]);
    const answers = await Promise.all(
      [one!, two!].map((c) => c.request({ type: 'OPEN_CARD', cardId, takeOver: true })),
    );
    assert.ok(answers.some((a) => a.type === 'CARD_OPENED'));
    assert.equal((await renewals(cardId)).length, 1, 'one renewal');
    const held = (await listCardKeys(storage(), cardId)).map((k) => k.slot);
    assert.ok(held.includes(0x82));
    assert.equal(held.includes(0x83), false, 'one retired slot');
    const register = await listCardCertificates(storage(), cardId);
    assert.deepEqual(
      register
        .filter((c) => c.revocationReason === 'superseded')
        .map((c) => c.serial)
        .sort(),
      [...enrolled].sort(),
      'one set of certificates revoked',
    );
    assert.equal(
      log.lines.some((l) => {
        const line = JSON.stringify(l);
        return line.includes('certificates not renewed at sign-in') && line.includes(cardId);
      }),
      false,
      'the second OPEN_CARD found the card renewed: not a failure',
    );
  });

  it('with short-lived 9A: its certificate does not make the card due; a due card renews the other slots', async () => {
    const json = { ...atSignIn, shortLived9AHours: SHORT_HOURS };
    const profile = parseCardProfile(json);
    const fresh = await newCard('carol', json, 0);
    const client = await signIn('carol');
    const opened = await open(client, fresh);
    const nine = certificateIn(opened.snapshot, 0x9a);
    assert.equal((nine.notAfter.getTime() - nine.notBefore.getTime()) / 3_600_000, SHORT_HOURS);
    assert.equal(await renewalDueSince(storage(), fresh, profile, new Date()), undefined);
    assert.equal((await renewals(fresh)).length, 0, 'the short-lived 9A certificate did not make it due');

    const due = await newCard('dave', json, DUE_DAYS_AGO);
    assert.ok(await renewalDueSince(storage(), due, profile, new Date()));
    const other = await signIn('dave');
    const renewedOpen = await open(other, due);
    const audit = await renewals(due);
    assert.equal(audit.length, 1);
    const slots = (JSON.parse(audit[0]!.details) as { slots: { slot: string }[] }).slots.map((s) => s.slot);
    assert.deepEqual(slots.sort(), ['0x9c', '0x9d', '0x9e']);
    const renewedNine = certificateIn(renewedOpen.snapshot, 0x9a);
    assert.equal((renewedNine.notAfter.getTime() - renewedNine.notBefore.getTime()) / 3_600_000, SHORT_HOURS);
    const unrevoked = (await listCardCertificates(storage(), due)).filter((c) => c.revokedAt === null);
    assert.equal(unrevoked.length, 4, 'one current certificate per slot');
  });
});
