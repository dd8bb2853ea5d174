/**
 * The server's TLS certificate and key. An administrator gives their own pair; for local use a
 * self-signed pair is generated on first start (ECDSA P-256 with SHA-256, 2 years, SAN = the listen
 * host, localhost and 127.0.0.1) and its SHA-256 fingerprint printed, so a client can pin it. The
 * key also signs card snapshots (protocol/wire/snapshot-signature.ts), which takes RSA or EC keys.
 */
import { KeyObject, webcrypto, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import {
  BasicConstraintsExtension,
  ExtendedKeyUsage,
  ExtendedKeyUsageExtension,
  KeyUsageFlags,
  KeyUsagesExtension,
  Name,
  randomSerialNumber,
  SubjectAlternativeNameExtension,
  SubjectKeyIdentifierExtension,
  X509CertificateGenerator,
} from '../../apdu/piv/certificates/index.js';
import { ConfigError } from '../config/server-config.js';

/** Validity of a generated certificate. */
export const SELF_SIGNED_VALIDITY_DAYS = 730;
/** Start of validity this far in the past, so a client whose clock is slightly behind accepts it. */
const NOT_BEFORE_SLACK_MS = 60_000;
/** WebCrypto parameters of the generated key and its signatures. */
const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

export interface TlsPair {
  readonly cert: string;
  readonly key: string;
  /** SHA-256 of the certificate's DER, upper-case hex with colons (as openssl prints it). */
  readonly fingerprint: string;
  /** True when this call generated the pair. */
  readonly generated: boolean;
}

export function certificateFingerprint(pem: string): string {
  return new X509Certificate(pem).fingerprint256;
}

/**
 * A self-signed certificate for `hosts` (the first is the common name) with a new P-256 key,
 * built with the X.509 toolkit (docs/x509.md) on node's WebCrypto. The key usage is
 * digitalSignature only: an ECDSA key signs the TLS handshake and never encrypts a key.
 */
async function selfSigned(hosts: readonly string[]): Promise<{ cert: string; key: string }> {
  const keys = (await webcrypto.subtle.generateKey(KEY_ALGORITHM, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const now = Date.now();
  const certificate = await X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerialNumber(),
      // JSON form, so a host is never parsed as a distinguished name; UTF8String (RFC 5280 4.1.2.6).
      name: new Name([
        { CN: [{ utf8String: hosts[0] ?? 'localhost' }] },
        { O: [{ utf8String: 'cardlink server (self-signed)' }] },
      ]),
      notBefore: new Date(now - NOT_BEFORE_SLACK_MS),
      notAfter: new Date(now + SELF_SIGNED_VALIDITY_DAYS * 86_400_000),
      keys,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new BasicConstraintsExtension(false, undefined, true),
        new KeyUsagesExtension(KeyUsageFlags.digitalSignature, true),
        new ExtendedKeyUsageExtension([ExtendedKeyUsage.serverAuth]),
        new SubjectAlternativeNameExtension(
          hosts.map((h) => ({ type: isIP(h) ? ('ip' as const) : ('dns' as const), value: h })),
        ),
        await SubjectKeyIdentifierExtension.create(keys.publicKey, false, webcrypto),
      ],
    },
    webcrypto,
  );
  const key = KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' }).toString();
  return { cert: certificate.toString('pem') + '\n', key };
}

/** Writes `data` to `file` with `mode`, atomically (a crash leaves the old file or none). */
function writePrivate(file: string, data: string, mode: number): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, data, { mode, flag: 'wx' });
  fs.renameSync(tmp, file);
}

/**
 * Loads the pair, or generates a self-signed one when neither file exists. One file without the
 * other is a configuration error (never overwritten).
 */
export async function loadOrCreateTlsPair(
  certFile: string,
  keyFile: string,
  hosts: readonly string[],
): Promise<TlsPair> {
  const haveCert = fs.existsSync(certFile);
  const haveKey = fs.existsSync(keyFile);
  if (haveCert !== haveKey) {
    const missing = haveCert ? keyFile : certFile;
    throw new ConfigError(
      haveCert ? 'tls.keyFile' : 'tls.certFile',
      missing,
      'is missing while its pair exists',
    );
  }
  if (!haveCert) {
    const pair = await selfSigned([...new Set([...hosts, 'localhost', '127.0.0.1'])]);
    fs.mkdirSync(path.dirname(keyFile), { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.dirname(certFile), { recursive: true, mode: 0o700 });
    writePrivate(keyFile, pair.key, 0o600);
    writePrivate(certFile, pair.cert, 0o644);
    return { ...pair, fingerprint: certificateFingerprint(pair.cert), generated: true };
  }
  const stat = fs.statSync(keyFile);
  if ((stat.mode & 0o077) !== 0)
    throw new ConfigError('tls.keyFile', keyFile, 'must not be readable by group or others (chmod 600)');
  let cert: string;
  let key: string;
  try {
    cert = fs.readFileSync(certFile, 'utf8');
    key = fs.readFileSync(keyFile, 'utf8');
  } catch (error) {
    throw new ConfigError(
      'tls',
      certFile,
      `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  let fingerprint: string;
  try {
    fingerprint = certificateFingerprint(cert);
  } catch {
    throw new ConfigError('tls.certFile', certFile, 'is not a PEM certificate');
  }
  return { cert, key, fingerprint, generated: false };
}
