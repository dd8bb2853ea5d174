/**
 * The card server's tables as Kysely sees them. One definition serves SQLite and PostgreSQL:
 * byte strings are `Buffer` (SQLite BLOB, PostgreSQL bytea), times are ISO 8601 UTC strings
 * (`2026-01-02T03:04:05.678Z`, which sort as text), JSON is stored as text.
 *
 * The DDL lives in `migrations.ts`; a change to a table is a new migration plus a change here.
 */
import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely';

/** A column the database fills on insert when the value is left out. */
type Defaulted<T> = ColumnType<T, T | undefined, T>;

export interface SchemaMigrationsTable {
  version: number;
  name: string;
  applied_at: string;
}

export interface TenantsTable {
  id: string;
  name: string;
  created_at: string;
}

/** A person as the identity provider names them: (issuer, subject) is unique. */
export interface UsersTable {
  id: string;
  tenant_id: string;
  issuer: string;
  subject: string;
  created_at: string;
}

export type DeviceStatus = 'pending' | 'approved';

/** A desktop that holds a device key (proof of possession on every connection). */
export interface DevicesTable {
  id: string;
  user_id: string;
  /** SubjectPublicKeyInfo, DER. */
  public_key_spki: Buffer;
  /** Base64url SHA-256 of `public_key_spki`; unique. */
  thumbprint: string;
  name: string;
  status: DeviceStatus;
  created_at: string;
  approved_at: string | null;
}

export interface CardsTable {
  id: string;
  tenant_id: string;
  user_id: string;
  label: string;
  /** JSON text: the card's profile (which slots, algorithms, objects it was provisioned with). */
  profile: string;
  /** 32-bit serial (Yubico GET SERIAL). */
  serial: number;
  /** 16 bytes (CHUID GUID). */
  guid: Buffer;
  /** PIN verifier (`server/keys/pin-verifier.ts`), never the PIN. */
  pin_verifier: Buffer;
  pin_retries_remaining: number;
  pin_retries_limit: number;
  puk_verifier: Buffer;
  puk_retries_remaining: number;
  puk_retries_limit: number;
  mgmt_algorithm: string;
  /** Management key sealed with AES-256-GCM under a data key (`server/keys/sealing.ts`). */
  mgmt_sealed: Buffer;
  /** That data key wrapped by the KEK of version `mgmt_kek_version`. */
  mgmt_wrapped_key: Buffer;
  mgmt_kek_version: number;
  /** Bound into the seal's AAD; changes whenever the management key is replaced. */
  mgmt_key_version: number;
  /** Bumped by every claim; every write of a session is fenced on it. */
  session_epoch: Defaulted<number>;
  /** The session holding the card since the last claim, if any. */
  session_id: string | null;
  /** Bumped by every fenced write: the card's state version. */
  version: Defaulted<number>;
  created_at: string;
  updated_at: string;
  /** 1: made with no PIN known to anyone; the user sets the first one after a fresh sign-in. */
  pin_unset: Defaulted<number>;
}

/** A card's earlier PINs, as PIN verifiers (never the PIN), for the profile's `pin.history`. */
export interface PinHistoryTable {
  card_id: string;
  seq: number;
  verifier: Buffer;
  replaced_at: string;
}

/** PIV data objects by BER-TLV tag; `value` is the content of tag 53. */
export interface CardObjectsTable {
  card_id: string;
  tag: number;
  value: Buffer;
  updated_at: string;
}

export interface CardKeysTable {
  card_id: string;
  /** PIV key reference (0x9A, 0x9C, 0x9D, 0x9E, 0x82..0x95). */
  slot: number;
  algorithm: string;
  public_key_spki: Buffer;
  /** PKCS#8 private key sealed with AES-256-GCM under a data key. */
  sealed_private_key: Buffer;
  /** The data key wrapped by the KEK of version `kek_version`. */
  wrapped_data_key: Buffer;
  kek_version: number;
  /** Bound into the seal's AAD; the card's state version when this key was written. */
  key_version: number;
  pin_policy: string;
  touch_policy: string;
  origin: string;
  created_at: string;
  updated_at: string;
}

export interface SessionsTable {
  id: string;
  card_id: string;
  user_id: string | null;
  device_id: string | null;
  /** The card's session epoch this session got when it claimed the card. */
  epoch: number;
  created_at: string;
  ended_at: string | null;
}

/** Responses of commands already applied, for exactly-once replays after a reconnect. */
export interface AppliedCommandsTable {
  session_id: string;
  seq: number;
  card_id: string;
  response: Buffer;
  created_at: string;
}

