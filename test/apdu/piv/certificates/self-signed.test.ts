import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair } from '../../../../apdu/piv/crypto/key-generation.js';
import { prepareSigner } from '../../../../apdu/piv/crypto/private-key-operations.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';
import {
  createSelfSignedCertificate,
  keyUsageForSlot,
  KEY_USAGE,
} from '../../../../apdu/piv/certificates/self-signed.js';
import type { KeyAlgorithm } from '../../../../apdu/piv/card-state.js';

const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;

async function certFor(algorithm: KeyAlgorithm, slot: number, commonName = 'cardlink test') {
  const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
  const signer = prepareSigner(privateKey);
  const inputs: Uint8Array[] = [];
  const der = await createSelfSignedCertificate({
    slot,
    publicKeySpki,
    commonName,
    sign: async (input) => {
      inputs.push(input);
      return signer.sign(input);
    },
    notBefore: new Date('2030-01-02T03:04:05.678Z'),
    validityDays: 30,
  });
  return { der, publicKeySpki, privateKey, inputs };
}

describe('self-signed certificates', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cardlink-cert-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const cases = [
    ['RSA2048', 0x9a, 'sha256WithRSAEncryption', /Digital Signature\s*$/m],
    ['RSA3072', 0x9d, 'sha256WithRSAEncryption', /Key Encipherment\s*$/m],
    ['ECCP256', 0x9c, 'ecdsa-with-SHA256', /Digital Signature, Non Repudiation\s*$/m],
    ['ECCP384', 0x9d, 'ecdsa-with-SHA384', /Key Agreement\s*$/m],
    ['ECCP256', 0x9e, 'ecdsa-with-SHA256', /Digital Signature\s*$/m],
  ] as const;
  for (const [algorithm, slot, sigAlg, usage] of cases) {
    it(`${algorithm} in slot ${slot.toString(16)} verifies with node and parses with openssl`, async () => {
      const { der, publicKeySpki } = await certFor(algorithm, slot);
      const cert = new X509Certificate(der);
      const pub = createPublicKey({ key: Buffer.from(publicKeySpki), format: 'der', type: 'spki' });
      assert.ok(cert.verify(pub));
      assert.ok(cert.publicKey.equals(pub));
      assert.equal(cert.subject, 'CN=cardlink test');
      assert.equal(cert.issuer, 'CN=cardlink test');
      assert.equal(cert.ca, false);
      assert.equal(new Date(cert.validFrom).toISOString(), '2030-01-02T03:04:05.000Z');
      assert.equal(new Date(cert.validTo).toISOString(), '2030-02-01T03:04:05.000Z');
      assert.equal(cert.serialNumber.length, 32); // 16 bytes
      assert.ok(parseInt(cert.serialNumber[0]!, 16) < 8, 'serial is positive');
      // SPKI is embedded unchanged
      assert.ok(Buffer.from(der).includes(Buffer.from(publicKeySpki)));

      const file = join(dir, `${algorithm}-${slot}.der`);
      writeFileSync(file, der);
      const text = execFileSync('openssl', ['x509', '-inform', 'DER', '-in', file, '-noout', '-text'], {
        encoding: 'utf8',
      });
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, new RegExp(`Signature Algorithm: ${sigAlg}`));
      assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
      assert.match(text, /X509v3 Key Usage: critical/);
      assert.match(text, usage);
      assert.match(text, /X509v3 Subject Key Identifier/);
      const pem = join(dir, `${algorithm}-${slot}.pem`);
      execFileSync('openssl', ['x509', '-inform', 'DER', '-in', file, '-out', pem]);
      // checks the self-signature with OpenSSL too
      const verified = execFileSync(
        'openssl',
        [
          'verify',
          '-partial_chain',
          '-check_ss_sig',
          '-attime',
          String(Date.parse('2030-01-10') / 1000),
          '-CAfile',
          pem,
          pem,
        ],
        { encoding: 'utf8' },
      );
      assert.match(verified, /: OK/);
    });
  }

  it('hands the signer a PKCS#1 v1.5 block for RSA and a hash for EC', async () => {
    const rsa = await certFor('RSA2048', 0x9a);
    assert.equal(rsa.inputs[0]!.length, 256);
    assert.deepEqual([...rsa.inputs[0]!.subarray(0, 3)], [0x00, 0x01, 0xff]);
    const ec = await certFor('ECCP384', 0x9a);
    assert.equal(ec.inputs[0]!.length, 48);
  });

  it('refuses a signature that does not verify', async () => {
    const { publicKeySpki } = await generateKeyPair('ECCP256');
    const other = prepareSigner((await generateKeyPair('ECCP256')).privateKey);
    await assert.rejects(
      createSelfSignedCertificate({
        slot: 0x9a,
        publicKeySpki,
        commonName: 'x',
        sign: async (i) => other.sign(i),
      }),
      reason('KEY_TYPE_MISMATCH'),
    );
  });

  it('validates its options', async () => {
    const { publicKeySpki } = await generateKeyPair('ECCP256');
    const sign = async () => new Uint8Array(0);
    await assert.rejects(
      createSelfSignedCertificate({ slot: 0x9a, publicKeySpki, commonName: '', sign }),
      reason('INPUT_LENGTH'),
    );
    await assert.rejects(
      createSelfSignedCertificate({ slot: 0x9a, publicKeySpki, commonName: 'x'.repeat(65), sign }),
      reason('INPUT_LENGTH'),
    );
    await assert.rejects(
      createSelfSignedCertificate({ slot: 0x9a, publicKeySpki, commonName: 'x', sign, validityDays: 0 }),
      reason('INPUT_RANGE'),
    );
    await assert.rejects(
      createSelfSignedCertificate({
        slot: 0x9a,
        publicKeySpki: Uint8Array.of(0x30, 0),
        commonName: 'x',
        sign,
      }),
      reason('KEY_INVALID'),
    );
  });

  it('uses GeneralizedTime from 2050 on', async () => {
    const { privateKey, publicKeySpki } = await generateKeyPair('ECCP256');
    const signer = prepareSigner(privateKey);
    const der = await createSelfSignedCertificate({
      slot: 0x9e,
      publicKeySpki,
      commonName: 'late',
      sign: async (i) => signer.sign(i),
      notBefore: new Date('2049-12-01T00:00:00Z'),
      validityDays: 60,
    });
    const cert = new X509Certificate(der);
    assert.equal(new Date(cert.validTo).toISOString(), '2050-01-30T00:00:00.000Z');
    assert.ok(Buffer.from(der).includes(Buffer.from('20500130000000Z')));
    assert.ok(Buffer.from(der).includes(Buffer.from('491201000000Z')));
  });

  it('chooses key usage by slot and key type', () => {
    assert.deepEqual(keyUsageForSlot(0x9a, 'RSA2048'), [KEY_USAGE.digitalSignature]);
    assert.deepEqual(keyUsageForSlot(0x9c, 'ECCP256'), [
      KEY_USAGE.digitalSignature,
      KEY_USAGE.nonRepudiation,
    ]);
    assert.deepEqual(keyUsageForSlot(0x9d, 'RSA2048'), [KEY_USAGE.keyEncipherment]);
    assert.deepEqual(keyUsageForSlot(0x9d, 'ECCP384'), [KEY_USAGE.keyAgreement]);
    assert.deepEqual(keyUsageForSlot(0x85, 'ECCP256'), [KEY_USAGE.keyAgreement]);
    assert.deepEqual(keyUsageForSlot(0x9e, 'ECCP256'), [KEY_USAGE.digitalSignature]);
  });
});
