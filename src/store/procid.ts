/**
 * Process identities for lock, lease and temporary file names: `<pid>-<starttime>`, where
 * starttime is field 22 of /proc/<pid>/stat (clock ticks since boot). A pid alone is reused;
 * pid + start time names one process for the life of the machine, so a name left behind by a
 * process killed with SIGKILL is recognised as stale exactly, never by age.
 * Without /proc the start time is `0` and liveness falls back to kill(pid, 0).
 */
import { readFileSync } from 'node:fs';

function startTimeOf(pid: number): string | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // comm (field 2) may contain spaces and ')'; fields after the last ')' start at field 3.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return rest[22 - 3];
}

function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    const state = stat[stat.lastIndexOf(')') + 2];
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

let self: string | undefined;

/** This process's identity, `<pid>-<starttime>`. */
export function selfId(): string {
  if (self === undefined) self = `${process.pid}-${startTimeOf(process.pid) ?? '0'}`;
  return self;
}

/** Parse the identity at the start of a name like `[.]<pid>-<starttime>-…`; undefined if none. */
export function idOfName(name: string): { pid: number; start: string } | undefined {
  const m = /^\.?(\d+)-(\d+)(?:-|$)/.exec(name);
  if (!m) return undefined;
  return { pid: Number(m[1]), start: m[2] };
}

/** True while the process named by `<pid>-<starttime>…` still runs (same pid, same start). */
export function isAlive(name: string): boolean {
  const id = idOfName(name);
  if (!id) return false;
  if (id.pid === process.pid) return `${id.pid}-${id.start}` === selfId();
  const start = startTimeOf(id.pid);
  // A zombie (killed, not yet reaped by its parent) keeps its pid and start time but runs no
  // more and holds nothing: it counts as gone.
  if (start !== undefined) return (id.start === '0' || start === id.start) && !isZombie(id.pid);
  try {
    process.kill(id.pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
