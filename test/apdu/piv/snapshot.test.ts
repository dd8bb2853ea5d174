/**
 * sameSnapshotContents (apdu/piv/snapshot.ts), what the daemon compares when a new session reopens
 * a card it has in the reader: the serial and the public containers count, the PIN's retry counter
 * does not; a snapshot through its encoding is the same as before.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  decodeSnapshot,
  encodeSnapshot,
  sameSnapshotContents,
  type CardSnapshot,
} from '../../../apdu/piv/snapshot.js';
import { OBJECT_TAG } from '../../../apdu/piv/objects/index.js';

const certificate = Uint8Array.of(0x70, 0x03, 0x30, 0x01, 0x00);
const base: CardSnapshot = {
  serial: 123456,
  pinRetries: { remaining: 3, limit: 3 },
  objects: new Map([
    [OBJECT_TAG.CHUID, Uint8Array.of(0x30, 0x01, 0x02)],
    [OBJECT_TAG.CERT_PIV_AUTHENTICATION, certificate],
  ]),
};
const withObjects = (entries: [number, Uint8Array][]): CardSnapshot => ({
  ...base,
  objects: new Map(entries),
});

describe('sameSnapshotContents', () => {
  it('is true for the same contents, through the encoding too, whatever the PIN counter says', () => {
    assert.ok(sameSnapshotContents(base, decodeSnapshot(encodeSnapshot(base))));
    assert.ok(sameSnapshotContents(base, { ...base, pinRetries: { remaining: 1, limit: 3 } }));
    assert.ok(sameSnapshotContents(base, { ...base, pinRetries: undefined }));
  });

  it('is false for another serial, a changed, added or missing container', () => {
    assert.equal(sameSnapshotContents(base, { ...base, serial: 123457 }), false);
    const changed = certificate.slice();
    changed[4] = 0x01;
    assert.equal(
      sameSnapshotContents(
        base,
        withObjects([
          [OBJECT_TAG.CHUID, base.objects.get(OBJECT_TAG.CHUID)!],
          [OBJECT_TAG.CERT_PIV_AUTHENTICATION, changed],
        ]),
      ),
      false,
    );
    assert.equal(
      sameSnapshotContents(base, withObjects([[OBJECT_TAG.CERT_PIV_AUTHENTICATION, certificate]])),
      false,
    );
    assert.equal(
      sameSnapshotContents(
        base,
        withObjects([...base.objects, [OBJECT_TAG.CERT_KEY_MANAGEMENT, certificate]]),
      ),
      false,
    );
    assert.equal(
      sameSnapshotContents(
        base,
        withObjects([
          [OBJECT_TAG.CHUID, base.objects.get(OBJECT_TAG.CHUID)!],
          [OBJECT_TAG.CERT_PIV_AUTHENTICATION, certificate.subarray(0, 4)],
        ]),
      ),
      false,
    );
  });
});
