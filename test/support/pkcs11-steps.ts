/**
 * What a relying party does with a card in the reader, through pcscd and OpenSC, for the
 * full-chain tests (enrollment, renewal, CARD_CHANGED, short-lived 9A, external CA): read a slot's
 * certificate with `pkcs11-tool --read-object`, sign with a slot's key, TLS client authentication
 * through the OpenSSL pkcs11 engine to `openssl s_server -Verify`, and S/MIME with `openssl cms`.
 * Every step runs the real tool and fails the test with its output when the tool fails.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { freePort } from './free-port.js';
import { OPENSC_PKCS11 } from './local-card.js';
import { toolRunner } from './tool-run.js';

/** OpenSC's object ids for the PIV slots: 9A 01, 9C 02, 9D 03, 9E 04, retired key management key 1 (82) 05. */
export const OPENSC_ID = { '9a': '01', '9c': '02', '9d': '03', '9e': '04', retired1: '05' } as const;
/** libengine-pkcs11-openssl's engine (Debian 12). */
export const PKCS11_ENGINE = '/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so';

export interface CardSteps {
  /** pcscd's environment plus PKCS11_MODULE_PATH (OpenSC) for the pkcs11 engine. */
  readonly env: NodeJS.ProcessEnv;
  /**
   * Runs a tool in the test's directory; `input` goes to its stdin (the pkcs11 engine asks there
   * for the PIN again before each 9C signature: the key is PIN-always, CKA_ALWAYS_AUTHENTICATE).
   * Returns stdout and stderr; fails the test when the tool fails.
   */
  run(cmd: string, args: string[], input?: string): Promise<string>;
  /** `pkcs11-tool --read-object` of the certificate with OpenSC id `id` into `dir/file` (DER). */
  readCertificateDer(id: string, file: string): Promise<string>;
  /** The certificate as `dir/name.der` and `dir/name.pem`; returns the PEM's path. */
  readCertificate(id: string, name: string): Promise<string>;
  /** `pkcs11-tool --login --sign` of `dataFile` with key `id` into `sigFile`. */
  sign(id: string, dataFile: string, sigFile: string, mechanism?: string): Promise<void>;
  /** The engine's URI of private key `id`, with the PIN. */
  engineKey(id: string): string;
  /**
   * A TLS client (`openssl s_client`, key `id` through the pkcs11 engine, certificate `certFile`)
   * to a fresh `openssl s_server -Verify 1 -CAfile caFile -verify_return_error -www` with a
   * throw-away P-256 server certificate. Returns the client's exit status and both outputs.
   */
  tlsClientAuth(options: {
    caFile: string;
    certFile: string;
    keyId: string;
  }): Promise<{ code: unknown; clientOut: string; serverOut: string }>;
  /** `openssl cms -encrypt` (AES-256) of `inFile` to `recipient`'s certificate, PEM into `outFile`. */
  cmsEncrypt(recipient: string, inFile: string, outFile: string): Promise<void>;
  /** The plaintext the card's key `id` recovers from `envelope` (`openssl cms -decrypt`, engine). */
  cmsDecrypt(envelope: string, id: string, recipient: string): Promise<string>;
  /** `openssl cms -sign` of `inFile` with the card's key `id` and `signer`'s certificate, PEM into `outFile`. */
  cmsSign(id: string, signer: string, inFile: string, outFile: string): Promise<void>;
  /** `openssl cms -verify -CAfile caFile` of `signed`; returns its output (content and result). */
  cmsVerify(signed: string, caFile: string): Promise<string>;
}

