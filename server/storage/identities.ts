/**
 * Tenants, users (as the identity provider names them) and their devices.
 *
 * A device is registered `pending` with its public key and becomes `approved` by an explicit step
 * (an administrator, or the user from an already approved device); only approved devices may
 * open card sessions. The thumbprint (base64url SHA-256 of the SPKI) identifies the key.
 */
import { createHash, randomUUID } from 'node:crypto';
import { StorageError } from './errors.js';
import { asBuffer, nowIso } from './cards.js';
import type { DeviceRow, TenantRow, UserRow } from './schema.js';
import type { Queryable, Tx } from './storage.js';

export async function createTenant(tx: Tx, name: string, id: string = randomUUID()): Promise<TenantRow> {
  return tx.db
    .insertInto('tenants')
    .values({ id, name, created_at: nowIso() })
    .returningAll()
    .executeTakeFirstOrThrow();
}

export async function findTenant(q: Queryable, id: string): Promise<TenantRow | undefined> {
  return q.db.selectFrom('tenants').selectAll().where('id', '=', id).executeTakeFirst();
}

/**
 * The user for (issuer, subject), created in `tenantId` on first sight. A user found in another
 * tenant is an error, never a silent move.
 */
export async function ensureUser(
  tx: Tx,
  tenantId: string,
  issuer: string,
  subject: string,
): Promise<UserRow> {
  await tx.db
    .insertInto('users')
    .values({ id: randomUUID(), tenant_id: tenantId, issuer, subject, created_at: nowIso() })
    .onConflict((oc) => oc.columns(['issuer', 'subject']).doNothing())
    .execute();
  const user = await findUser(tx, issuer, subject);
  if (!user) throw new StorageError('user vanished after insert');
  if (user.tenant_id !== tenantId)
    throw new StorageError('user belongs to another tenant', { userId: user.id });
  return user;
}

export async function findUser(q: Queryable, issuer: string, subject: string): Promise<UserRow | undefined> {
  return q.db
    .selectFrom('users')
    .selectAll()
    .where('issuer', '=', issuer)
    .where('subject', '=', subject)
    .executeTakeFirst();
}

export async function findUserById(q: Queryable, userId: string): Promise<UserRow | undefined> {
  return q.db.selectFrom('users').selectAll().where('id', '=', userId).executeTakeFirst();
}

/** Base64url SHA-256 of a DER SubjectPublicKeyInfo. */
export function deviceThumbprint(publicKeySpki: Uint8Array): string {
  return createHash('sha256').update(publicKeySpki).digest('base64url');
}

export async function registerDevice(
  tx: Tx,
  device: { userId: string; publicKeySpki: Uint8Array; name: string },
): Promise<DeviceRow> {
  return tx.db
    .insertInto('devices')
    .values({
      id: randomUUID(),
      user_id: device.userId,
      public_key_spki: asBuffer(device.publicKeySpki),
      thumbprint: deviceThumbprint(device.publicKeySpki),
      name: device.name,
      status: 'pending',
      created_at: nowIso(),
      approved_at: null,
    })
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Approves a pending device; returns undefined when there is no such device. */
export async function approveDevice(tx: Tx, deviceId: string): Promise<DeviceRow | undefined> {
  return tx.db
    .updateTable('devices')
    .set({ status: 'approved', approved_at: nowIso() })
    .where('id', '=', deviceId)
    .where('status', '=', 'pending')
    .returningAll()
    .executeTakeFirst();
}

export async function findDevice(q: Queryable, deviceId: string): Promise<DeviceRow | undefined> {
  return q.db.selectFrom('devices').selectAll().where('id', '=', deviceId).executeTakeFirst();
}

export async function findDeviceByThumbprint(
  q: Queryable,
  thumbprint: string,
): Promise<DeviceRow | undefined> {
  return q.db.selectFrom('devices').selectAll().where('thumbprint', '=', thumbprint).executeTakeFirst();
}

export async function listDevices(q: Queryable, userId: string): Promise<DeviceRow[]> {
  return q.db.selectFrom('devices').selectAll().where('user_id', '=', userId).orderBy('created_at').execute();
}

export async function deleteDevice(tx: Tx, deviceId: string): Promise<boolean> {
  const result = await tx.db.deleteFrom('devices').where('id', '=', deviceId).executeTakeFirst();
  return result.numDeletedRows > 0n;
}
