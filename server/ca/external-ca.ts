/**
 * The external CA adapter (docs/personalization.md): the organisation's CA issues the certificates
 * instead of the embedded one. For each slot the card server makes the request itself (PKCS#10,
 * signed by the slot's new key, with the template's subject, SANs, key usage and extended key
 * usage as requested extensions) and runs the administrator's command: the request as PEM on its
 * stdin, the certificate as PEM (or DER) on its stdout, exit status 0. No shell is involved; the
 * command gets no secret. A small wrapper around `openssl ca -batch` with `copy_extensions = copy`
 * is such a command; it goes through temporary files, because the pipes here are sockets, which
 * `/dev/stdin` and `/dev/stdout` cannot open (test/support/openssl-ca.ts, docs/personalization.md).
 *
 * The certificate must name the request's key and be valid now; revocation and CRLs of its
 * certificates are the external CA's (nothing of them is registered or revoked here).
 */
import { spawn } from 'node:child_process';
import { createPublicKey, X509Certificate as NodeX509 } from 'node:crypto';
import {
  Extension,
  Pkcs10CertificateRequestGenerator,
  SubjectAlternativeNameExtension,
  type CardSigningKey,
} from '../../apdu/piv/certificates/index.js';
import { escapeControlCharacters } from '../../protocol/log.js';
import type { Claims, ResolvedTemplate } from '../admin/certificate-template.js';
import {
  EnrollmentError,
  templateNames,
  templateUsageExtensions,
  type IssuedCertificate,
} from './issue-certificate.js';
import { normaliseSerial } from './issue-certificate.js';

/** Milliseconds the command may take per certificate before it is killed. */
export const EXTERNAL_CA_TIMEOUT_MS = 30_000;
/** Most bytes read from the command's stdout (a certificate is a few KiB). */
export const MAX_EXTERNAL_CA_OUTPUT_BYTES = 64 * 1024;
/** Characters of the command's stderr kept for the error message. */
export const MAX_EXTERNAL_CA_DIAGNOSTIC_CHARS = 300;

export interface ExternalCa {
  /** The executable and its arguments (no shell). */
  readonly argv: readonly string[];
  readonly timeoutMs?: number;
}

/** The request for one slot, signed by its key: the template's names and usages requested as extensions. */
export async function externalRequestPem(
  key: CardSigningKey,
  template: ResolvedTemplate,
  claims: Claims,
  cardSerial: number,
  slot: number,
): Promise<string> {
  const { subject, sans } = templateNames(template, claims, cardSerial, slot);
  const extensions: Extension[] = [...templateUsageExtensions(template)];
  if (sans.length > 0) extensions.push(new SubjectAlternativeNameExtension(sans));
  const request = await Pkcs10CertificateRequestGenerator.create(
    { name: subject, keys: key.keys, signingAlgorithm: key.signingAlgorithm, extensions },
    key.crypto,
  );
  return request.toString('pem');
}

/** Runs the command for one request and checks the certificate it returns against the key. */
export async function issueWithCommand(
  ca: ExternalCa,
  requestPem: string,
  publicKeySpki: Uint8Array,
  slot: number,
  now = new Date(),
): Promise<IssuedCertificate> {
  const slotHex = slot.toString(16).toUpperCase();
  const output = await runCommand(ca, requestPem, slotHex);
  let cert: NodeX509;
  try {
    cert = new NodeX509(output);
  } catch {
    throw new EnrollmentError('the external CA command printed no certificate', { slot: slotHex });
  }
  const expected = createPublicKey({ key: Buffer.from(publicKeySpki), format: 'der', type: 'spki' });
  if (!cert.publicKey.equals(expected))
    throw new EnrollmentError("the external CA's certificate is not for the slot's key", { slot: slotHex });
  if (new Date(cert.validFrom) > new Date(now.getTime() + 5 * 60_000) || new Date(cert.validTo) <= now)
    throw new EnrollmentError("the external CA's certificate is not valid now", { slot: slotHex });
  return {
    der: new Uint8Array(cert.raw),
    serial: normaliseSerial(cert.serialNumber),
    subject: cert.subject.replace(/\n/g, ', '),
    notAfter: new Date(cert.validTo),
  };
}

/**
 * The environment the external CA command runs with: what a command needs to be found and to run
 * (PATH, locale, HOME, TMPDIR, and OPENSSL_CONF for an openssl CA), never the server's own
 * settings, which may carry the database URL's password or the HSM's PIN (CARDLINK_*).
 */
export const EXTERNAL_CA_ENV_NAMES = ['PATH', 'LANG', 'LC_ALL', 'HOME', 'TMPDIR', 'OPENSSL_CONF'] as const;

export function externalCaEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const name of EXTERNAL_CA_ENV_NAMES) if (env[name] !== undefined) out[name] = env[name];
  return out;
}

function runCommand(ca: ExternalCa, input: string, slotHex: string): Promise<Buffer> {
  const [file, ...args] = ca.argv;
  if (!file) throw new EnrollmentError('the external CA command is empty');
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'], shell: false, env: externalCaEnv() });
    const out: Buffer[] = [];
    let outBytes = 0;
    let diagnostic = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), ca.timeoutMs ?? EXTERNAL_CA_TIMEOUT_MS);
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_EXTERNAL_CA_OUTPUT_BYTES) child.kill('SIGKILL');
      else out.push(chunk);
    });
    child.stderr.on('data', (chunk: Buffer) => {
      if (diagnostic.length < MAX_EXTERNAL_CA_DIAGNOSTIC_CHARS) diagnostic += chunk.toString('utf8');
    });
    child.stdin.on('error', () => undefined); // a command that exits without reading fails below
    child.once('error', (error: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(
        new EnrollmentError('the external CA command cannot be run', {
          slot: slotHex,
          errno: error.code ?? 'unknown',
        }),
      );
    });
    child.once('close', (status, signal) => {
      clearTimeout(timer);
      if (status === 0 && outBytes <= MAX_EXTERNAL_CA_OUTPUT_BYTES) return resolve(Buffer.concat(out));
      const why =
        outBytes > MAX_EXTERNAL_CA_OUTPUT_BYTES
          ? 'printed too much'
          : signal
            ? `was killed (${signal})`
            : `exited with ${status}`;
      reject(
        new EnrollmentError(`the external CA command ${why}`, {
          slot: slotHex,
          stderr: escapeControlCharacters(diagnostic.slice(0, MAX_EXTERNAL_CA_DIAGNOSTIC_CHARS).trim()),
        }),
      );
    });
    child.stdin.end(input);
  });
}
