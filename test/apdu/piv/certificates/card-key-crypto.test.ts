/**
 * The X.509 toolkit signing with keys that stay in the key store (card-key-crypto.ts): what the
 * enrollment work needs (a certificate request, a CA certificate, a CA-signed certificate with
 * extensions and a CRL) made with RSA and EC card keys and checked by OpenSSL, and the refusals.
 */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createPublicKey } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { KeyAlgorithm } from '../../../../apdu/piv/card-state.js';
import { cardSigningKey, emsaPkcs1v15 } from '../../../../apdu/piv/certificates/card-key-crypto.js';
import {
  AuthorityKeyIdentifierExtension,
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  PemConverter,
  Pkcs10CertificateRequestGenerator,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
  X509CrlGenerator,
  X509CrlReason,
} from '../../../../apdu/piv/certificates/x509-toolkit.js';
import { CardStateError } from '../../../../apdu/piv/crypto/errors.js';
import { generateKeyPair } from '../../../../apdu/piv/crypto/key-generation.js';
import { prepareSigner } from '../../../../apdu/piv/crypto/private-key-operations.js';

const reason = (r: string) => (e: unknown) => e instanceof CardStateError && e.reason === r;

/** A key as the key store holds it: the signing function sees only the block or hash. */
async function cardKey(algorithm: KeyAlgorithm) {
  const { privateKey, publicKeySpki } = await generateKeyPair(algorithm);
  const signer = prepareSigner(privateKey);
  const inputs: Uint8Array[] = [];
  const publicKey = createPublicKey({ key: Buffer.from(publicKeySpki), format: 'der', type: 'spki' });
  const key = cardSigningKey(publicKey, async (input) => {
    inputs.push(input);
    return signer.sign(input);
  });
  return { key, inputs, publicKeySpki };
}

