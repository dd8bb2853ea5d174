/**
 * Test helpers (not a test file): PKCS#12 files made by the real openssl CLI, as an administrator
 * would bring them (`openssl req -x509` then `openssl pkcs12 -export`), and files crafted from
 * them with the @peculiar ASN.1 classes. The password goes to openssl through its environment
 * (`-passout env:`), not its command line.
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AuthenticatedSafe, PFX } from '@peculiar/asn1-pfx';
import { AsnConvert, OctetString } from '@peculiar/asn1-schema';

const run = promisify(execFile);

export type TestKeyKind = 'rsa2048' | 'rsa1024' | 'p256';

/** How `openssl pkcs12 -export` protects the file. */
export type Pkcs12Protection =
  /** OpenSSL 3's default: PBES2 (PBKDF2, AES-256-CBC), MAC HMAC-SHA-256. */
  | 'default'
  /** `-legacy`: RC2-40 for the certificates, 3DES for the key, MAC SHA-1 (OpenSSL 1.1's default). */
  | 'legacy'
  /** pbeWithSHAAnd3-KeyTripleDES-CBC for key and certificates, MAC SHA-1. */
  | '3des';

export interface TestKeyPair {
  readonly keyPem: string;
  readonly certPem: string;
  readonly keyFile: string;
  readonly certFile: string;
}

/** A key and a self-signed certificate for it (`openssl req -x509`), in `dir` as `<name>.key/.crt`. */
export async function makeSelfSigned(
  dir: string,
  name: string,
  kind: TestKeyKind,
  subject = `/CN=${name}/O=cardlink test`,
): Promise<TestKeyPair> {
  const keyFile = join(dir, `${name}.key`);
  const certFile = join(dir, `${name}.crt`);
  const newkey =
    kind === 'p256'
      ? ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256']
      : ['-newkey', kind === 'rsa1024' ? 'rsa:1024' : 'rsa:2048'];
  await run('openssl', [
    'req',
    '-x509',
    ...newkey,
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-subj',
    subject,
    '-days',
    '30',
    // 9D holds an encryption key: keyEncipherment lets `openssl cms -encrypt` use the certificate.
    '-addext',
    'keyUsage=digitalSignature,keyEncipherment,keyAgreement',
  ]);
  return {
    keyPem: await readFile(keyFile, 'utf8'),
    certPem: await readFile(certFile, 'utf8'),
    keyFile,
    certFile,
  };
}

/**
 * `openssl pkcs12 -export` of `key` with `cert` (either may be left out) and `extraCerts`
 * (`-certfile`, e.g. a CA), protected as `protection` says. Returns the file's path.
 */
export async function exportPkcs12(
  dir: string,
  name: string,
  parts: { keyFile?: string; certFile?: string; extraCertsFile?: string },
  password: string,
  protection: Pkcs12Protection = 'default',
  /** More `openssl pkcs12 -export` options: `-iter N`, `-nomac`. */
  extraArgs: readonly string[] = [],
): Promise<string> {
  const out = join(dir, `${name}.p12`);
  const args = ['pkcs12', '-export', '-out', out, '-passout', 'env:TEST_P12_PASSWORD'];
  if (parts.keyFile) args.push('-inkey', parts.keyFile);
  else args.push('-nokeys');
  if (parts.certFile) args.push('-in', parts.certFile);
  else args.push('-nocerts');
  if (parts.extraCertsFile) args.push('-certfile', parts.extraCertsFile);
  if (protection === 'legacy') args.push('-legacy');
  if (protection === '3des')
    args.push('-keypbe', 'PBE-SHA1-3DES', '-certpbe', 'PBE-SHA1-3DES', '-macalg', 'sha1');
  args.push(...extraArgs);
  await run('openssl', args, { env: { ...process.env, TEST_P12_PASSWORD: password } });
  return out;
}

/**
 * A crafted PKCS#12 file: `der` with the ContentInfo at `index` of its AuthenticatedSafe repeated
 * until it holds `total` ContentInfos, re-encoded with the @peculiar classes. The MAC is left as
 * it was (it no longer matches): the reader's structural limits are checked before the MAC.
 */
export function withContentInfosRepeated(der: Uint8Array, index: number, total: number): Buffer {
  const pfx = AsnConvert.parse(der, PFX);
  const inner = AsnConvert.parse(pfx.authSafe.content, OctetString);
  const safe = AsnConvert.parse(inner.buffer, AuthenticatedSafe);
  const infos = [...safe];
  while (infos.length < total) infos.push(safe[index]!);
  pfx.authSafe.content = AsnConvert.serialize(
    new OctetString(AsnConvert.serialize(new AuthenticatedSafe(infos))),
  );
  return Buffer.from(AsnConvert.serialize(pfx));
}
