/**
 * What Linux says about another process, from /proc: its resident memory and the CPU it has used.
 * The benchmarks read the daemon's and pcscd's figures this way (they are other processes).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { round } from './stats.js';

/** Clock ticks per second of /proc/<pid>/stat times. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** A `kB` line of /proc/<pid>/status in MiB (one decimal). */
function statusMiB(status: string, field: string, pid: number): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, 'm').exec(status);
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return round(Number(m[1]) / 1024, 1);
}

/** VmRSS of a process in MiB, from /proc/<pid>/status. */
export function rssMiB(pid: number): number {
  return statusMiB(fs.readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmRSS', pid);
}

/**
 * VmRSS with its parts, in MiB: `anon` (heaps, stacks: what the process allocated), `file` (mapped
 * files: node's binary, shared libraries and native addons; partly shared with other processes).
 */
export function rssBreakdownMiB(pid: number): { rss: number; anon: number; file: number; shmem: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  return {
    rss: statusMiB(status, 'VmRSS', pid),
    anon: statusMiB(status, 'RssAnon', pid),
    file: statusMiB(status, 'RssFile', pid),
    shmem: statusMiB(status, 'RssShmem', pid),
  };
}

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat. */
export function cpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // fields after "pid (comm) ": state is field 3, utime 14, stime 15
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}