/** The steps against the card behind `pcscdEnv`, files in `dir`, PIN `pin`. */
export function cardSteps(options: { pcscdEnv: NodeJS.ProcessEnv; dir: string; pin: string }): CardSteps {
  const { dir, pin } = options;
  const env = { ...options.pcscdEnv, PKCS11_MODULE_PATH: OPENSC_PKCS11 };
  const { run } = toolRunner({ env, cwd: dir });
  const engineKey = (id: string) => `pkcs11:id=%${id};type=private;pin-value=${pin}`;
  const readCertificateDer = async (id: string, file: string) => {
    const der = path.join(dir, file);
    await run('pkcs11-tool', [
      '--module',
      OPENSC_PKCS11,
      '--read-object',
      '--type',
      'cert',
      '--id',
      id,
      '-o',
      der,
    ]);
    return der;
  };
  return {
    env,
    run,
    engineKey,
    readCertificateDer,
    async readCertificate(id, name) {
      const der = await readCertificateDer(id, `${name}.der`);
      const pem = path.join(dir, `${name}.pem`);
      await run('openssl', ['x509', '-inform', 'DER', '-in', der, '-out', pem]);
      return pem;
    },
    async sign(id, dataFile, sigFile, mechanism = 'SHA256-RSA-PKCS') {
      await run('pkcs11-tool', [
        '--module',
        OPENSC_PKCS11,
        '--login',
        '--pin',
        pin,
        '--sign',
        '--id',
        id,
        '-m',
        mechanism,
        '-i',
        dataFile,
        '-o',
        sigFile,
      ]);
    },
    async tlsClientAuth({ caFile, certFile, keyId }) {
      // The server's own pair: a throw-away self-signed P-256 certificate.
      const serverKey = path.join(dir, 'tls-server.key');
      const serverCert = path.join(dir, 'tls-server.pem');
      await run('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        serverKey,
        '-out',
        serverCert,
        '-subj',
        '/CN=127.0.0.1',
        '-days',
        '1',
      ]);
      const port = await freePort();
      const server: ChildProcess = spawn(
        'openssl',
        [
          's_server',
          '-accept',
          `127.0.0.1:${port}`,
          '-cert',
          serverCert,
          '-key',
          serverKey,
          '-Verify',
          '1',
          '-CAfile',
          caFile,
          '-verify_return_error',
          '-naccept',
          '1',
          '-www',
        ],
        { cwd: dir },
      );
      let serverOut = '';
      server.stdout!.on('data', (d: Buffer) => (serverOut += d.toString()));
      server.stderr!.on('data', (d: Buffer) => (serverOut += d.toString()));
      try {
        const deadline = Date.now() + 10_000;
        while (!serverOut.includes('ACCEPT') && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 50));
        const client = spawn(
          'openssl',
          [
            's_client',
            '-connect',
            `127.0.0.1:${port}`,
            '-engine',
            'pkcs11',
            '-keyform',
            'engine',
            '-key',
            engineKey(keyId),
            '-cert',
            certFile,
            '-CAfile',
            serverCert,
            '-verify_return_error',
          ],
          { cwd: dir, env },
        );
        let clientOut = '';
        client.stdout!.on('data', (d: Buffer) => (clientOut += d.toString()));
        client.stderr!.on('data', (d: Buffer) => (clientOut += d.toString()));
        client.stdin!.write('GET / HTTP/1.0\r\n\r\n');
        const code = await new Promise((resolve) => client.once('exit', resolve));
        return { code, clientOut, serverOut };
      } finally {
        server.kill();
      }
    },
    async cmsEncrypt(recipient, inFile, outFile) {
      await run('openssl', [
        'cms',
        '-encrypt',
        '-binary',
        '-aes256',
        '-in',
        inFile,
        '-outform',
        'PEM',
        '-out',
        outFile,
        recipient,
      ]);
    },
    async cmsDecrypt(envelope, id, recipient) {
      const out = path.join(dir, `${path.basename(envelope)}.out`);
      await run('openssl', [
        'cms',
        '-decrypt',
        '-engine',
        'pkcs11',
        '-keyform',
        'engine',
        '-inkey',
        engineKey(id),
        '-recip',
        recipient,
        '-inform',
        'PEM',
        '-in',
        envelope,
        '-out',
        out,
      ]);
      return fs.readFileSync(out, 'utf8');
    },
    async cmsSign(id, signer, inFile, outFile) {
      await run(
        'openssl',
        [
          'cms',
          '-sign',
          '-binary',
          '-engine',
          'pkcs11',
          '-keyform',
          'engine',
          '-inkey',
          engineKey(id),
          '-signer',
          signer,
          '-md',
          'sha256',
          '-in',
          inFile,
          '-outform',
          'PEM',
          '-out',
          outFile,
          '-nodetach',
        ],
        `${pin}\n`,
      );
    },
    cmsVerify(signed, caFile) {
      return run('openssl', ['cms', '-verify', '-CAfile', caFile, '-inform', 'PEM', '-in', signed]);
    },
  };
}
