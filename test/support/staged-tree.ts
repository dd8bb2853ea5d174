/**
 * A staged tree (install-scripts/linux/stage.sh) for the install tests, made once per build of the
 * checkout and shared: staging copies node_modules and runs `npm prune`, ~40 s per variant on this
 * machine under load, and linux-install and linux-deb both need the client tree (node --test runs
 * them in parallel, as separate processes). The tree lives under STAGE_CACHE_DIR, named by the
 * variant, the checkout and a key over what stage.sh reads (the sizes and times of the built files,
 * the dependencies' lock file, the scripts); a newer build gets a new key and the checkout's older
 * trees of that variant are removed. A lock file keeps two processes from staging the same tree at once.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { run, succeeded } from './debian-root.js';
import { REPO_ROOT } from './pcscd.js';

/** Where staged trees are kept between runs (beside the Debian root's cached tarball). */
export const STAGE_CACHE_DIR = path.join(
  os.tmpdir() === '/tmp' ? '/var/tmp' : os.tmpdir(),
  'cardlink-stage-cache',
);
/** How long a process waits for another one's staging before giving up. */
const STAGE_WAIT_MS = 10 * 60_000;
/** A lock older than this belongs to a process that died while staging. */
const STALE_LOCK_MS = 15 * 60_000;
/** What stage.sh reads: its output changes only when one of these does. */
const INPUTS = [
  'dist',
  'bin',
  'install-scripts',
  'daemon/ifd-handler/build',
  'daemon/ifd-handler/reader.conf.in',
  'package.json',
  'package-lock.json',
  'node_modules/.package-lock.json',
  'docs/install.md',
];

/** What stage.sh leaves out of dist/ (tests, benchmarks, fuzzers, source maps): no part of the key. */
const NOT_STAGED = /^dist\/(test|bench|fuzz)(\/|$)|\.map$/;

function addStats(hash: ReturnType<typeof createHash>, p: string): void {
  if (NOT_STAGED.test(path.relative(REPO_ROOT, p))) return;
  let st: fs.Stats;
  try {
    st = fs.statSync(p);
  } catch {
    hash.update(`${p} missing\n`);
    return;
  }
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(p).sort()) addStats(hash, path.join(p, name));
  } else {
    hash.update(`${p} ${st.size} ${st.mtimeMs}\n`);
  }
}

/** A key over what stage.sh reads, plus the native addons it copies. */
function buildKey(): string {
  const hash = createHash('sha256');
  for (const input of INPUTS) addStats(hash, path.join(REPO_ROOT, input));
  for (const part of ['apdu', 'daemon', 'protocol', 'server']) {
    const stack = [path.join(REPO_ROOT, part)];
    while (stack.length) {
      const dir = stack.pop()!;
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) stack.push(p);
        else if (e.name.endsWith('.node') && p.includes(`${path.sep}native${path.sep}build${path.sep}`))
          addStats(hash, p);
      }
    }
  }
  return hash.digest('hex').slice(0, 16);
}

/**
 * The staged tree of `variant` for the checkout as built now: made by stage.sh the first time,
 * then reused. Callers copy it (cp -a) and never change it.
 */
export async function stagedTree(variant: 'client' | 'server' | 'full'): Promise<string> {
  fs.mkdirSync(STAGE_CACHE_DIR, { recursive: true });
  // Per checkout (worktrees share the cache directory), per build.
  const prefix = `${variant}-${createHash('sha256').update(REPO_ROOT).digest('hex').slice(0, 8)}-`;
  const name = `${prefix}${buildKey()}`;
  const tree = path.join(STAGE_CACHE_DIR, name);
  const lock = `${tree}.lock`;
  for (const deadline = Date.now() + STAGE_WAIT_MS; ;) {
    if (fs.existsSync(tree)) return tree;
    try {
      fs.writeFileSync(lock, String(process.pid), { flag: 'wx' });
      break;
    } catch {
      // Another process stages it; a lock it left behind when it died is taken over.
      const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > STALE_LOCK_MS) fs.rmSync(lock, { force: true });
      if (Date.now() > deadline) throw new Error(`staged tree ${tree}: waited too long for ${lock}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  try {
    const building = `${tree}.tmp-${process.pid}`;
    succeeded(
      await run('bash', [path.join(REPO_ROOT, 'install-scripts/linux/stage.sh'), variant, building]),
      `stage.sh ${variant}`,
    );
    fs.renameSync(building, tree);
    // Trees of older builds of this variant are of no more use.
    for (const old of fs.readdirSync(STAGE_CACHE_DIR))
      if (old.startsWith(prefix) && old !== name && !old.endsWith('.lock') && !old.includes('.tmp-'))
        fs.rmSync(path.join(STAGE_CACHE_DIR, old), { recursive: true, force: true });
    return tree;
  } finally {
    fs.rmSync(lock, { force: true });
  }
}
