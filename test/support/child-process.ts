/**
 * Small helpers for the services a test starts as child processes (dbus-daemon, Xvfb, keyrings).
 */
import type { ChildProcess } from 'node:child_process';
import readline from 'node:readline';

/**
 * The first line `child` writes to `stream` (its stdout unless given), trimmed. Rejects when the
 * child exits first or nothing comes within `timeoutMs`, naming `what`.
 */
export function firstLine(
  child: ChildProcess,
  what: string,
  timeoutMs: number,
  stream: NodeJS.ReadableStream = child.stdout!,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`${what} printed nothing in ${timeoutMs} ms`)),
      timeoutMs,
    );
    const lines = readline.createInterface({ input: stream });
    lines.once('line', (line) => {
      clearTimeout(timer);
      lines.close();
      resolve(line.trim());
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code}) before it was ready`));
    });
  });
}

/** SIGTERM and wait for the exit; SIGKILL after `graceMs`. Nothing when it has exited already. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
