/**
 * A real external CA for tests: an `openssl ca` directory (index.txt, serial, newcerts,
 * `copy_extensions = copy` so the requested SANs and usages are kept) with a self-signed P-256 CA
 * certificate, and the wrapper script docs/personalization.md shows, which `--ca-command` /
 * `externalCa` runs: the request on stdin, the certificate on stdout. The request and certificate
 * go through files because the card server's pipes are sockets, which /dev/stdin and /dev/stdout
 * cannot open.
 */
import { execFile } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

export interface OpensslCa {
  /** The CA directory. */
  readonly dir: string;
  /** The CA certificate (PEM): the only thing a relying party trusting this CA needs. */
  readonly caFile: string;
  readonly configFile: string;
  /** The executable to give `--ca-command` (or `externalCa: { argv: [wrapper] }`). */
  readonly wrapper: string;
  /** Lines of index.txt: one per certificate `openssl ca` issued. */
  issuedCount(): Promise<number>;
}

/** Writes `#!/bin/sh` + `body` to `dir/name`, executable. */
export async function writeScript(dir: string, name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

/** Makes the CA under `parent/ca` (CN `subject`) and its wrapper `parent/openssl-ca.sh`. */
export async function createOpensslCa(parent: string, subject = 'Example External CA'): Promise<OpensslCa> {
  const dir = join(parent, 'ca');
  await mkdir(join(dir, 'newcerts'), { recursive: true });
  await writeFile(join(dir, 'index.txt'), '');
  await writeFile(join(dir, 'serial'), '1000\n');
  const configFile = join(dir, 'openssl.cnf');
  await writeFile(
    configFile,
    [
      '[ca]',
      'default_ca = test_ca',
      '[test_ca]',
      `dir = ${dir}`,
      'database = $dir/index.txt',
      'new_certs_dir = $dir/newcerts',
      'serial = $dir/serial',
      'certificate = $dir/ca.pem',
      'private_key = $dir/ca.key',
      'default_md = sha256',
      'default_days = 365',
      'policy = policy_anything',
      'copy_extensions = copy',
      'unique_subject = no',
      'x509_extensions = leaf',
      '[policy_anything]',
      'commonName = supplied',
      'organizationName = optional',
      'serialNumber = optional',
      '[leaf]',
      'basicConstraints = critical,CA:FALSE',
      'authorityKeyIdentifier = keyid',
      'subjectKeyIdentifier = hash',
      '',
    ].join('\n'),
  );
  const caFile = join(dir, 'ca.pem');
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    join(dir, 'ca.key'),
    '-out',
    caFile,
    '-subj',
    `/CN=${subject}`,
    '-days',
    '730',
  ]);
  const wrapper = await writeScript(
    parent,
    'openssl-ca.sh',
    [
      'set -e',
      'req=$(mktemp); out=$(mktemp); trap \'rm -f "$req" "$out"\' EXIT',
      'cat > "$req"',
      `openssl ca -batch -config ${configFile} -in "$req" -out "$out" -notext 2>>${dir}/ca.log`,
      'cat "$out"',
    ].join('\n'),
  );
  return {
    dir,
    caFile,
    configFile,
    wrapper,
    async issuedCount() {
      return (await readFile(join(dir, 'index.txt'), 'utf8')).split('\n').filter((l) => l.trim() !== '')
        .length;
    },
  };
}