export interface AuditLogTable {
  id: number;
  created_at: string;
  actor: string;
  event_type: string;
  card_id: string | null;
  /** Canonical JSON text (sorted keys); hashed exactly as stored. */
  details: string;
  prev_hash: Buffer;
  hash: Buffer;
}

/** One row (id 1): the chain's last id and hash. Locking it serializes appends. */
export interface AuditChainHeadTable {
  id: number;
  last_id: number;
  last_hash: Buffer;
}

/**
 * An issuing CA whose private key is an object inside the PKCS#11 token (server/keys/token-keys.ts);
 * its issuing_cas row then holds no sealed key (empty blobs, kek_version 0).
 */
export interface IssuingCaTokenKeysTable {
  ca_id: string;
  /** The key pair's CKA_LABEL. */
  key_label: string;
  /** The key pair's CKA_ID (random, so a label reused later names another pair). */
  key_id: Buffer;
  created_at: string;
}

/** A CA that issues the cards' certificates (server/ca/); its key sealed like a card key, or in the token. */
export interface IssuingCasTable {
  /** `default`: the one issuing CA of this server. */
  id: string;
  /** The CA certificate, DER. */
  certificate: Buffer;
  /**
   * PKCS#8 private key sealed with AES-256-GCM under a data key (`server/keys/sealing.ts`); empty
   * (and kek_version 0) when the key is in the PKCS#11 token (`issuing_ca_token_keys`).
   */
  sealed_private_key: Buffer;
  wrapped_data_key: Buffer;
  kek_version: number;
  key_version: number;
  /** `generated` inside the server, or `imported` by the administrator. */
  origin: string;
  /** The CRL distribution point written into every certificate it issues. */
  crl_url: string;
  /** The number of the last CRL issued (RFC 5280 section 5.2.3); 0 before the first. */
  crl_number: Defaulted<number>;
  /** The current CRL, DER; null before the first. */
  crl: Buffer | null;
  created_at: string;
}

/** Every certificate an issuing CA signed, for revocation and the CRL. */
export interface IssuedCertificatesTable {
  /** The certificate's serial number, lower-case hex without leading zero bytes. */
  serial: string;
  ca_id: string;
  /** The card and slot it was written to (null once erased cards are no longer tracked). */
  card_id: string | null;
  slot: number | null;
  /** Subject DN as text, for the administrator. */
  subject: string;
  not_after: string;
  issued_at: string;
  revoked_at: string | null;
  /** RFC 5280 section 5.3.1 reason name (`superseded`, `cessationOfOperation`, ...). */
  revocation_reason: string | null;
}

/**
 * A key management (9D) key archived for recovery (server/archival/): its PKCS#8 in a CMS
 * EnvelopedData encrypted to the recovery certificate, which the server cannot open.
 */
export interface ArchivedKeysTable {
  id: string;
  card_id: string;
  /**
   * Where the key is now: 0x9D, or the retired slot (0x82..0x95) renewal moved it to; null when
   * an enrollment replaced it (the key is on the card no more). An erased card's keep the last.
   */
  slot: number | null;
  /** SHA-256 of the key's SubjectPublicKeyInfo, hex: finds the archive when the key moves. */
  public_key_sha256: string;
  /** The certificate made for the key with this archive (lower-case hex serial), if any. */
  certificate_serial: string | null;
  certificate_sha256: string | null;
  /** SHA-256 of the recovery certificate (DER) the envelope is encrypted to, hex. */
  recipient_sha256: string;
  /** ContentInfo(EnvelopedData), DER. */
  envelope: Buffer;
  created_at: string;
}

export interface Database {
  schema_migrations: SchemaMigrationsTable;
  tenants: TenantsTable;
  users: UsersTable;
  devices: DevicesTable;
  cards: CardsTable;
  card_objects: CardObjectsTable;
  card_keys: CardKeysTable;
  sessions: SessionsTable;
  applied_commands: AppliedCommandsTable;
  audit_log: AuditLogTable;
  audit_chain_head: AuditChainHeadTable;
  issuing_cas: IssuingCasTable;
  issuing_ca_token_keys: IssuingCaTokenKeysTable;
  issued_certificates: IssuedCertificatesTable;
  pin_history: PinHistoryTable;
  archived_keys: ArchivedKeysTable;
}

export type CardRow = Selectable<CardsTable>;
export type NewCardRow = Insertable<CardsTable>;
export type CardUpdate = Updateable<CardsTable>;
export type CardKeyRow = Selectable<CardKeysTable>;
export type DeviceRow = Selectable<DevicesTable>;
export type UserRow = Selectable<UsersTable>;
export type TenantRow = Selectable<TenantsTable>;
export type SessionRow = Selectable<SessionsTable>;
export type AuditLogRow = Selectable<AuditLogTable>;
