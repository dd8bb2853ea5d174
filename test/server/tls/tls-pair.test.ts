/**
 * The server's TLS pair: a generated pair is ECDSA P-256 as OpenSSL reads it, serves a real TLS
 * handshake a client verifies by name and address, and its key signs snapshots the daemon checks
 * with the certificate's public key. A pair on disk is loaded as it is; a broken one is refused.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TLSSocket } from 'node:tls';
import { signSnapshot, verifySnapshotSignature } from '../../../protocol/wire/snapshot-signature.js';
import {
  loadOrCreateTlsPair,
  SELF_SIGNED_VALIDITY_DAYS,
  type TlsPair,
} from '../../../server/tls/tls-pair.js';

const openssl = (...args: string[]): string => execFileSync('openssl', args, { encoding: 'utf8' });

describe('server TLS pair', () => {
  let dir: string;
  let certFile: string;
  let keyFile: string;
  let pair: TlsPair;
  before(async () => {
    dir = fs.mkdtempSync(path.join(tmpdir(), 'cardlink-tls-pair-'));
    certFile = path.join(dir, 'tls', 'server.crt');
    keyFile = path.join(dir, 'tls', 'server.key');
    pair = await loadOrCreateTlsPair(certFile, keyFile, ['card.example.test', '::1']);
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('generates an ECDSA P-256 certificate that openssl parses, with the TLS server extensions', () => {
    assert.equal(pair.generated, true);
    const text = openssl('x509', '-in', certFile, '-noout', '-text');
    assert.match(text, /Version: 3 \(0x2\)/);
    assert.match(text, /Public Key Algorithm: id-ecPublicKey/);
    assert.match(text, /ASN1 OID: prime256v1/);
    assert.match(text, /Signature Algorithm: ecdsa-with-SHA256/);
    assert.match(text, /Subject: CN = card\.example\.test, O = cardlink server \(self-signed\)/);
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:FALSE/);
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature\s*$/m);
    assert.match(text, /X509v3 Extended Key Usage:\s*\n\s*TLS Web Server Authentication/);
    const san = /X509v3 Subject Alternative Name:\s*\n\s*(.+)/.exec(text)?.[1] ?? '';
    assert.deepEqual(san.split(', ').sort(), [
      'DNS:card.example.test',
      'DNS:localhost',
      'IP Address:0:0:0:0:0:0:0:1',
      'IP Address:127.0.0.1',
    ]);
    assert.match(text, /X509v3 Subject Key Identifier/);

    const cert = new X509Certificate(pair.cert);
    const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
    assert.ok(Math.abs(days - SELF_SIGNED_VALIDITY_DAYS) < 0.01, `validity ${days} days`);
    assert.equal(cert.serialNumber.length, 32); // 16 bytes
    assert.ok(parseInt(cert.serialNumber[0]!, 16) < 8, 'serial is positive');
    assert.equal(pair.fingerprint, cert.fingerprint256);
    // the self-signature, checked by OpenSSL
    assert.match(openssl('verify', '-partial_chain', '-check_ss_sig', '-CAfile', certFile, certFile), /: OK/);
  });

  it('writes a private PKCS#8 P-256 key that belongs to the certificate', () => {
    assert.equal(fs.statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(fs.statSync(path.dirname(keyFile)).mode & 0o077, 0);
    assert.match(pair.key, /^-----BEGIN PRIVATE KEY-----\n/);
    const key = createPrivateKey(fs.readFileSync(keyFile, 'utf8'));
    assert.equal(key.asymmetricKeyType, 'ec');
    assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
    assert.equal(
      openssl('pkey', '-in', keyFile, '-pubout'),
      openssl('x509', '-in', certFile, '-noout', '-pubkey'),
    );
  });

  it('serves TLS to a client that trusts the certificate; snapshots signed with the key verify with the peer certificate', async () => {
    const server = https.createServer({ cert: pair.cert, key: pair.key }, (_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const binding = { sessionId: 'session-1', cardId: 'card-1', snapshot: Uint8Array.of(1, 2, 3) };
      const signature = signSnapshot(createPrivateKey(pair.key), binding);
      // The socket always goes to 127.0.0.1; a servername makes the client check that name instead.
      const connect = (servername?: string) =>
        new Promise<X509Certificate>((resolve, reject) => {
          const options = { host: '127.0.0.1', port, path: '/', ca: pair.cert, agent: false as const };
          const req = https.get(servername ? { ...options, servername } : options, (res) => {
            const raw = (res.socket as TLSSocket).getPeerCertificate().raw;
            res.resume();
            res.on('end', () => resolve(new X509Certificate(raw)));
          });
          req.on('error', reject);
        });
      await assert.rejects(connect('other.example.test'), { code: 'ERR_TLS_CERT_ALTNAME_INVALID' });
      for (const servername of [undefined, 'localhost', 'card.example.test']) {
        const peer = await connect(servername);
        assert.equal(peer.fingerprint256, pair.fingerprint);
        assert.ok(
          verifySnapshotSignature(peer.publicKey, binding, signature),
          `snapshot via ${servername ?? '127.0.0.1'}`,
        );
        assert.equal(
          verifySnapshotSignature(peer.publicKey, { ...binding, cardId: 'card-2' }, signature),
          false,
        );
      }
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('loads the pair on disk unchanged on the next start', async () => {
    const before = fs.readFileSync(certFile, 'utf8');
    const again = await loadOrCreateTlsPair(certFile, keyFile, ['another.example.test']);
    assert.equal(again.generated, false);
    assert.equal(again.fingerprint, pair.fingerprint);
    assert.equal(again.cert, before);
    assert.equal(again.key, pair.key);
  });

  it('refuses a half pair, a readable key and a certificate that is not PEM, naming the setting', async () => {
    const other = fs.mkdtempSync(path.join(dir, 'bad-'));
    const cert = path.join(other, 'server.crt');
    const key = path.join(other, 'server.key');
    fs.writeFileSync(key, pair.key, { mode: 0o600 });
    await assert.rejects(
      loadOrCreateTlsPair(cert, key, []),
      /"tls\.certFile" is missing while its pair exists/,
    );
    assert.equal(fs.existsSync(cert), false, 'nothing generated over a half pair');
    fs.writeFileSync(cert, 'not a certificate');
    await assert.rejects(loadOrCreateTlsPair(cert, key, []), /"tls\.certFile" is not a PEM certificate/);
    fs.chmodSync(key, 0o640);
    await assert.rejects(
      loadOrCreateTlsPair(cert, key, []),
      /"tls\.keyFile" must not be readable by group or others/,
    );
    assert.equal(fs.readFileSync(cert, 'utf8'), 'not a certificate', 'a refused pair is left as it is');
  });
});
