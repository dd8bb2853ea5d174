/** `cardlink admin approve-device`: an administrator approves a pending device, audited. */
import { CardlinkError } from '../../protocol/errors.js';
import { AUDIT_EVENTS, appendAudit } from '../audit/audit-log.js';
import { approveDevice, findDevice, type Storage } from '../storage/index.js';
import { DEFAULT_ADMIN_ACTOR } from './admin-common.js';

/** No such device (`approve-device`). */
export class DeviceNotFoundError extends CardlinkError {
  constructor(deviceId: string) {
    super('ERR_DEVICE_NOT_FOUND', `no such device: ${deviceId}`, { deviceId });
    this.name = 'DeviceNotFoundError';
  }
}

export interface DeviceApproval {
  readonly deviceId: string;
  readonly userId: string;
  readonly name: string;
  readonly thumbprint: string;
  /** The device was approved before; nothing changed and nothing was audited. */
  readonly alreadyApproved: boolean;
}

/** Approves a pending device, audited in the same transaction. Approving it again is a no-op. */
export async function approveDeviceAsAdmin(options: {
  storage: Storage;
  deviceId: string;
  actor?: string;
}): Promise<DeviceApproval> {
  const { storage, deviceId } = options;
  return storage.transaction(async (tx) => {
    const approved = await approveDevice(tx, deviceId);
    if (!approved) {
      const existing = await findDevice(tx, deviceId);
      if (!existing) throw new DeviceNotFoundError(deviceId);
      return {
        deviceId,
        userId: existing.user_id,
        name: existing.name,
        thumbprint: existing.thumbprint,
        alreadyApproved: true,
      };
    }
    await appendAudit(tx, {
      actor: options.actor ?? DEFAULT_ADMIN_ACTOR,
      eventType: AUDIT_EVENTS.deviceApproved,
      details: { deviceId, userId: approved.user_id, thumbprint: approved.thumbprint, with: 'admin' },
    });
    return {
      deviceId,
      userId: approved.user_id,
      name: approved.name,
      thumbprint: approved.thumbprint,
      alreadyApproved: false,
    };
  });
}
