/**
 * PKCS#12 import through the whole chain (docs/personalization.md, "Import a PKCS#12"), every part
 * real: the test IdP, the card server on SQLite, pcscd with the cardlink reader, `cardlink daemon`,
 * OpenSC and the OpenSSL pkcs11 engine.
 *
 * The daemon holds the card in the reader; an administrator imports an RSA-2048 key and its
 * certificate (made by `openssl req -x509`, exported by `openssl pkcs12 -export` with OpenSSL 3's
 * defaults) into 9D. Without reconnecting, OpenSC reads the imported certificate from 9D
 * (`pkcs11-tool --read-object`, byte for byte the file's), and a message encrypted to that
 * certificate with `openssl cms -encrypt`, as a correspondent who had it before would, decrypts
 * with the card.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { waitForCardPresent } from '../../daemon/reader/pcsc-presence.js';
import { importPkcs12, type ImportedPkcs12 } from '../../server/admin/import-pkcs12.js';
import { startDaemonStack, type DaemonStack } from '../support/daemon-stack.js';
import { exportPkcs12, makeSelfSigned } from '../support/pkcs12.js';
import { cardSteps, OPENSC_ID, type CardSteps } from '../support/pkcs11-steps.js';

const PIN = '24681357';
const P12_PASSWORD = 'p12 import test';
/** OpenSC's object id of the key management slot 9D. */
const MESSAGE = 'Mail sent to the old key, still readable.\n';

describe('PKCS#12 import into 9D of a card in the reader: OpenSC reads it, the card decrypts with it', () => {
  let stack: DaemonStack;
  let dir: string;
  let cardId: string;
  let readerName: string;
  let certFile: string;
  let imported: ImportedPkcs12;

  let steps: CardSteps;
  /** The 9D certificate as OpenSC reads it from the card through pcscd, now. */
  const read9d = async (name: string): Promise<X509Certificate> =>
    new X509Certificate(fs.readFileSync(await steps.readCertificateDer(OPENSC_ID['9d'], name)));

  before(async () => {
    stack = await startDaemonStack({
      name: 'p12-import',
      cards: [{ label: 'alice card', pin: PIN, puk: '97531864' }],
      pcscd: { cardlink: { slots: 2, friendlyName: 'cardlink Import Reader' } },
      daemon: { deviceName: 'alice-laptop' },
    });
    dir = stack.dir;
    steps = cardSteps({ pcscdEnv: stack.pcscd.env, dir, pin: PIN });
    cardId = stack.cardIds[0]!;
    await stack.daemon.login('alice');
    const cards = await stack.daemon.waitForCards((cs) => cs.some((c) => c.state === 'inserted'));
    readerName = cards[0]!.readerName!;
    await waitForCardPresent(readerName);

    // The key and certificate the user had before the card (say, from an S/MIME provider).
    const pair = await makeSelfSigned(
      dir,
      'alice-smime',
      'rsa2048',
      '/CN=Alice Example/emailAddress=alice@example.com',
    );
    certFile = pair.certFile;
    const p12 = await exportPkcs12(dir, 'alice-smime', { keyFile: pair.keyFile, certFile }, P12_PASSWORD);

    const before = await read9d('before.der');
    const { storage, kek } = stack.cardServer.resources;
    imported = await importPkcs12({
      storage,
      kek,
      cardId,
      slot: 0x9d,
      pkcs12: fs.readFileSync(p12),
      password: P12_PASSWORD,
      actor: 'admin:test',
    });
    // The server pushes CARD_CHANGED and the daemon re-inserts the card; pkcs11-tool is run until
    // it sees the new certificate (a bounded wait, not a timed assertion).
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      await waitForCardPresent(readerName);
      if ((await read9d('poll.der')).fingerprint256 !== before.fingerprint256) break;
      await new Promise((r) => setTimeout(r, 200));
    }
  });

  after(async () => {
    await stack?.stop();
  });

  it('OpenSC reads the imported certificate from 9D, byte for byte, without reconnecting', async () => {
    const onCard = await read9d('9d.der');
    const fromFile = new X509Certificate(fs.readFileSync(certFile));
    assert.deepEqual(onCard.raw, fromFile.raw);
    assert.equal(imported.algorithm, 'RSA2048');
    assert.equal(BigInt(`0x${imported.serial}`), BigInt(`0x${onCard.serialNumber}`));
    const cards = await stack.daemon.cards();
    assert.equal(cards[0]!.state, 'inserted');
    assert.equal(cards[0]!.takenOverBy, undefined, 'the daemon kept the card');
  });

  it('a message encrypted to the imported certificate with openssl cms decrypts with the card', async () => {
    fs.writeFileSync(path.join(dir, 'message.txt'), MESSAGE);
    const envelope = path.join(dir, 'envelope.pem');
    await steps.cmsEncrypt(certFile, path.join(dir, 'message.txt'), envelope);
    assert.equal(await steps.cmsDecrypt(envelope, OPENSC_ID['9d'], certFile), MESSAGE);
  });
});
