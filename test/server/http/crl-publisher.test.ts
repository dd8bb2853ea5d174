/**
 * The CRL on a plain-HTTP listener and its automatic re-signing (server/http/crl-publisher.ts,
 * docs/server-config.md `crl`): a real card server with `crl.httpPort`, the CRL fetched over
 * http:// and read by `openssl crl`, and re-signed only once fewer than `crl.resignBeforeHours`
 * are left of it.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { X509Crl } from '../../../apdu/piv/certificates/index.js';
import { initEmbeddedCa } from '../../../server/ca/issuing-ca.js';
import { startTestCardServer, type TestCardServer } from '../../support/card-server.js';

const IDP = { issuer: 'https://idp.invalid/', resource: 'https://cards.invalid/' };

describe('CRL over plain HTTP, re-signed before it runs out', () => {
  let dir: string;
  let server: TestCardServer;
  let base: string;

  const get = async (p: string, method = 'GET') => {
    const res = await fetch(`${base}${p}`, { method });
    return {
      status: res.status,
      type: res.headers.get('content-type') ?? '',
      body: Buffer.from(await res.arrayBuffer()),
    };
  };
  const crlText = (der: Buffer): string => {
    const file = path.join(dir, `crl-${Date.now()}.der`);
    fs.writeFileSync(file, der);
    return execFileSync('openssl', ['crl', '-inform', 'DER', '-in', file, '-noout', '-text'], {
      encoding: 'utf8',
    });
  };

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'cardlink-crl-http-'));
    server = await startTestCardServer(dir, IDP, { crl: { httpPort: 0, resignBeforeHours: 48 } });
    base = `http://127.0.0.1:${server.server.crl.httpPort}`;
  });
  after(async () => {
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('listens on loopback unless told otherwise, and serves only the CA documents', async () => {
    assert.deepEqual(server.config.crl.http, { host: '127.0.0.1', port: 0 });
    assert.equal((await get('/ca/crl')).status, 404, 'no CA yet');
    assert.equal((await get('/healthz')).status, 404, 'nothing but /ca/crl and /ca/cert');
    assert.equal((await get('/v1/session')).status, 404);
    assert.equal((await get('/ca/crl', 'POST')).status, 405);
  });

  it('serves the CA certificate and a CRL openssl reads, over http://', async () => {
    const { storage, kek } = server.resources;
    await initEmbeddedCa({ storage, kek, crlUrl: `${base}/ca/crl`, actor: 'admin:test' });
    const cert = await get('/ca/cert');
    assert.equal(cert.status, 200);
    assert.equal(cert.type, 'application/pkix-cert');
    // No CRL signed yet: the check signs the first one.
    const first = await server.server.crl.check();
    assert.ok(first !== undefined && first >= 1);
    const crl = await get('/ca/crl');
    assert.equal(crl.status, 200);
    assert.equal(crl.type, 'application/pkix-crl');
    assert.match(crlText(crl.body), new RegExp(`X509v3 CRL Number: *\\n *${first}\\b`));
  });

  it('re-signs only when fewer than crl.resignBeforeHours are left of the current CRL', async () => {
    const current = new X509Crl((await get('/ca/crl')).body);
    const nextUpdate = current.nextUpdate!.getTime();
    // 49 hours before nextUpdate: not due.
    assert.equal(await server.server.crl.check(new Date(nextUpdate - 49 * 3_600_000)), undefined);
    assert.deepEqual((await get('/ca/crl')).body, Buffer.from(current.rawData));
    // 47 hours before: due; the served CRL is the new one, valid 7 days from then.
    const now = new Date(nextUpdate - 47 * 3_600_000);
    const number = await server.server.crl.check(now);
    assert.ok(number !== undefined);
    const renewed = new X509Crl((await get('/ca/crl')).body);
    assert.match(crlText(Buffer.from(renewed.rawData)), new RegExp(`X509v3 CRL Number: *\\n *${number}\\b`));
    assert.ok(renewed.nextUpdate!.getTime() > nextUpdate, 'the new CRL runs longer');
    const audit = await server.resources.storage.db
      .selectFrom('audit_log')
      .select('actor')
      .where('actor', '=', 'server:crl-refresh')
      .execute();
    assert.ok(audit.length >= 1, 'the re-signing is audited as the server');
  });
});
