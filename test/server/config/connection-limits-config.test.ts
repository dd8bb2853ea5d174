/**
 * The socket limits in the server config: defaults, ranges, and maxSockets following
 * maxConnections unless set (and refused when set below it).
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigError, loadServerConfig } from '../../../server/config/server-config.js';

describe('server config: socket limits', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-config-'));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const load = async (limits: Record<string, unknown>) => {
    const file = path.join(dir, 'server.json');
    await writeFile(file, JSON.stringify({ dataDir: dir, limits }));
    return { file, load: () => loadServerConfig({ config: file }, {}) };
  };

  it('has safe defaults', async () => {
    const { limits } = (await load({})).load();
    assert.equal(limits.maxSockets, 11_000);
    assert.equal(limits.maxSocketsPerAddress, 256);
    assert.equal(limits.tlsHandshakeTimeoutSeconds, 10);
    assert.equal(limits.headersTimeoutSeconds, 10);
    assert.equal(limits.socketIdleTimeoutSeconds, 20);
  });

  it('keeps maxSockets 1000 above maxConnections unless it is set', async () => {
    assert.equal((await load({ maxConnections: 50_000 })).load().limits.maxSockets, 51_000);
    assert.equal(
      (await load({ maxConnections: 50_000, maxSockets: 50_000 })).load().limits.maxSockets,
      50_000,
    );
  });

  it('refuses maxSockets below maxConnections, naming the key and the file', async () => {
    const { file, load: read } = await load({ maxConnections: 100, maxSockets: 99 });
    assert.throws(read, (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.code, 'ERR_CONFIG_INVALID');
      assert.equal(
        e.message,
        `${file}: setting "limits.maxSockets" must be at least limits.maxConnections (100)`,
      );
      return true;
    });
  });

  it('refuses values out of range', async () => {
    for (const [key, bad] of [
      ['maxSockets', 0],
      ['maxSocketsPerAddress', 0],
      ['tlsHandshakeTimeoutSeconds', 0],
      ['tlsHandshakeTimeoutSeconds', 121],
      ['headersTimeoutSeconds', 301],
      ['socketIdleTimeoutSeconds', 0],
      ['socketIdleTimeoutSeconds', 1.5],
    ] as const) {
      const { file, load: read } = await load({ [key]: bad });
      assert.throws(read, (e: unknown) => {
        assert.ok(e instanceof ConfigError, `${key}=${bad}`);
        assert.ok(
          e.message.startsWith(`${file}: setting "limits.${key}" must be a whole number from`),
          e.message,
        );
        return true;
      });
    }
  });
});
