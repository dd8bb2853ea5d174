/**
 * Key provider on a PKCS#11 token (an HSM; SoftHSM2 in tests), through pkcs11js.
 *
 * - KEKs are AES-256 secret keys generated inside the token, `CKA_SENSITIVE` and not
 *   `CKA_EXTRACTABLE`: the key never exists outside the token. Data keys are wrapped with
 *   CKM_AES_GCM (96-bit random IV, 128-bit tag, AAD = `KEK_WRAP_DOMAIN || aad`), the same
 *   format as the key file provider: `iv || ciphertext || tag`.
 * - The PIN key is a 256-bit generic secret, equally non-extractable; verifiers use
 *   CKM_SHA256_HMAC.
 * - Versions are token objects labelled `<prefix>-kek-v<n>` and `<prefix>-pin-v<n>`; rotation
 *   generates the next label, retirement destroys the object. A version this process does not
 *   know (another node rotated) makes it rescan the token once.
 * - `C_Initialize` gets `CKF_OS_LOCKING_OK`: operations run on libuv worker threads (the *Async
 *   calls), and without it SoftHSM2 fails concurrent calls with CKR_GENERAL_ERROR. Each operation
 *   holds one session of a small pool for its Init+Encrypt/Decrypt/Sign pair.
 * - Signing key pairs that never leave the token (the issuing CA's, with `ca init --key-in-hsm`)
 *   go through the same logged-in sessions: `tokenKeys` (pkcs11-token-keys.ts).
 */
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import {
  checkRetirable,
  GCM_IV_BYTES,
  GCM_TAG_BYTES,
  KEK_WRAP_DOMAIN,
  KEY_BYTES,
  KeyProviderError,
  SealedKeyInvalidError,
  VersionedKeys,
  type KekProvider,
  type WrappedDataKey,
} from './kek-provider.js';
import { Pkcs11TokenKeys } from './pkcs11-token-keys.js';
import type { TokenKeyStore } from './token-keys.js';

/** Default number of PKCS#11 sessions (concurrent token operations) per provider. */
export const DEFAULT_PKCS11_SESSIONS = 4;

/** Default label prefix of cardlink's key objects on the token. */
export const DEFAULT_PKCS11_LABEL_PREFIX = 'cardlink';

/** HMAC-SHA-256 output bytes. */
const HMAC_BYTES = 32;

export interface Pkcs11ProviderOptions {
  /** The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`. */
  modulePath: string;
  /** Find the token by label (exactly one of `tokenLabel`, `slotId`). */
  tokenLabel?: string;
  /** Or by slot id (as `softhsm2-util --show-slots` prints it). */
  slotId?: number;
  /** User PIN of the token. Read it from a file or the environment, never the command line. */
  pin: string;
  labelPrefix?: string;
  sessions?: number;
  /** Generate version 1 of both keys when the token holds none (default true). */
  create?: boolean;
}

type Handle = Buffer;

/** One initialized module per path and process: C_Initialize/C_Finalize are process-wide. */
const modules = new Map<string, { lib: pkcs11js.PKCS11; users: number; ownsInit: boolean }>();

function acquireModule(modulePath: string): pkcs11js.PKCS11 {
  const existing = modules.get(modulePath);
  if (existing) {
    existing.users++;
    return existing.lib;
  }
  const lib = new pkcs11js.PKCS11();
  let ownsInit = true;
  try {
    lib.load(modulePath);
    lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  } catch (error) {
    if ((error as { code?: number }).code === pkcs11js.CKR_CRYPTOKI_ALREADY_INITIALIZED) ownsInit = false;
    else throw p11Error('cannot load the PKCS#11 module', error, { module: modulePath });
  }
  modules.set(modulePath, { lib, users: 1, ownsInit });
  return lib;
}

function releaseModule(modulePath: string): void {
  const entry = modules.get(modulePath);
  if (!entry || --entry.users > 0) return;
  modules.delete(modulePath);
  try {
    if (entry.ownsInit) entry.lib.C_Finalize();
    entry.lib.close();
  } catch {
    // Finalizing at shutdown: nothing useful to do with an error.
  }
}

