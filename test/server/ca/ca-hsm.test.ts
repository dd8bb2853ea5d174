/**
 * The issuing CA's key inside the PKCS#11 token (`cardlink admin ca init --key-in-hsm`), with a real
 * SoftHSM2 token: the key pair is generated there, sensitive and never extractable (read back
 * with our own PKCS#11 session), the database holds no private key of the CA, card certificates
 * and CRLs signed by C_Sign verify with OpenSSL, KEK rotation leaves the CA alone, and a provider
 * opened again (and, through the CLI, a new process each time) finds the key again. Without a
 * PKCS#11 KEK the option is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPublicKey, verify } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pkcs11js from 'pkcs11js';
import {
  certificateObjectTag,
  decodeCertificateObject,
  PemConverter,
} from '../../../apdu/piv/certificates/index.js';
import { enrollCard } from '../../../server/admin/enroll.js';
import { createCard, loadDefaultProfile, rotateKek } from '../../../server/admin/index.js';
import { issueCrl } from '../../../server/ca/crl.js';
import { initEmbeddedCa, openIssuingCa, showCa } from '../../../server/ca/issuing-ca.js';
import type { KekProvider } from '../../../server/keys/kek-provider.js';
import { openPkcs11Provider } from '../../../server/keys/pkcs11-provider.js';
import {
  countWrappedKeysByKekVersion,
  findIssuingCa,
  getCardObject,
  type CaTokenKey,
  type Storage,
} from '../../../server/storage/index.js';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../../support/cli-run.js';
import { createSoftHsmToken, type SoftHsmToken } from '../../support/softhsm.js';
import { BACKENDS, createBackend, tempKeyFileProvider, type Backend } from '../storage/backends.js';

const CLAIMS = { email: 'alice@example.com', upn: 'alice@corp.example', name: 'Alice Example' };
const CRL_URL = 'http://127.0.0.1:8080/ca/crl';

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const show = (r: CliRun) => `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

/**
 * Our own look into the token, beside the provider's: a session of this process (already logged
 * in by the provider: PKCS#11 login is per application) and the CA's private key object.
 */
