/**
 * A PKCS#11 application for bench/daemon-chain.ts: OpenSC's module through npm pkcs11js, as a real
 * application loads it, in its own process (pkcs11js calls are synchronous and the card server runs
 * in the benchmark's process: one process for both would deadlock).
 *
 * Two ways to run it:
 *
 * - Forked with an IPC channel (what daemon-chain does): it answers one step at a time, so the
 *   parent can read the daemon's round-trip counters between steps. Requests (`Request` below):
 *   `open` (C_Initialize, first slot with a token, C_OpenSession), `login` (C_Login CKU_USER only),
 *   `sign` (find the private key by CKA_ID, then `warmup` untimed and `n` timed
 *   C_SignInit + C_Sign, each timed with process.hrtime; the last signature is verified against
 *   the certificate with the same CKA_ID), `exit`. Each answer is `{ ok: true, ... }` or
 *   `{ ok: false, error }`.
 * - On its own, printing one JSON result:
 *
 *     PCSCLITE_CSOCK_NAME=... node dist/bench/support/p11-sign-loop.js --pin 123456 --id 04 \
 *       --alg p256 [--n 300] [--warmup 20] [--context-login]
 *
 * Mechanisms: CKM_ECDSA over a 32-byte SHA-256 digest (P-256), CKM_RSA_PKCS over a DigestInfo of
 * SHA-256 (RSA-2048). `contextLogin` adds C_Login(CKU_CONTEXT_SPECIFIC) between C_SignInit and
 * C_Sign, which a key with CKA_ALWAYS_AUTHENTICATE (PIV 9C, PIN policy "always") needs for every
 * signature.
 */
import { createHash, verify, X509Certificate } from 'node:crypto';
import { parseArgs } from 'node:util';
import pkcs11js from 'pkcs11js';
import { OPENSC_PKCS11 } from '../../test/support/local-card.js';

/** The message whose SHA-256 every signature covers. */
const MESSAGE = Buffer.from('cardlink daemon-chain benchmark');
/** DigestInfo prefix of SHA-256 (RFC 8017 section 9.2, note 1). */
const SHA256_DIGEST_INFO = Buffer.from('3031300d060960864801650304020105000420', 'hex');
/** Room for an RSA-4096 signature. */
const SIGNATURE_BUFFER_BYTES = 512;

export type SignAlg = 'p256' | 'rsa2048';

export type Request =
  | { op: 'open'; module?: string }
  | { op: 'login'; pin: string }
  | {
      op: 'sign';
      /** CKA_ID in hex, e.g. "04". */
      id: string;
      alg: SignAlg;
      n: number;
      warmup: number;
      /** PIN for C_Login(CKU_CONTEXT_SPECIFIC) before each C_Sign (CKA_ALWAYS_AUTHENTICATE keys). */
      contextPin?: string;
    }
  | { op: 'exit' };

export interface OpenResult {
  slotDescription: string;
  tokenLabel: string;
}

export interface SignResult {
  /** Milliseconds of each timed C_SignInit + C_Sign (+ context login), in order. */
  times_ms: number[];
  /** CPU time (user + system) of this process over all `warmup + n` signatures, in ms. */
  loop_cpu_ms: number;
  signature_bytes: number;
  /** The last signature verified with the public key of the certificate with the same CKA_ID. */
  verified: boolean;
  alwaysAuthenticate: boolean;
}

export type Reply = ({ ok: true } & Record<string, unknown>) | { ok: false; error: string };

class Pkcs11App {
  private lib: pkcs11js.PKCS11 | undefined;
  private session: Buffer | undefined;

