/** The next IPC message of a forked benchmark helper; rejects when the helper exits first. */
import type { ChildProcess } from 'node:child_process';

export function nextMessage<T>(child: ChildProcess, what = 'benchmark helper'): Promise<T> {
  return new Promise((resolve, reject) => {
    child.once('message', (m) => resolve(m as T));
    child.once('exit', (code) => reject(new Error(`${what} exited (${code})`)));
  });
}
