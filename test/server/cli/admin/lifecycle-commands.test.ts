/**
 * `cardlink admin renew` as an administrator runs it: the built CLI as a child process on a
 * SQLite data directory. New keys retire the old 9D key to slot 82 (Key History 1), `--keys same`
 * retires nothing, `--due` finds nothing inside the window of a fresh card, and a call without a
 * card id or --due is a usage error; a CRL that cannot be signed after the renewal committed gives
 * exit status 0 with a warning (and `crlError` in --json). With `--ca-command` an `openssl ca` directory renews a card it
 * enrolled: nothing revoked by the server, the replaced certificates named instead.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { envWithoutCardlinkSettings, runCardlink, type CliRun } from '../../../support/cli-run.js';
import { createOpensslCa, type OpensslCa } from '../../../support/openssl-ca.js';

const show = (r: CliRun) => `status ${r.status}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`;

interface Renewed {
  keys: string;
  slots: { slot: string; serial: string }[];
  revoked: string[];
  retiredTo?: string;
  keyHistoryOnCard?: number;
  notRevoked: string[];
}

/**
 * `cardlink admin` run as an administrator would, with the site in `<dir>/site`: `admin` returns
 * the run, `ok` its --json output once it exited 0.
 */
function adminCli(dirOf: () => string) {
  const admin = (args: string[]) =>
    runCardlink(['admin', ...args, '--data-dir', join(dirOf(), 'site')], {
      ...envWithoutCardlinkSettings(),
      XDG_STATE_HOME: join(dirOf(), 'state'),
    });
  const ok = async <T>(args: string[]): Promise<T> => {
    const r = await admin([...args, '--json']);
    assert.equal(r.status, 0, show(r));
    return JSON.parse(r.stdout) as T;
  };
  return { admin, ok };
}

describe('cardlink admin renew', () => {
  let dir: string;
  const { admin, ok } = adminCli(() => dir);
  let cardId: string;
  let firstSerials: string[];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-renew-cli-'));
    await ok(['ca', 'init', '--crl-url', 'http://127.0.0.1:8080/ca/crl']);
    const enrolled = await ok<{ cardId: string; slots: { serial: string }[] }>([
      'enroll',
      '--issuer',
      'https://idp.example',
      '--subject',
      'alice',
      '--tenant',
      'example',
      '--claim',
      'email=alice@example.com',
      '--claim',
      'name=Alice Example',
    ]);
    cardId = enrolled.cardId;
    firstSerials = enrolled.slots.map((s) => s.serial);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('renews with new keys and retires the old key management key to 82', async () => {
    const r = await ok<Renewed>(['renew', cardId]);
    assert.equal(r.keys, 'new');
    assert.equal(r.retiredTo, '82');
    assert.equal(r.keyHistoryOnCard, 1);
    assert.deepEqual([...r.revoked].sort(), [...firstSerials].sort());
    assert.deepEqual(
      r.slots.map((s) => s.slot),
      ['9A', '9C', '9D', '9E'],
    );
  });

  it('--keys same retires nothing; the text output says what happened', async () => {
    const r = await ok<Renewed>(['renew', cardId, '--keys', 'same']);
    assert.equal(r.keys, 'same');
    assert.equal(r.retiredTo, undefined);
    const text = await admin(['renew', cardId, '--keys', 'new']);
    assert.equal(text.status, 0, show(text));
    assert.match(text.stdout, /renewed \(new keys\)/);
    assert.match(text.stdout, /moved to slot 83 \(Key History: 2\)/);
  });

  it('--due renews nothing for certificates far from expiry; no card id nor --due is a usage error', async () => {
    assert.deepEqual(await ok<unknown[]>(['renew', '--due']), []);
    const usage = await admin(['renew']);
    assert.equal(usage.status, 64, show(usage));
    assert.match(usage.stderr, /give either a card id or --due/);
  });

  it('a CRL that cannot be signed after the renewal committed: exit status 0 and a warning', async () => {
    // The CRL's transaction fails (as an HSM or KEK error would): its CRL number cannot move.
    const db = new Database(join(dir, 'site', 'cardlink.db'));
    try {
      db.exec(`create trigger test_no_crl before update of crl_number on issuing_cas
        begin select raise(abort, 'test: the CRL cannot be signed'); end`);
    } finally {
      db.close();
    }
    const text = await admin(['renew', cardId, '--keys', 'same']);
    assert.equal(text.status, 0, show(text));
    assert.match(text.stdout, /superseded and revoked: 4 \(CRL -\)/);
    assert.match(
      text.stderr,
      /warning: card \S+ renewed; CRL not re-signed: run `cardlink admin ca crl` \(ERR_/,
    );
    const json = await admin(['renew', cardId, '--keys', 'same', '--json']);
    assert.equal(json.status, 0, show(json));
    const renewed = JSON.parse(json.stdout) as Renewed & { crlError?: { code: string } };
    assert.equal(renewed.revoked.length, 4);
    assert.match(renewed.crlError?.code ?? '', /^ERR_/);
    assert.match(json.stderr, /CRL not re-signed/, 'said to a person in --json mode too');
  });
});

describe('cardlink admin renew --ca-command', () => {
  let dir: string;
  let ca: OpensslCa;
  const { admin, ok } = adminCli(() => dir);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cardlink-renew-external-cli-'));
    ca = await createOpensslCa(dir);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('renews through the external CA, revokes nothing and names the replaced certificates', async () => {
    // No embedded CA at all: the external CA issues and renews.
    const enrolled = await ok<{ cardId: string; slots: { serial: string }[] }>([
      'enroll',
      '--issuer',
      'https://idp.example',
      '--subject',
      'alice',
      '--tenant',
      'example',
      '--claim',
      'name=Alice Example',
      '--ca-command',
      ca.wrapper,
    ]);
    const r = await ok<Renewed>(['renew', enrolled.cardId, '--ca-command', ca.wrapper]);
    assert.equal(r.keys, 'new');
    assert.equal(r.retiredTo, '82');
    assert.deepEqual(r.revoked, []);
    assert.deepEqual([...r.notRevoked].sort(), enrolled.slots.map((s) => s.serial).sort());
    assert.equal(await ca.issuedCount(), 8);

    const text = await admin(['renew', enrolled.cardId, '--keys', 'same', '--ca-command', ca.wrapper]);
    assert.equal(text.status, 0, show(text));
    assert.match(
      text.stdout,
      /replaced but NOT revoked \(the issuing CA keeps its own revocation; revoke them there\)/,
    );
    for (const s of r.slots) assert.ok(text.stdout.includes(s.serial), `names ${s.serial}`);

    assert.deepEqual(await ok<unknown[]>(['renew', '--due', '--ca-command', ca.wrapper]), []);
  });
});