  open(modulePath: string): OpenResult {
    const lib = new pkcs11js.PKCS11();
    lib.load(modulePath);
    lib.C_Initialize();
    this.lib = lib;
    const slot = lib.C_GetSlotList(true)[0];
    if (!slot) throw new Error('no slot with a token');
    this.session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION);
    return {
      slotDescription: lib.C_GetSlotInfo(slot).slotDescription.trim(),
      tokenLabel: lib.C_GetTokenInfo(slot).label.trim(),
    };
  }

  login(pin: string): void {
    this.need().lib.C_Login(this.need().session, pkcs11js.CKU_USER, pin);
  }

  sign(id: string, alg: SignAlg, n: number, warmup: number, contextPin?: string): SignResult {
    const { lib, session } = this.need();
    const ckaId = Buffer.from(id, 'hex');
    const key = this.findOne(pkcs11js.CKO_PRIVATE_KEY, ckaId);
    const [always] = lib.C_GetAttributeValue(session, key, [{ type: pkcs11js.CKA_ALWAYS_AUTHENTICATE }]);
    const alwaysAuthenticate = Buffer.isBuffer(always?.value)
      ? always.value[0] === 1
      : always?.value === true;
    const digest = createHash('sha256').update(MESSAGE).digest();
    const input = alg === 'p256' ? digest : Buffer.concat([SHA256_DIGEST_INFO, digest]);
    const mechanism = { mechanism: alg === 'p256' ? pkcs11js.CKM_ECDSA : pkcs11js.CKM_RSA_PKCS };
    const out = Buffer.alloc(SIGNATURE_BUFFER_BYTES);
    const times: number[] = [];
    let signature: Buffer = Buffer.alloc(0);
    const cpu0 = process.cpuUsage();
    for (let i = 0; i < warmup + n; i++) {
      const t0 = process.hrtime.bigint();
      lib.C_SignInit(session, mechanism, key);
      if (contextPin !== undefined) lib.C_Login(session, pkcs11js.CKU_CONTEXT_SPECIFIC, contextPin);
      signature = lib.C_Sign(session, input, out);
      const t1 = process.hrtime.bigint();
      if (i >= warmup) times.push(Number(t1 - t0) / 1e6);
    }
    const cpu = process.cpuUsage(cpu0);
    return {
      times_ms: times,
      loop_cpu_ms: (cpu.user + cpu.system) / 1000,
      signature_bytes: signature.length,
      verified: this.verifyWithCertificate(ckaId, alg, Buffer.from(signature)),
      alwaysAuthenticate,
    };
  }

  close(): void {
    if (!this.lib) return;
    try {
      if (this.session) this.lib.C_CloseSession(this.session);
      this.lib.C_Finalize();
      this.lib.close();
    } catch {
      // leaving anyway
    }
    this.lib = undefined;
    this.session = undefined;
  }

  private verifyWithCertificate(ckaId: Buffer, alg: SignAlg, signature: Buffer): boolean {
    const { lib, session } = this.need();
    const cert = this.findOne(pkcs11js.CKO_CERTIFICATE, ckaId);
    const [der] = lib.C_GetAttributeValue(session, cert, [{ type: pkcs11js.CKA_VALUE }]);
    if (!Buffer.isBuffer(der?.value)) return false;
    const publicKey = new X509Certificate(der.value).publicKey;
    return alg === 'p256'
      ? verify('sha256', MESSAGE, { key: publicKey, dsaEncoding: 'ieee-p1363' }, signature)
      : verify('sha256', MESSAGE, publicKey, signature);
  }

  private findOne(objectClass: number, ckaId: Buffer): Buffer {
    const { lib, session } = this.need();
    lib.C_FindObjectsInit(session, [
      { type: pkcs11js.CKA_CLASS, value: objectClass },
      { type: pkcs11js.CKA_ID, value: ckaId },
    ]);
    try {
      const [handle] = lib.C_FindObjects(session, 1);
      if (!handle) throw new Error(`no object of class ${objectClass} with CKA_ID ${ckaId.toString('hex')}`);
      return handle;
    } finally {
      lib.C_FindObjectsFinal(session);
    }
  }

  private need(): { lib: pkcs11js.PKCS11; session: Buffer } {
    if (!this.lib || !this.session) throw new Error('open first');
    return { lib: this.lib, session: this.session };
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function serveSteps(): void {
  const app = new Pkcs11App();
  const send = (reply: Reply) => process.send!(reply);
  process.on('message', (request: Request) => {
    try {
      switch (request.op) {
        case 'open':
          send({ ok: true, ...app.open(request.module ?? OPENSC_PKCS11) });
          break;
        case 'login':
          app.login(request.pin);
          send({ ok: true });
          break;
        case 'sign':
          send({
            ok: true,
            ...app.sign(request.id, request.alg, request.n, request.warmup, request.contextPin),
          });
          break;
        case 'exit':
          app.close();
          process.disconnect();
          break;
      }
    } catch (error) {
      send({ ok: false, error: errorText(error) });
    }
  });
  process.on('disconnect', () => {
    app.close();
    process.exit(0);
  });
}

function runOnce(): void {
  const { values } = parseArgs({
    options: {
      pin: { type: 'string' },
      id: { type: 'string', default: '04' },
      alg: { type: 'string', default: 'p256' },
      n: { type: 'string', default: '300' },
      warmup: { type: 'string', default: '20' },
      'context-login': { type: 'boolean', default: false },
      module: { type: 'string', default: OPENSC_PKCS11 },
    },
  });
  if (!values.pin) throw new Error('--pin is required');
  if (values.alg !== 'p256' && values.alg !== 'rsa2048') throw new Error('--alg is p256 or rsa2048');
  const n = Number(values.n);
  const warmup = Number(values.warmup);
  if (!Number.isInteger(n) || n < 1 || !Number.isInteger(warmup) || warmup < 0)
    throw new Error('--n and --warmup take whole numbers');
  const app = new Pkcs11App();
  try {
    const opened = app.open(values.module);
    app.login(values.pin);
    const result = app.sign(
      values.id,
      values.alg,
      n,
      warmup,
      values['context-login'] ? values.pin : undefined,
    );
    const sorted = [...result.times_ms].sort((a, b) => a - b);
    const at = (p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
    console.log(JSON.stringify({ ...opened, ...result, p50_ms: at(50), p99_ms: at(99), n, warmup }, null, 2));
  } finally {
    app.close();
  }
}

if (process.send) serveSteps();
else runOnce();