/** Opens the token, logs in, finds (or on first start generates) the key objects. */
export async function openPkcs11Provider(options: Pkcs11ProviderOptions): Promise<KekProvider> {
  if ((options.tokenLabel === undefined) === (options.slotId === undefined)) {
    throw new KeyProviderError('give exactly one of tokenLabel and slotId', { setting: 'pkcs11' });
  }
  const lib = acquireModule(options.modulePath);
  const provider = new Pkcs11Provider(lib, options);
  try {
    await provider.open(options.create ?? true);
  } catch (error) {
    await provider.close();
    throw error;
  }
  return provider;
}

class Pkcs11Provider extends VersionedKeys<Handle> implements KekProvider {
  readonly kind = 'pkcs11';
  private readonly prefix: string;
  private readonly sessions: Handle[] = [];
  private readonly idle: Handle[] = [];
  private readonly waiters: ((session: Handle) => void)[] = [];
  private closed = false;
  readonly tokenKeys: TokenKeyStore;

  constructor(
    private readonly lib: pkcs11js.PKCS11,
    private readonly options: Pkcs11ProviderOptions,
  ) {
    super();
    this.prefix = options.labelPrefix ?? DEFAULT_PKCS11_LABEL_PREFIX;
    this.tokenKeys = new Pkcs11TokenKeys(
      lib,
      (fn, operation) => this.withSession(fn, operation),
      this.prefix,
    );
  }

