/**
 * `--profile DIR` of the benchmarks: a V8 CPU profile of the benchmark's own process (where the
 * card server runs) over one measured phase, written as DIR/<name>.cpuprofile (open it in Chrome
 * DevTools), to see where an operation's time goes.
 */
import fs from 'node:fs';
import inspector from 'node:inspector/promises';
import path from 'node:path';

export interface CpuProfile {
  /** Stops profiling and writes the profile to `<dir>/<name>.cpuprofile`. */
  stopInto(dir: string, name: string): Promise<void>;
}

export async function startCpuProfile(): Promise<CpuProfile> {
  const session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stopInto(dir, name) {
      const { profile } = await session.post('Profiler.stop');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, `${name}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}