function tokenView(token: SoftHsmToken) {
  const lib = new pkcs11js.PKCS11();
  lib.load(token.modulePath);
  try {
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (error) {
    // The provider initialized the module in this process already.
    if ((error as { code?: number }).code !== pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) throw error;
  }
  const slot = lib
    .C_GetSlotList(true)
    .find((s) => lib.C_GetTokenInfo(s).label.trimEnd() === token.tokenLabel);
  assert.ok(slot, 'the test token is in a slot');
  const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
  const objects = (template: pkcs11js.Template): Buffer[] => {
    lib.C_FindObjectsInit(session, template);
    try {
      return lib.C_FindObjects(session, 16);
    } finally {
      lib.C_FindObjectsFinal(session);
    }
  };
  return {
    lib,
    session,
    privateKeys: (label: string, id?: Buffer) =>
      objects([
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
        { type: pkcs11js.CKA_LABEL, value: label },
        ...(id ? [{ type: pkcs11js.CKA_ID, value: id }] : []),
      ]),
    close: () => lib.C_CloseSession(session),
  };
}

for (const kind of BACKENDS) {
  // P-256 on SQLite, P-384 on PostgreSQL (RSA through the CLI below): every curve the token signs.
  const algorithm = kind === 'sqlite' ? 'ECCP256' : 'ECCP384';

  describe(`the issuing CA's key inside a SoftHSM2 token (${algorithm}) on ${kind}`, () => {
    let backend: Backend;
    let storage: Storage;
    let token: SoftHsmToken;
    let kek: KekProvider;
    let dir: string;
    let caFile: string;
    let tokenKey: CaTokenKey;
    const openProvider = () =>
      openPkcs11Provider({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: token.pin });
    const file = async (name: string, text: string) => {
      const path = join(dir, name);
      await writeFile(path, text);
      return path;
    };
    const newCard = async (subject: string) =>
      createCard({
        storage,
        kek,
        user: { issuer: 'https://idp.example', subject, tenant: 'acme' },
        profile: await loadDefaultProfile(),
      });
    const verifyCrl = async (name: string, der: Uint8Array) => {
      const crlFile = await file(name, PemConverter.encode(Uint8Array.from(der), 'X509 CRL'));
      const r = openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-noout', '-verify', '-text']);
      assert.equal(r.status, 0, r.out);
      assert.match(r.out, /verify OK/);
      return r.out;
    };

    before(async () => {
      backend = await createBackend(kind);
      storage = await backend.open();
      token = await createSoftHsmToken();
      kek = await openProvider();
      dir = await mkdtemp(join(tmpdir(), 'cardlink-ca-hsm-'));
    });
    after(async () => {
      await kek.close();
      await backend.cleanup();
      await rm(dir, { recursive: true, force: true });
    });

    it('refuses to keep the key in an HSM when the KEK is a key file', async () => {
      const keys = await tempKeyFileProvider();
      try {
        await assert.rejects(
          initEmbeddedCa({
            storage,
            kek: keys.provider,
            crlUrl: CRL_URL,
            keyInHsm: true,
            actor: 'admin:test',
          }),
          (error: Error & { code?: string }) =>
            error.code === 'ERR_CA_INVALID' && /PKCS#11 token/.test(error.message),
        );
      } finally {
        await keys.cleanup();
      }
      assert.equal(await findIssuingCa(storage), undefined, 'no CA was stored');
    });

    it('generates the key pair inside the token, sensitive and not extractable; the database holds no CA key', async () => {
      const info = await initEmbeddedCa({
        storage,
        kek,
        crlUrl: CRL_URL,
        algorithm,
        keyInHsm: true,
        actor: 'admin:test',
      });
      assert.equal(info.keyStore, 'pkcs11');
      assert.equal(info.keyLabel, 'cardlink-ca-default');
      assert.equal(info.algorithm, algorithm);
      caFile = await file('ca.pem', info.certificatePem);
      // The self-signed certificate's signature came from C_Sign over its TBS bytes.
      const self = openssl(['verify', '-CAfile', caFile, caFile]);
      assert.equal(self.status, 0, self.out);

      const record = await findIssuingCa(storage);
      assert.ok(record && 'token' in record.key, 'the CA row names a token key');
      tokenKey = record.key.token;
      assert.equal(tokenKey.label, 'cardlink-ca-default');
      assert.equal(tokenKey.id.length, 16);
      const row = await storage.db.selectFrom('issuing_cas').selectAll().executeTakeFirstOrThrow();
      assert.equal(row.sealed_private_key.length, 0, 'no sealed private key');
      assert.equal(row.wrapped_data_key.length, 0, 'no wrapped data key');
      assert.equal(row.kek_version, 0);
      assert.equal((await countWrappedKeysByKekVersion(storage)).get(0), undefined);
      const audit = await storage.db
        .selectFrom('audit_log')
        .select('details')
        .where('event_type', '=', 'ca.created')
        .executeTakeFirstOrThrow();
      assert.deepEqual(
        (({ keyStore, keyLabel }) => ({ keyStore, keyLabel }))(
          JSON.parse(audit.details) as Record<string, unknown>,
        ),
        { keyStore: 'pkcs11', keyLabel: 'cardlink-ca-default' },
      );

      const view = tokenView(token);
      try {
        const [key, ...others] = view.privateKeys(tokenKey.label, tokenKey.id);
        assert.ok(key, 'the private key is a token object');
        assert.equal(others.length, 0);
        const flags = view.lib.C_GetAttributeValue(view.session, key, [
          { type: pkcs11js.CKA_EXTRACTABLE },
          { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
          { type: pkcs11js.CKA_SENSITIVE },
          { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
          { type: pkcs11js.CKA_SIGN },
          { type: pkcs11js.CKA_TOKEN },
        ]);
        const on = (i: number) => (flags[i]!.value as Buffer)[0] === 1;
        assert.deepEqual(
          [0, 1, 2, 3, 4, 5].map(on),
          [false, true, true, true, true, true],
          'not extractable (never was), sensitive (always was), signs, on the token',
        );
        assert.throws(
          () => view.lib.C_GetAttributeValue(view.session, key, [{ type: pkcs11js.CKA_VALUE }]),
          /CKR_ATTRIBUTE_SENSITIVE/,
          'the token refuses to reveal the private value',
        );
      } finally {
        view.close();
      }
    });

    it('refuses a second CA without leaving a second key pair on the token', async () => {
      await assert.rejects(
        initEmbeddedCa({ storage, kek, crlUrl: CRL_URL, algorithm, keyInHsm: true, actor: 'admin:test' }),
        { code: 'ERR_CA_EXISTS' },
      );
      const view = tokenView(token);
      try {
        assert.equal(view.privateKeys(tokenKey.label).length, 1);
      } finally {
        view.close();
      }
    });

    it('signs card certificates and CRLs in the token that OpenSSL verifies against the CA', async () => {
      const card = await newCard('alice');
      const first = await enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS });
      assert.deepEqual(
        first.slots.map((s) => s.slot),
        [0x9a, 0x9c, 0x9d, 0x9e],
      );
      for (const s of first.slots) {
        const value = await getCardObject(storage, card.cardId, certificateObjectTag(s.slot)!);
        const pem = await file(
          `alice-${s.slot.toString(16)}.pem`,
          PemConverter.encode(Uint8Array.from(decodeCertificateObject(value!)), 'CERTIFICATE'),
        );
        const verified = openssl(['verify', '-CAfile', caFile, pem]);
        assert.equal(verified.status, 0, verified.out);
      }
      // Enrolling again supersedes the first certificates: they are revoked and a CRL is signed.
      const second = await enrollCard({ storage, kek, cardId: card.cardId, claims: CLAIMS });
      assert.equal(second.revoked.length, 4);
      const crl = await issueCrl({ storage, kek, actor: 'admin:test' });
      assert.equal(crl.entries, 4);
      const text = await verifyCrl('after-renewal.crl', crl.der);
      for (const s of first.slots) assert.match(text, new RegExp(s.serial.toUpperCase()));
    });

    it('signs concurrently through the session pool, every signature valid', async () => {
      const ca = await openIssuingCa(storage, kek);
      const publicKey = createPublicKey({
        key: Buffer.from(ca.certificate.publicKey.rawData),
        format: 'der',
        type: 'spki',
      });
      // More signatures at once than the provider has sessions (4): some wait for a session.
      const messages = Array.from({ length: 12 }, (_, i) => Buffer.from(`message ${i}`));
      const signatures = await Promise.all(
        messages.map((m) =>
          ca.signer.crypto.subtle.sign(ca.signer.signingAlgorithm, ca.signer.keys.privateKey, m),
        ),
      );
      const hash = algorithm === 'ECCP384' ? 'sha384' : 'sha256';
      messages.forEach((m, i) =>
        assert.ok(
          verify(hash, m, { key: publicKey, dsaEncoding: 'ieee-p1363' }, Buffer.from(signatures[i]!)),
          `signature ${i}`,
        ),
      );
    });

    it('leaves the token CA alone through a KEK rotation', async () => {
      const rotation = await rotateKek({ storage, kek, retire: true });
      assert.ok(rotation.retired.length > 0, 'the old KEK version was retired');
      const row = await storage.db.selectFrom('issuing_cas').select('kek_version').executeTakeFirstOrThrow();
      assert.equal(row.kek_version, 0);
      await verifyCrl('after-rotation.crl', (await issueCrl({ storage, kek, actor: 'admin:test' })).der);
    });

    it('finds the key again with a provider opened anew, and names the token when the KEK is a key file', async () => {
      await kek.close();
      kek = await openProvider();
      const ca = await openIssuingCa(storage, kek);
      await verifyCrl('reopened.crl', (await issueCrl({ storage, kek, ca, actor: 'admin:test' })).der);
      assert.equal((await showCa(storage)).keyStore, 'pkcs11');
      const keys = await tempKeyFileProvider();
      try {
        await assert.rejects(
          openIssuingCa(storage, keys.provider),
          (error: Error & { code?: string }) =>
            error.code === 'ERR_CA_INVALID' && /in a PKCS#11 token/.test(error.message),
        );
      } finally {
        await keys.cleanup();
      }
    });
  });
}

describe('cardlink admin ca init --key-in-hsm (RSA-2048), each command a new process', () => {
  let dir: string;
  let token: SoftHsmToken;
  let hsmConfig: string;
  const env = () => ({ ...envWithoutCardlinkSettings(), XDG_STATE_HOME: join(dir, 'state') });
  const admin = (config: string, args: string[]) =>
    runCardlink(['admin', ...args, '--config', config, '--data-dir', join(dir, 'data')], env());
  const ok = async <T>(args: string[]): Promise<T> => {
    const r = await admin(hsmConfig, [...args, '--json']);
    assert.equal(r.status, 0, show(r));
    return JSON.parse(r.stdout) as T;
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-ca-hsm-cli-'));
    // Sets SOFTHSM2_CONF in this process's environment, which the commands inherit.
    token = await createSoftHsmToken();
    const pinFile = join(dir, 'hsm.pin');
    await writeFile(pinFile, token.pin, { mode: 0o600 });
    hsmConfig = join(dir, 'hsm.json');
    await writeFile(
      hsmConfig,
      JSON.stringify({
        kek: { provider: 'pkcs11', module: token.modulePath, tokenLabel: token.tokenLabel, pinFile },
      }),
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('refuses without a PKCS#11 KEK (exit 78), then keeps the CA key in the token across processes', async () => {
    const fileConfig = join(dir, 'keyfile.json');
    await writeFile(fileConfig, JSON.stringify({ kek: { provider: 'file', file: join(dir, 'kek.json') } }));
    const refused = await runCardlink(
      ['admin', 'ca', 'init', '--key-in-hsm', '--config', fileConfig, '--data-dir', join(dir, 'refused')],
      env(),
    );
    assert.equal(refused.status, 78, show(refused));
    assert.match(refused.stderr, /ERR_CA_INVALID/);
    assert.match(refused.stderr, /PKCS#11 token/);

    const info = await ok<{ keyStore: string; algorithm: string; certificatePem: string }>([
      'ca',
      'init',
      '--key-in-hsm',
      '--algorithm',
      'RSA2048',
    ]);
    assert.deepEqual([info.keyStore, info.algorithm], ['pkcs11', 'RSA2048']);
    const caFile = join(dir, 'ca.pem');
    await writeFile(caFile, info.certificatePem);
    const shown = await admin(hsmConfig, ['ca', 'show']);
    assert.equal(shown.status, 0, show(shown));
    assert.match(shown.stdout, /RSA2048, in the PKCS#11 token \(label cardlink-ca-default\)/);

    const enrolled = await ok<{ cardId: string; slots: { slot: string }[] }>([
      'enroll',
      '--issuer',
      'https://idp.example',
      '--subject',
      'bob',
      '--tenant',
      'acme',
      '--claim',
      'email=bob@example.com',
      '--claim',
      'upn=bob@corp.example',
    ]);
    assert.equal(enrolled.slots.length, 4);
    const { openStorage } = await import('../../../server/storage/index.js');
    const storage = await openStorage(`sqlite:${join(dir, 'data', 'cardlink.db')}`);
    try {
      for (const slot of [0x9a, 0x9c, 0x9d, 0x9e]) {
        const value = await getCardObject(storage, enrolled.cardId, certificateObjectTag(slot)!);
        const pem = join(dir, `bob-${slot.toString(16)}.pem`);
        await writeFile(
          pem,
          PemConverter.encode(Uint8Array.from(decodeCertificateObject(value!)), 'CERTIFICATE'),
        );
        const verified = openssl(['verify', '-CAfile', caFile, pem]);
        assert.equal(verified.status, 0, verified.out);
      }
    } finally {
      await storage.close();
    }

    const crlFile = join(dir, 'ca.crl');
    const crl = await admin(hsmConfig, ['ca', 'crl', '--out', crlFile]);
    assert.equal(crl.status, 0, show(crl));
    const checked = openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-noout', '-verify']);
    assert.equal(checked.status, 0, checked.out);
    assert.match(checked.out, /verify OK/);
  });
});