  async open(create: boolean): Promise<void> {
    const slot = this.findSlot();
    const count = this.options.sessions ?? DEFAULT_PKCS11_SESSIONS;
    for (let i = 0; i < count; i++) {
      const session = this.call('C_OpenSession', () =>
        this.lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION),
      );
      this.sessions.push(session);
      this.idle.push(session);
    }
    try {
      // Login is per application and token: one C_Login covers every session.
      this.lib.C_Login(this.sessions[0]!, pkcs11js.CKU_USER, this.options.pin);
    } catch (error) {
      if ((error as { code?: number }).code !== pkcs11js.CKR_USER_ALREADY_LOGGED_IN) {
        throw p11Error('PKCS#11 login failed', error);
      }
    }
    await this.withSession((s) => Promise.resolve(this.scan(s)));
    if (this.keks.size === 0 || this.pinKeys.size === 0) {
      if (!create) throw new KeyProviderError('the token holds no cardlink keys', { prefix: this.prefix });
      await this.withSession((s) => {
        if (this.keks.size === 0) this.keks.set(1, this.generateKek(s, 1));
        if (this.pinKeys.size === 0) this.pinKeys.set(1, this.generatePinKey(s, 1));
        return Promise.resolve();
      });
    }
  }

  private findSlot(): Handle {
    const slots = this.call('C_GetSlotList', () => this.lib.C_GetSlotList(true));
    const matches = slots.filter((slot) => {
      if (this.options.slotId !== undefined) return slot.readBigUInt64LE(0) === BigInt(this.options.slotId);
      return this.lib.C_GetTokenInfo(slot).label.trimEnd() === this.options.tokenLabel;
    });
    if (matches.length !== 1) {
      throw new KeyProviderError(
        matches.length === 0 ? 'no such PKCS#11 token' : 'several PKCS#11 tokens match',
        {
          ...(this.options.tokenLabel !== undefined ? { tokenLabel: this.options.tokenLabel } : {}),
          ...(this.options.slotId !== undefined ? { slotId: this.options.slotId } : {}),
        },
      );
    }
    return matches[0]!;
  }

  /** Reads the versions of the key objects on the token. */
  private scan(session: Handle): void {
    const keks = new Map<number, Handle>();
    const pinKeys = new Map<number, Handle>();
    const pattern = new RegExp(`^${escapeRegExp(this.prefix)}-(kek|pin)-v([1-9][0-9]{0,8})$`);
    this.lib.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }]);
    try {
      for (;;) {
        const batch = this.lib.C_FindObjects(session, 64);
        if (batch.length === 0) break;
        for (const handle of batch) {
          const [label] = this.lib.C_GetAttributeValue(session, handle, [{ type: pkcs11js.CKA_LABEL }]);
          const m = pattern.exec(Buffer.isBuffer(label?.value) ? label.value.toString('utf8') : '');
          if (!m) continue;
          (m[1] === 'kek' ? keks : pinKeys).set(Number(m[2]), handle);
        }
      }
    } finally {
      this.lib.C_FindObjectsFinal(session);
    }
    this.keks = keks;
    this.pinKeys = pinKeys;
  }

  private generateKek(session: Handle, version: number): Handle {
    return this.call('C_GenerateKey', () =>
      this.lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
        ...this.secretTemplate(`${this.prefix}-kek-v${version}`),
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
        { type: pkcs11js.CKA_ENCRYPT, value: true },
        { type: pkcs11js.CKA_DECRYPT, value: true },
      ]),
    );
  }

  private generatePinKey(session: Handle, version: number): Handle {
    return this.call('C_GenerateKey', () =>
      this.lib.C_GenerateKey(session, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, [
        ...this.secretTemplate(`${this.prefix}-pin-v${version}`),
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
        { type: pkcs11js.CKA_SIGN, value: true },
        { type: pkcs11js.CKA_VERIFY, value: true },
      ]),
    );
  }

  private secretTemplate(label: string): pkcs11js.Template {
    return [
      { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
      { type: pkcs11js.CKA_VALUE_LEN, value: KEY_BYTES },
      { type: pkcs11js.CKA_TOKEN, value: true },
      { type: pkcs11js.CKA_PRIVATE, value: true },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
      { type: pkcs11js.CKA_MODIFIABLE, value: false },
      { type: pkcs11js.CKA_LABEL, value: label },
    ];
  }

  private gcm(iv: Buffer, aad: Uint8Array): pkcs11js.Mechanism {
    return {
      mechanism: pkcs11js.CKM_AES_GCM,
      parameter: {
        type: pkcs11js.CK_PARAMS_GCM,
        iv,
        ivBits: GCM_IV_BYTES * 8,
        aad: Buffer.concat([KEK_WRAP_DOMAIN, aad]),
        tagBits: GCM_TAG_BYTES * 8,
      } as pkcs11js.GcmParams,
    };
  }

  async wrap(dataKey: Uint8Array, aad: Uint8Array): Promise<WrappedDataKey> {
    const kekVersion = this.currentVersion;
    const kek = this.keks.get(kekVersion)!;
    const iv = randomBytes(GCM_IV_BYTES);
    const sealed = await this.withSession(async (s) => {
      this.lib.C_EncryptInit(s, this.gcm(iv, aad), kek);
      return this.lib.C_EncryptAsync(s, Buffer.from(dataKey), Buffer.alloc(dataKey.length + GCM_TAG_BYTES));
    }, 'wrap');
    return { kekVersion, wrapped: Buffer.concat([iv, sealed]) };
  }

  async unwrap(wrapped: WrappedDataKey, aad: Uint8Array): Promise<Buffer> {
    const kek = await this.handle(this.keks, 'KEK', wrapped.kekVersion);
    const w = wrapped.wrapped;
    if (w.length < GCM_IV_BYTES + GCM_TAG_BYTES) throw new SealedKeyInvalidError('wrapped key too short');
    try {
      return await this.withSession(async (s) => {
        this.lib.C_DecryptInit(s, this.gcm(w.subarray(0, GCM_IV_BYTES), aad), kek);
        return this.lib.C_DecryptAsync(s, w.subarray(GCM_IV_BYTES), Buffer.alloc(w.length));
      });
    } catch (error) {
      const rv = (error as { code?: number }).code;
      if (
        rv === pkcs11js.CKR_ENCRYPTED_DATA_INVALID ||
        rv === pkcs11js.CKR_ENCRYPTED_DATA_LEN_RANGE ||
        // SoftHSM2 reports a GCM tag mismatch as a general error.
        rv === pkcs11js.CKR_GENERAL_ERROR
      ) {
        throw new SealedKeyInvalidError('wrapped data key does not authenticate', {
          kekVersion: wrapped.kekVersion,
        });
      }
      throw p11Error('PKCS#11 unwrap failed', error);
    }
  }

  async hmac(
    data: Uint8Array,
    version: number = this.pinKeyVersion,
  ): Promise<{ version: number; mac: Buffer }> {
    const key = await this.handle(this.pinKeys, 'PIN key', version);
    const mac = await this.withSession(async (s) => {
      this.lib.C_SignInit(s, { mechanism: pkcs11js.CKM_SHA256_HMAC }, key);
      return this.lib.C_SignAsync(s, Buffer.from(data), Buffer.alloc(HMAC_BYTES));
    }, 'hmac');
    return { version, mac };
  }

  async rotate(): Promise<number> {
    return this.withSession((s) => {
      this.scan(s);
      const version = Math.max(0, ...this.keks.keys()) + 1;
      this.keks.set(version, this.generateKek(s, version));
      return Promise.resolve(version);
    });
  }

  async rotatePinKey(): Promise<number> {
    return this.withSession((s) => {
      this.scan(s);
      const version = Math.max(0, ...this.pinKeys.keys()) + 1;
      this.pinKeys.set(version, this.generatePinKey(s, version));
      return Promise.resolve(version);
    });
  }

  async retire(version: number): Promise<void> {
    checkRetirable('KEK', version, this.currentVersion, this.versions);
    await this.destroy(this.keks, version);
  }

  async retirePinKey(version: number): Promise<void> {
    checkRetirable('PIN key', version, this.pinKeyVersion, this.pinKeyVersions);
    await this.destroy(this.pinKeys, version);
  }

  private async destroy(keys: Map<number, Handle>, version: number): Promise<void> {
    const handle = keys.get(version)!;
    await this.withSession((s) => {
      this.call('C_DestroyObject', () => this.lib.C_DestroyObject(s, handle));
      return Promise.resolve();
    });
    keys.delete(version);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Closing the application's last session on the token also logs it out.
    for (const s of this.sessions) {
      try {
        this.lib.C_CloseSession(s);
      } catch {
        // Already closed by the token.
      }
    }
    this.sessions.length = 0;
    this.idle.length = 0;
    releaseModule(this.options.modulePath);
    return Promise.resolve();
  }

  /** The object of `version`, rescanning the token once if another node created it. */
  private async handle(keys: Map<number, Handle>, what: string, version: number): Promise<Handle> {
    if (!keys.has(version)) await this.withSession((s) => Promise.resolve(this.scan(s)));
    const handle = (what === 'KEK' ? this.keks : this.pinKeys).get(version);
    if (!handle) throw new KeyProviderError(`unknown or retired ${what} version`, { version });
    return handle;
  }

  /** Runs `fn` with a session of the pool to itself; errors become KeyProviderErrors. */
  private async withSession<T>(fn: (session: Handle) => Promise<T>, operation?: string): Promise<T> {
    if (this.closed) throw new KeyProviderError('the PKCS#11 provider is closed');
    const session = this.idle.pop() ?? (await new Promise<Handle>((resolve) => this.waiters.push(resolve)));
    try {
      return await fn(session);
    } catch (error) {
      throw operation ? p11Error(`PKCS#11 ${operation} failed`, error) : error;
    } finally {
      const next = this.waiters.shift();
      if (next) next(session);
      else this.idle.push(session);
    }
  }

  private call<T>(name: string, fn: () => T): T {
    try {
      return fn();
    } catch (error) {
      throw p11Error(`${name} failed`, error);
    }
  }
}

function p11Error(message: string, error: unknown, context: Record<string, string> = {}): Error {
  if (error instanceof KeyProviderError || error instanceof SealedKeyInvalidError) return error;
  // pkcs11js messages are the CKR_ name (e.g. CKR_PIN_INCORRECT): safe to report.
  const rv = error instanceof Error ? (error.message.split(/[\s:]/)[0] ?? 'unknown') : 'unknown';
  return new KeyProviderError(message, { ...context, rv }, { cause: error });
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
