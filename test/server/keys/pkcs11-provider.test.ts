import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import pkcs11js from 'pkcs11js';
import { openPkcs11Provider } from '../../../server/keys/pkcs11-provider.js';
import { openKeyFileProvider } from '../../../server/keys/key-file-provider.js';
import { createSoftHsmToken, type SoftHsmToken } from '../../support/softhsm.js';

function hasCode(code: string) {
  return (e: Error & { code?: string }) => {
    assert.equal(e.code, code);
    return true;
  };
}

/** Reads the attributes of cardlink's key objects with a separate PKCS#11 instance. */
function inspectToken(
  token: SoftHsmToken,
): { label: string; sensitive: boolean; extractable: boolean; valueReadable: boolean }[] {
  const lib = new pkcs11js.PKCS11();
  lib.load(token.modulePath);
  lib.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK });
  try {
    const slot = lib
      .C_GetSlotList(true)
      .find((s) => lib.C_GetTokenInfo(s).label.trimEnd() === token.tokenLabel)!;
    const session = lib.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION);
    lib.C_Login(session, pkcs11js.CKU_USER, token.pin);
    lib.C_FindObjectsInit(session, [{ type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY }]);
    const handles = lib.C_FindObjects(session, 100);
    lib.C_FindObjectsFinal(session);
    return handles.map((h) => {
      const [label, sensitive, extractable] = lib.C_GetAttributeValue(session, h, [
        { type: pkcs11js.CKA_LABEL },
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
      ]);
      let valueReadable = true;
      try {
        lib.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_VALUE }]);
      } catch {
        valueReadable = false;
      }
      return {
        label: (label!.value as Buffer).toString(),
        sensitive: (sensitive!.value as Buffer)[0] === 1,
        extractable: (extractable!.value as Buffer)[0] === 1,
        valueReadable,
      };
    });
  } finally {
    lib.C_Finalize();
    lib.close();
  }
}

