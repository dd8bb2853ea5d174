/**
 * How node runs `cardlink daemon`. The daemon idles for hours in every user's session, so what it
 * holds while idle is what every desktop pays (docs/performance.md, "The daemon's resident memory").
 * Node's defaults are for servers busy on many cores: four V8 helper threads (garbage collection,
 * compilation) and four libuv threads (file system, DNS, async crypto), each with a stack and a
 * malloc arena of its own. V8 starts its threads with node; libuv starts its pool at the first file
 * read, which is the module loader's, so all eight run before the daemon's first line. For a
 * process whose heap is about 10 MiB and whose work is one APDU at a time, one V8 helper and two
 * libuv threads do the same work; measured with bench/daemon-idle-rss.ts, the idle daemon holds
 * about 3.5 MiB less after login (56.8 MiB median of three runs, against 58.6 to 61.6 MiB in five
 * runs of the same build without the settings; docs/performance.md).
 *
 * Two libuv threads, not one: a slow DNS lookup of the card server (the resolver can wait 5 s per
 * try) must not hold up the log file's writes.
 *
 * Both must be given when node starts (libuv's pool and V8's platform exist before any module
 * runs), so every launcher of the daemon applies them: bin/cardlink (the systemd user unit, the
 * launchd agent and people typing `cardlink daemon` go through it), the demo (demo/demo-daemon.ts)
 * and the Windows logon entry (install-scripts/windows/install.ps1). test/daemon/cli/daemon-process.test.ts
 * checks that the three say the same as this module. Like the daemon's start without yargs
 * (daemon-argv.ts), they apply to `cardlink daemon ...` with the command first, which is how every
 * launcher runs it; `cardlink --x daemon` works, with node's defaults.
 */

/** node options of the daemon process. */
export const DAEMON_NODE_OPTIONS: readonly string[] = ['--v8-pool-size=1'];

/** libuv's thread pool of the daemon process (UV_THREADPOOL_SIZE), unless the environment sets one. */
export const DAEMON_UV_THREADPOOL_SIZE = 2;

/** The daemon's environment: `env` with UV_THREADPOOL_SIZE added where it is not set. */
export function daemonProcessEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return { ...env, UV_THREADPOOL_SIZE: env['UV_THREADPOOL_SIZE'] || String(DAEMON_UV_THREADPOOL_SIZE) };
}
