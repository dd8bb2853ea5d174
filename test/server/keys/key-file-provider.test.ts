import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openKeyFileProvider, KEY_FILE_FORMAT } from '../../../server/keys/key-file-provider.js';

function hasCode(code: string) {
  return (e: Error & { code?: string }) => {
    assert.equal(e.code, code);
    return true;
  };
}

describe('key file provider', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-keyfile-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates a private file with versioned 256-bit keys on first start', async () => {
    const path = join(dir, 'new', 'keys.json');
    const provider = await openKeyFileProvider(path);
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    assert.equal((await stat(join(dir, 'new'))).mode & 0o777, 0o700);
    assert.equal(provider.kind, 'keyfile');
    assert.equal(provider.currentVersion, 1);
    assert.equal(provider.pinKeyVersion, 1);
    const content = JSON.parse(await readFile(path, 'utf8')) as { format: string; kek: { key: string }[] };
    assert.equal(content.format, KEY_FILE_FORMAT);
    assert.equal(Buffer.from(content.kek[0]!.key, 'base64').length, 32);
    await provider.close();

    // A second start uses the same keys.
    const again = await openKeyFileProvider(path);
    const mac1 = (await again.hmac(Buffer.from('x'))).mac;
    const provider2 = await openKeyFileProvider(path);
    assert.deepEqual((await provider2.hmac(Buffer.from('x'))).mac, mac1);
  });

  it('refuses a file that group or others may read, and a symlink', async () => {
    const path = join(dir, 'loose.json');
    await (await openKeyFileProvider(path)).close();
    for (const mode of [0o640, 0o604, 0o660, 0o644]) {
      await chmod(path, mode);
      await assert.rejects(openKeyFileProvider(path), hasCode('ERR_KEY_FILE_INSECURE'));
    }
    await chmod(path, 0o600);
    await (await openKeyFileProvider(path)).close();
    const link = join(dir, 'link.json');
    await symlink(path, link);
    await assert.rejects(openKeyFileProvider(link), hasCode('ERR_KEY_FILE_INSECURE'));
  });

  it('refuses a missing file when told not to create one, and a malformed one', async () => {
    await assert.rejects(
      openKeyFileProvider(join(dir, 'absent.json'), { create: false }),
      hasCode('ERR_KEY_PROVIDER'),
    );
    const bad = join(dir, 'bad.json');
    await writeFile(
      bad,
      JSON.stringify({ format: KEY_FILE_FORMAT, kek: [{ version: 1, key: 'AAAA' }], pinKey: [] }),
      { mode: 0o600 },
    );
    await assert.rejects(openKeyFileProvider(bad), hasCode('ERR_KEY_PROVIDER'));
  });

  it('wraps with AAD: the wrong AAD or a flipped bit does not unwrap', async () => {
    const provider = await openKeyFileProvider(join(dir, 'wrap.json'));
    const dataKey = randomBytes(32);
    const aad = Buffer.from('card 1, slot 9a');
    const wrapped = await provider.wrap(dataKey, aad);
    assert.equal(wrapped.kekVersion, 1);
    assert.deepEqual(await provider.unwrap(wrapped, aad), dataKey);
    await assert.rejects(
      provider.unwrap(wrapped, Buffer.from('card 2, slot 9a')),
      hasCode('ERR_SEALED_KEY_INVALID'),
    );
    const flipped = Buffer.from(wrapped.wrapped);
    flipped[20]! ^= 1;
    await assert.rejects(
      provider.unwrap({ ...wrapped, wrapped: flipped }, aad),
      hasCode('ERR_SEALED_KEY_INVALID'),
    );
  });

  it('rotates: new wraps use the new version, old ones unwrap until retired; numbers are never reused', async () => {
    const path = join(dir, 'rotate.json');
    const provider = await openKeyFileProvider(path);
    const aad = Buffer.from('a');
    const old = await provider.wrap(randomBytes(32), aad);
    assert.equal(await provider.rotate(), 2);
    assert.equal(provider.currentVersion, 2);
    assert.deepEqual(provider.versions, [1, 2]);
    assert.equal((await provider.wrap(randomBytes(32), aad)).kekVersion, 2);
    await provider.unwrap(old, aad);
    await assert.rejects(provider.retire(2), hasCode('ERR_KEY_PROVIDER'));
    await provider.retire(1);
    assert.deepEqual(provider.versions, [2]);
    await assert.rejects(provider.unwrap(old, aad), hasCode('ERR_KEY_PROVIDER'));
    assert.equal((await stat(path)).mode & 0o777, 0o600);
    const file = JSON.parse(await readFile(path, 'utf8')) as { kek: { version: number; key?: string }[] };
    assert.deepEqual(
      file.kek.map((k) => [k.version, k.key !== undefined]),
      [
        [1, false],
        [2, true],
      ],
    );
    assert.equal(await provider.rotate(), 3);
  });

  it('another process sees a rotation when it meets the new version', async () => {
    const path = join(dir, 'shared.json');
    const server = await openKeyFileProvider(path);
    const cli = await openKeyFileProvider(path);
    await cli.rotate();
    const wrapped = await cli.wrap(randomBytes(32), Buffer.from('x'));
    assert.equal(wrapped.kekVersion, 2);
    assert.equal(server.currentVersion, 1);
    await server.unwrap(wrapped, Buffer.from('x'));
    assert.equal(server.currentVersion, 2);
  });

  it('keeps PIN key versions apart from KEK versions', async () => {
    const provider = await openKeyFileProvider(join(dir, 'pin.json'));
    const v1 = await provider.hmac(Buffer.from('data'));
    assert.equal(await provider.rotatePinKey(), 2);
    assert.equal(provider.currentVersion, 1);
    const v2 = await provider.hmac(Buffer.from('data'));
    assert.equal(v2.version, 2);
    assert.notDeepEqual(v2.mac, v1.mac);
    assert.deepEqual((await provider.hmac(Buffer.from('data'), 1)).mac, v1.mac);
    await provider.retirePinKey(1);
    await assert.rejects(provider.hmac(Buffer.from('data'), 1), hasCode('ERR_KEY_PROVIDER'));
  });
});
