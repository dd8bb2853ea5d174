/**
 * The test IdP in a process of its own, for benchmarks that measure the card server in theirs: as
 * deployed, the IdP is somebody else's server. In the same process, oidc-provider's
 * AsyncLocalStorage (enabled by its first request) would put promise hooks on every promise the
 * card server makes and slow it down by a fifth.
 *
 *   const idp = await startTestIdpProcess();
 *   const tokens = await idp.login({ account: 'alice' });
 *   await idp.close();
 *
 * Only what the benchmarks use crosses the process boundary (`TestIdpClient`); tests that need
 * the rest (key rotation, minted tokens) start the IdP in their own process with `startTestIdp`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { IdpChildReply, IdpChildRequest, IdpChildReady } from './idp-process-child.js';
import type { StartTestIdpOptions, TestIdpClient } from './oidc-provider.js';

const CHILD_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'idp-process-child.js');
/** How long the child may take to start the IdP. */
const START_TIMEOUT_MS = 30_000;

/** A request before it gets its id (distributes over the union, which plain Omit would collapse). */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

export async function startTestIdpProcess(options: StartTestIdpOptions = {}): Promise<TestIdpClient> {
  const child = fork(CHILD_SCRIPT, [JSON.stringify(options)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const ready = await firstReply(child);
  let nextId = 1;
  const waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  child.on('message', (m: IdpChildReply) => {
    const w = waiting.get(m.id);
    if (!w) return;
    waiting.delete(m.id);
    if (m.ok) w.resolve(m.result);
    else w.reject(new Error(`test IdP process: ${m.error}`));
  });
  child.on('exit', (code) => {
    for (const w of waiting.values()) w.reject(new Error(`test IdP process exited (${code})`));
    waiting.clear();
  });
  const call = <T>(request: Unnumbered<IdpChildRequest>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const id = nextId++;
      waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      child.send({ ...request, id } as IdpChildRequest);
    });
  return {
    issuer: ready.issuer,
    resource: ready.resource,
    clientId: ready.clientId,
    login: (loginOptions) => call({ op: 'login', options: loginOptions ?? {} }),
    approveDeviceCode: (userCode, approveOptions) =>
      call({ op: 'approveDeviceCode', userCode, options: approveOptions ?? {} }),
    // Options cross as JSON: a claim set to `undefined` (removal) does not survive the trip.
    mintAccessToken: (mintOptions) => call({ op: 'mintAccessToken', options: mintOptions ?? {} }),
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.send({ op: 'close', id: 0 } satisfies IdpChildRequest);
      await exited;
    },
  };
}

function firstReply(child: ChildProcess): Promise<IdpChildReady> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error('test IdP process did not start in time'));
    }, START_TIMEOUT_MS);
    child.once('message', (m: IdpChildReady | IdpChildReply) => {
      clearTimeout(timer);
      if ('issuer' in m) resolve(m);
      else reject(new Error(`test IdP process: ${'error' in m ? m.error : 'unexpected first message'}`));
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`test IdP process exited (${code}) before it was ready`));
    });
  });
}
