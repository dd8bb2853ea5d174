/**
 * The daemon's node settings (daemon/cli/daemon-process.ts) are applied by every launcher:
 * bin/cardlink is run with a `node` on PATH that records how it was started; the Windows logon entry
 * is read from install-scripts/windows/install.ps1 (no PowerShell here). The demo's daemon is checked
 * running, in test/integration/demo.test.ts.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  DAEMON_NODE_OPTIONS,
  DAEMON_UV_THREADPOOL_SIZE,
  daemonProcessEnvironment,
} from '../../../daemon/cli/daemon-process.js';

const REPO = fileURLToPath(new URL('../../../../', import.meta.url));
const LAUNCHER = path.join(REPO, 'bin', 'cardlink');

describe('the daemon process settings', () => {
  let dir: string;
  let record: string;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cardlink-daemon-process-'));
    record = path.join(dir, 'record');
    // A `node` that writes its arguments (one per line) and its UV_THREADPOOL_SIZE, then exits.
    fs.writeFileSync(
      path.join(dir, 'node'),
      `#!/bin/sh\n{ printf '%s\\n' "$@"; printf 'UV_THREADPOOL_SIZE=%s\\n' "\${UV_THREADPOOL_SIZE-unset}"; } > '${record}'\n`,
      { mode: 0o755 },
    );
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Runs bin/cardlink with `args` and the recording node; returns what node was given. */
  function launch(args: string[], env: NodeJS.ProcessEnv = {}): { argv: string[]; threadpool: string } {
    fs.rmSync(record, { force: true });
    const { UV_THREADPOOL_SIZE: _ignored, ...base } = process.env;
    const r = spawnSync(LAUNCHER, args, { env: { ...base, PATH: `${dir}:/usr/bin:/bin`, ...env } });
    assert.equal(r.status, 0, String(r.stderr));
    const lines = fs.readFileSync(record, 'utf8').trimEnd().split('\n');
    const last = lines.pop()!;
    return { argv: lines, threadpool: last.slice('UV_THREADPOOL_SIZE='.length) };
  }

  it('bin/cardlink starts the daemon with its node options and thread pool', () => {
    const { argv, threadpool } = launch(['daemon', '--config', '/x/daemon.json']);
    const main = path.join(REPO, 'dist', 'bin', 'main.js');
    const at = DAEMON_NODE_OPTIONS.length;
    assert.deepEqual(argv.slice(0, at), DAEMON_NODE_OPTIONS);
    assert.equal(path.resolve(argv[at]!), main);
    assert.deepEqual(argv.slice(at + 1), ['daemon', '--config', '/x/daemon.json']);
    assert.equal(threadpool, String(DAEMON_UV_THREADPOOL_SIZE));
  });

  it("keeps a thread pool size the environment sets, and leaves other commands on node's defaults", () => {
    assert.equal(launch(['daemon'], { UV_THREADPOOL_SIZE: '6' }).threadpool, '6');
    const server = launch(['server', '--help']);
    assert.equal(server.argv.filter((a) => a.startsWith('--v8')).length, 0, server.argv.join(' '));
    assert.equal(server.threadpool, 'unset');
    assert.equal(daemonProcessEnvironment({ UV_THREADPOOL_SIZE: '6' })['UV_THREADPOOL_SIZE'], '6');
    assert.equal(daemonProcessEnvironment({})['UV_THREADPOOL_SIZE'], String(DAEMON_UV_THREADPOOL_SIZE));
  });

  it("the Windows logon entry gives node the daemon's options", () => {
    const ps1 = fs.readFileSync(path.join(REPO, 'install-scripts', 'windows', 'install.ps1'), 'utf8');
    const entry = /^\$daemonEntry = "(.*)"$/m.exec(ps1);
    assert.ok(entry, 'install.ps1 defines $daemonEntry');
    assert.equal(entry[1], `$cmd ${DAEMON_NODE_OPTIONS.join(' ')} $mainJs daemon`);
  });
});