describe('PKCS#11 provider on SoftHSM2', () => {
  it('generates a non-extractable KEK and PIN key on first start', async () => {
    const token = await createSoftHsmToken();
    const provider = await openPkcs11Provider({
      modulePath: token.modulePath,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
    });
    assert.equal(provider.kind, 'pkcs11');
    assert.equal(provider.currentVersion, 1);
    assert.equal(provider.pinKeyVersion, 1);
    await provider.close();

    const objects = inspectToken(token).sort((a, b) => a.label.localeCompare(b.label));
    assert.deepEqual(
      objects.map((o) => o.label),
      ['cardlink-kek-v1', 'cardlink-pin-v1'],
    );
    for (const o of objects) {
      assert.equal(o.sensitive, true);
      assert.equal(o.extractable, false);
      assert.equal(o.valueReadable, false, `${o.label} value cannot be read out`);
    }
  });

  it('wraps and unwraps with AAD (AES-GCM in the token), concurrently', async () => {
    const token = await createSoftHsmToken();
    const provider = await openPkcs11Provider({
      modulePath: token.modulePath,
      slotId: token.slotId,
      pin: token.pin,
      sessions: 3,
    });
    try {
      const items = Array.from({ length: 48 }, (_, i) => ({
        key: randomBytes(32),
        aad: Buffer.from(`card-${i}`),
      }));
      const wrapped = await Promise.all(items.map((it) => provider.wrap(it.key, it.aad)));
      const unwrapped = await Promise.all(wrapped.map((w, i) => provider.unwrap(w, items[i]!.aad)));
      unwrapped.forEach((k, i) => assert.deepEqual(k, items[i]!.key));
      const macs = await Promise.all(items.map((it) => provider.hmac(it.aad)));
      assert.deepEqual(macs[0], await provider.hmac(items[0]!.aad));
      assert.equal(macs[0]!.mac.length, 32);

      await assert.rejects(provider.unwrap(wrapped[0]!, items[1]!.aad), hasCode('ERR_SEALED_KEY_INVALID'));
      const flipped = Buffer.from(wrapped[0]!.wrapped);
      flipped[flipped.length - 1]! ^= 1;
      await assert.rejects(
        provider.unwrap({ ...wrapped[0]!, wrapped: flipped }, items[0]!.aad),
        hasCode('ERR_SEALED_KEY_INVALID'),
      );
      // The session pool survived the failures.
      assert.deepEqual(await provider.unwrap(wrapped[1]!, items[1]!.aad), items[1]!.key);
    } finally {
      await provider.close();
    }
  });

  it('rotates to a new key object, retires the old one; a second instance finds new versions', async () => {
    const token = await createSoftHsmToken();
    const options = { modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: token.pin };
    const a = await openPkcs11Provider(options);
    const b = await openPkcs11Provider(options);
    try {
      const aad = Buffer.from('aad');
      const old = await a.wrap(randomBytes(32), aad);
      assert.equal(await a.rotate(), 2);
      const fresh = await a.wrap(randomBytes(32), aad);
      assert.equal(fresh.kekVersion, 2);
      await b.unwrap(fresh, aad); // b rescans the token for version 2
      assert.deepEqual(b.versions, [1, 2]);
      await a.unwrap(old, aad);
      await assert.rejects(a.retire(2), hasCode('ERR_KEY_PROVIDER'));
      await a.retire(1);
      await assert.rejects(a.unwrap(old, aad), hasCode('ERR_KEY_PROVIDER'));
      assert.equal(await a.rotatePinKey(), 2);
      assert.equal((await a.hmac(aad)).version, 2);
    } finally {
      await a.close();
      await b.close();
    }
    assert.deepEqual(
      inspectToken(token)
        .map((o) => o.label)
        .sort(),
      ['cardlink-kek-v2', 'cardlink-pin-v1', 'cardlink-pin-v2'],
    );
  });

  it('fails a wrong PIN without revealing it, and an unknown token', async () => {
    const token = await createSoftHsmToken();
    const wrongPin = `${token.pin}9`;
    await assert.rejects(
      openPkcs11Provider({ modulePath: token.modulePath, tokenLabel: token.tokenLabel, pin: wrongPin }),
      (e: Error & { code?: string; context?: Record<string, unknown> }) => {
        assert.equal(e.code, 'ERR_KEY_PROVIDER');
        assert.equal(e.context?.rv, 'CKR_PIN_INCORRECT');
        assert.doesNotMatch(e.message + JSON.stringify(e.context), new RegExp(wrongPin));
        return true;
      },
    );
    await assert.rejects(
      openPkcs11Provider({ modulePath: token.modulePath, tokenLabel: 'no-such-token', pin: token.pin }),
      hasCode('ERR_KEY_PROVIDER'),
    );
    await assert.rejects(
      openPkcs11Provider({
        modulePath: token.modulePath,
        tokenLabel: token.tokenLabel,
        pin: token.pin,
        create: false,
      }),
      hasCode('ERR_KEY_PROVIDER'),
    );
  });

  it('uses the same wrapped-key format as the key file provider (iv || ciphertext || tag)', async () => {
    const token = await createSoftHsmToken();
    const provider = await openPkcs11Provider({
      modulePath: token.modulePath,
      tokenLabel: token.tokenLabel,
      pin: token.pin,
    });
    const { mkdtemp, rm } = await import('node:fs/promises');
    const { join } = await import('node:path');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(join(tmpdir(), 'cardlink-fmt-'));
    try {
      const local = await openKeyFileProvider(join(dir, 'k.json'));
      const a = await provider.wrap(randomBytes(32), Buffer.from('x'));
      const b = await local.wrap(randomBytes(32), Buffer.from('x'));
      assert.equal(a.wrapped.length, 12 + 32 + 16);
      assert.equal(b.wrapped.length, a.wrapped.length);
    } finally {
      await provider.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
