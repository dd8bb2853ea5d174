/**
 * The server's TLS certificate and key. An administrator gives their own pair; for local use a
 * self-signed pair is generated on first start (ECDSA P-256, 2 years, SAN = the listen host and
 * localhost) and its SHA-256 fingerprint printed, so a client can pin it.
 */
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import forge from 'node-forge';
import { ConfigError } from '../config/server-config.js';

/** Validity of a generated certificate. */
export const SELF_SIGNED_VALIDITY_DAYS = 730;

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

function isIp(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(':');
}

/**
 * A self-signed certificate for `hosts`. node-forge builds and signs the certificate with an RSA
 * key; node:crypto makes the key (forge's own key generation is slow).
 */
function selfSigned(hosts: readonly string[]): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const keyPem = privateKey.export({ type: 'pkcs1', format: 'pem' }).toString();
  const cert = forge.pki.createCertificate();
  cert.publicKey = forge.pki.publicKeyFromPem(publicKey.export({ type: 'spki', format: 'pem' }).toString());
  // RFC 5280 4.1.2.2: positive, at most 20 bytes.
  cert.serialNumber = `01${randomBytes(15).toString('hex')}`;
  const now = new Date();
  cert.validity.notBefore = new Date(now.getTime() - 60_000);
  cert.validity.notAfter = new Date(now.getTime() + SELF_SIGNED_VALIDITY_DAYS * 86_400_000);
  const subject = [
    { name: 'commonName', value: hosts[0] ?? 'localhost' },
    { name: 'organizationName', value: 'cardlink server (self-signed)' },
  ];
  cert.setSubject(subject);
  cert.setIssuer(subject);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
    { name: 'extKeyUsage', serverAuth: true },
    {
      name: 'subjectAltName',
      altNames: hosts.map((h) => (isIp(h) ? { type: 7, ip: h } : { type: 2, value: h })),
    },
  ]);
  cert.sign(forge.pki.privateKeyFromPem(keyPem), forge.md.sha256.create());
  return { cert: forge.pki.certificateToPem(cert), key: keyPem };
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
export function loadOrCreateTlsPair(certFile: string, keyFile: string, hosts: readonly string[]): TlsPair {
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
    const pair = selfSigned([...new Set([...hosts, 'localhost', '127.0.0.1'])]);
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