function openssl(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('openssl', args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

describe('card key crypto provider', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'cardlink-card-key-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const chains = [
    ['ECCP384', 'ECCP256', 'ecdsa-with-SHA384', 'ecdsa-with-SHA256'],
    ['RSA2048', 'ECCP384', 'sha256WithRSAEncryption', 'ecdsa-with-SHA384'],
    ['ECCP256', 'RSA3072', 'ecdsa-with-SHA256', 'sha256WithRSAEncryption'],
  ] as const;
  for (const [caAlgorithm, leafAlgorithm, caSigAlg, csrSigAlg] of chains) {
    it(`${caAlgorithm} CA signs a ${leafAlgorithm} request and revokes it in a CRL; OpenSSL checks all three`, async () => {
      const ca = await cardKey(caAlgorithm);
      const leaf = await cardKey(leafAlgorithm);
      const file = (name: string, pem: string) => {
        const p = join(dir, `${caAlgorithm}-${leafAlgorithm}-${name}.pem`);
        writeFileSync(p, pem);
        return p;
      };

      const csr = await Pkcs10CertificateRequestGenerator.create(
        { name: 'CN=alice', keys: leaf.key.keys, signingAlgorithm: leaf.key.signingAlgorithm },
        leaf.key.crypto,
      );
      const csrFile = file('csr', csr.toString('pem'));
      const req = openssl(['req', '-in', csrFile, '-verify', '-noout', '-text']);
      assert.equal(req.status, 0, req.out);
      assert.match(req.out, /verify OK/i);
      assert.match(req.out, new RegExp(`Signature Algorithm: ${csrSigAlg}`));
      assert.ok(await csr.verify(), 'the toolkit verifies the request too');

      const caCert = await X509CertificateGenerator.createSelfSigned(
        {
          name: 'CN=cardlink test CA',
          keys: ca.key.keys,
          signingAlgorithm: ca.key.signingAlgorithm,
          extensions: [
            new BasicConstraintsExtension(true, 0, true),
            new KeyUsagesExtension(KeyUsageFlags.keyCertSign | KeyUsageFlags.cRLSign, true),
            await SubjectKeyIdentifierExtension.create(ca.publicKeySpki, false, ca.key.crypto),
          ],
        },
        ca.key.crypto,
      );
      const issued = await X509CertificateGenerator.create(
        {
          subject: csr.subjectName,
          issuer: caCert.subjectName,
          publicKey: csr.publicKey,
          signingKey: ca.key.keys.privateKey,
          signingAlgorithm: ca.key.signingAlgorithm,
          extensions: [
            new BasicConstraintsExtension(false, undefined, true),
            new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
            new ExtendedKeyUsageExtension([ExtendedKeyUsage.clientAuth]),
            await AuthorityKeyIdentifierExtension.create(caCert, false, ca.key.crypto),
          ],
        },
        ca.key.crypto,
      );
      const caFile = file('ca', caCert.toString('pem'));
      const leafFile = file('leaf', issued.toString('pem'));
      const text = openssl(['x509', '-in', leafFile, '-noout', '-text']);
      assert.equal(text.status, 0, text.out);
      assert.match(text.out, new RegExp(`Signature Algorithm: ${caSigAlg}`));
      assert.match(text.out, /Issuer: CN = cardlink test CA/);
      assert.match(text.out, /TLS Web Client Authentication/);
      assert.match(text.out, /X509v3 Authority Key Identifier/);
      const verified = openssl(['verify', '-CAfile', caFile, leafFile]);
      assert.equal(verified.status, 0, verified.out);

      const crl = await X509CrlGenerator.create(
        {
          issuer: caCert.subjectName,
          thisUpdate: new Date(Date.now() - 60_000),
          nextUpdate: new Date(Date.now() + 86_400_000),
          entries: [{ serialNumber: issued.serialNumber, reason: X509CrlReason.keyCompromise }],
          signingKey: ca.key.keys.privateKey,
          signingAlgorithm: ca.key.signingAlgorithm,
        },
        ca.key.crypto,
      );
      // RFC 7468 section 6 labels a CRL "X509 CRL", which OpenSSL requires; the toolkit's own PEM says "CRL".
      const crlFile = file('crl', PemConverter.encode(crl.rawData, 'X509 CRL'));
      const crlText = openssl(['crl', '-in', crlFile, '-CAfile', caFile, '-noout', '-text']);
      assert.equal(crlText.status, 0, crlText.out);
      assert.match(crlText.out, /verify OK/i);
      assert.match(crlText.out, /Key Compromise/);
      const revoked = openssl(['verify', '-crl_check', '-CAfile', caFile, '-CRLfile', crlFile, leafFile]);
      assert.notEqual(revoked.status, 0);
      assert.match(revoked.out, /certificate revoked/);

      // the key store only ever saw a padded block (RSA) or a hash (EC), never the data
      for (const input of ca.inputs) {
        if (caAlgorithm.startsWith('RSA')) assert.deepEqual([...input.subarray(0, 2)], [0x00, 0x01]);
        else assert.equal(input.length, caAlgorithm === 'ECCP384' ? 48 : 32);
      }
      assert.equal(ca.inputs.length, 3, 'CA certificate, issued certificate, CRL');
    });
  }

  it('signs with its own key and algorithm only', async () => {
    const { key } = await cardKey('ECCP256');
    const other = await cardKey('ECCP256');
    const data = new Uint8Array(8);
    await assert.rejects(
      key.crypto.subtle.sign(key.signingAlgorithm, other.key.keys.privateKey, data),
      reason('KEY_INVALID'),
    );
    await assert.rejects(
      key.crypto.subtle.sign({ name: 'ECDSA', hash: 'SHA-384' } as never, key.keys.privateKey, data),
      reason('UNSUPPORTED_ALGORITHM'),
    );
    await assert.rejects(key.crypto.subtle.exportKey('pkcs8', key.keys.privateKey), reason('KEY_INVALID'));
  });

  it('reports a key store answer that is not an ECDSA signature of the curve', async () => {
    const { publicKeySpki } = await generateKeyPair('ECCP256');
    const publicKey = createPublicKey({ key: Buffer.from(publicKeySpki), format: 'der', type: 'spki' });
    for (const answer of [Uint8Array.of(1, 2, 3), Uint8Array.of(0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01)]) {
      const key = cardSigningKey(publicKey, async () => answer);
      await assert.rejects(
        key.crypto.subtle.sign(key.signingAlgorithm, key.keys.privateKey, new Uint8Array(8)),
        reason('KEY_TYPE_MISMATCH'),
      );
    }
  });

  it('wants a public key', async () => {
    const { privateKey } = await generateKeyPair('ECCP256');
    assert.throws(() => cardSigningKey(privateKey, async () => new Uint8Array(0)), reason('KEY_INVALID'));
  });

  it('pads EMSA-PKCS1-v1_5 blocks', () => {
    const em = emsaPkcs1v15(Uint8Array.of(0xaa, 0xbb), 16);
    assert.equal(Buffer.from(em).toString('hex'), '0001ffffffffffffffffffffff00aabb');
    assert.throws(() => emsaPkcs1v15(new Uint8Array(6), 16), reason('INPUT_LENGTH'));
  });
});
