import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { signSnapshot, verifySnapshotSignature } from '../../../protocol/wire/snapshot-signature.js';

const binding = { sessionId: 'session-1', cardId: 'card-1', snapshot: Uint8Array.of(0x80, 0x01, 0x01) };

describe('snapshot signature', () => {
  for (const kind of ['rsa', 'ec'] as const) {
    const { privateKey, publicKey } =
      kind === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

    it(`${kind}: verifies for the same session, card and bytes`, () => {
      assert.ok(verifySnapshotSignature(publicKey, binding, signSnapshot(privateKey, binding)));
    });

    it(`${kind}: refuses another card, another session, changed bytes or another key`, () => {
      const signature = signSnapshot(privateKey, binding);
      assert.equal(verifySnapshotSignature(publicKey, { ...binding, cardId: 'card-2' }, signature), false);
      assert.equal(
        verifySnapshotSignature(publicKey, { ...binding, sessionId: 'session-2' }, signature),
        false,
      );
      assert.equal(
        verifySnapshotSignature(
          publicKey,
          { ...binding, snapshot: Uint8Array.of(0x80, 0x01, 0x02) },
          signature,
        ),
        false,
      );
      const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).publicKey;
      assert.equal(verifySnapshotSignature(other, binding, signature), false);
      assert.equal(verifySnapshotSignature(publicKey, binding, new Uint8Array(0)), false);
    });

    it(`${kind}: the length prefixes keep the fields apart ("ab"+"c" is not "a"+"bc")`, () => {
      const a = { ...binding, sessionId: 'ab', cardId: 'c' };
      const b = { ...binding, sessionId: 'a', cardId: 'bc' };
      assert.equal(verifySnapshotSignature(publicKey, b, signSnapshot(privateKey, a)), false);
    });
  }
});
