/**
 * The demo's state directory: what inspectDemoState accepts (nothing yet, or a complete state of
 * this version) and what it refuses with the fix (--reset), and that --reset removes only a
 * directory that carries the demo's marker.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CardlinkError } from '../../protocol/errors.js';
import {
  createDemoStateDir,
  DEMO_STATE_VERSION,
  demoPaths,
  ensureDemoDirectories,
  inspectDemoState,
  readSecretFile,
  removeDemoState,
  writeDemoState,
  writeSecretFile,
  type DemoPaths,
} from '../../demo/demo-state.js';

function refused(pattern: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof CardlinkError, String(e));
    assert.equal(e.code, 'ERR_DEMO_STATE');
    assert.match(e.message, pattern);
    return true;
  };
}

/** A complete state as a first run leaves it (the files inspectDemoState looks for). */
function completeState(paths: DemoPaths): void {
  createDemoStateDir(paths);
  ensureDemoDirectories(paths);
  writeSecretFile(paths.passwordFile, 'pw');
  writeSecretFile(paths.pinFile, '12345678');
  fs.writeFileSync(paths.idpKeysFile, '{}', { mode: 0o600 });
  fs.writeFileSync(path.join(paths.serverDir, 'cardlink.db'), '');
  fs.writeFileSync(path.join(paths.serverDir, 'kek.json'), '{}');
  writeDemoState(paths, {
    version: DEMO_STATE_VERSION,
    idpPort: 18180,
    serverPort: 18443,
    user: 'demo',
    cardId: '00000000-0000-4000-8000-000000000000',
    createdAt: new Date().toISOString(),
  });
}

describe('demo state directory', () => {
  let dir: string;
  let n = 0;
  const fresh = () => demoPaths(path.join(dir, `s${++n}`));

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-demo-state-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a missing or empty directory is fresh; a complete one is ready', () => {
    const paths = fresh();
    assert.deepEqual(inspectDemoState(paths), { kind: 'fresh' });
    fs.mkdirSync(paths.root);
    assert.deepEqual(inspectDemoState(paths), { kind: 'fresh' });
    completeState(paths);
    const status = inspectDemoState(paths);
    assert.equal(status.kind, 'ready');
    assert.equal(status.kind === 'ready' && status.state.serverPort, 18443);
    assert.equal(fs.statSync(paths.root).mode & 0o777, 0o700);
    assert.equal(fs.statSync(paths.secretsDir).mode & 0o777, 0o700);
  });

  it('a first run that stopped half-way (marker, no demo.json) is refused, naming --reset and the directory', () => {
    const paths = fresh();
    createDemoStateDir(paths);
    assert.throws(
      () => inspectDemoState(paths),
      refused(/is incomplete .*'cardlink demo --reset --state-dir .*s\d+'/),
    );
  });

  it('a state of another version, a damaged demo.json and a missing file are refused with the fix', () => {
    const paths = fresh();
    completeState(paths);
    const state = JSON.parse(fs.readFileSync(paths.stateFile, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(paths.stateFile, JSON.stringify({ ...state, version: DEMO_STATE_VERSION + 1 }));
    assert.throws(() => inspectDemoState(paths), refused(/another version of cardlink demo.*--reset/));
    fs.writeFileSync(paths.stateFile, '{"version":');
    assert.throws(() => inspectDemoState(paths), refused(/unreadable demo\.json/));
    fs.writeFileSync(paths.stateFile, JSON.stringify({ ...state, serverPort: 'x' }));
    assert.throws(() => inspectDemoState(paths), refused(/damaged demo\.json/));
    fs.writeFileSync(paths.stateFile, JSON.stringify(state));
    fs.rmSync(paths.pinFile);
    assert.throws(() => inspectDemoState(paths), refused(/is missing the card PIN \(secrets\/pin\)/));
  });

  it('a directory that is not the demo is neither used nor removed by --reset', () => {
    const paths = fresh();
    fs.mkdirSync(paths.root);
    fs.writeFileSync(path.join(paths.root, 'precious.txt'), 'keep me');
    assert.throws(() => inspectDemoState(paths), refused(/not a cardlink demo state directory/));
    assert.throws(() => removeDemoState(paths), refused(/--reset refused/));
    assert.equal(fs.readFileSync(path.join(paths.root, 'precious.txt'), 'utf8'), 'keep me');
  });

  it('--reset removes a demo directory whole', () => {
    const paths = fresh();
    completeState(paths);
    removeDemoState(paths);
    assert.equal(fs.existsSync(paths.root), false);
    removeDemoState(paths); // nothing there: fine
  });

  it('secrets are written 0600 and not read when others may read them', () => {
    const paths = fresh();
    completeState(paths);
    assert.equal(fs.statSync(paths.passwordFile).mode & 0o777, 0o600);
    assert.equal(readSecretFile(paths.passwordFile), 'pw');
    fs.chmodSync(paths.passwordFile, 0o644);
    assert.throws(() => readSecretFile(paths.passwordFile), refused(/chmod 600/));
  });

  it('a state directory too deep for a socket path gets a short runtime directory', () => {
    const deep = demoPaths(path.join(dir, 'x'.repeat(120)));
    assert.ok(path.join(deep.runtimeDir, 'control.sock').length <= 100, deep.runtimeDir);
    assert.equal(demoPaths(path.join(dir, 'short')).runtimeDir, path.join(dir, 'short', 'run'));
  });
});
