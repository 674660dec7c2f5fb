/**
 * Starting the OCI runtime on a prepared bundle: finding it, running `RUNTIME run` with this
 * process's stdio, passing SIGINT/SIGTERM/SIGHUP on, and the exit status. Kept apart from the
 * rest of src/run so that a client whose container the daemon prepared loads only this.
 */
import { join } from 'node:path';
import { RunError } from './errors.js';
import { trace } from '../trace.js';

/** Find an executable: a path as given, else the first match on $PATH. */
export async function findRuntime(name: string): Promise<string> {
  const { access, constants } = await import('node:fs/promises');
  const candidates = name.includes('/') ? [name] : (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(':').map((d) => join(d || '.', name));
  for (const c of candidates) {
    if (await access(c, constants.X_OK).then(() => true, () => false)) return c;
  }
  throw new RunError('NO_RUNTIME', `OCI runtime ${name} not found${name.includes('/') ? '' : ' on $PATH'}: install it (Debian: apt-get install runc) or give --runtime PATH`);
}

/** How the runtime process ended. */
export interface RuntimeExit {
  exitCode: number;
  /** Signal that ended the runtime process itself, if any. */
  signal?: string;
}

/** Run `runtime run` on a prepared bundle and wait for it. SIGINT, SIGTERM and SIGHUP of this
 * process are passed to the runtime (which passes them on to the container's process) while it
 * runs; `interrupted()` says whether one came before it started (then it is not started). */
export async function startRuntime(
  p: { runtime: string; runtimeRoot: string; dir: string; id: string },
  o: { stdio?: 'inherit' | 'pipe'; onStart?: () => void; interrupted?: () => NodeJS.Signals | undefined; forward: (child: import('node:child_process').ChildProcess) => void },
): Promise<RuntimeExit> {
  const pending = o.interrupted?.();
  if (pending) throw new RunError('INTERRUPTED', `interrupted (${pending}) before the container started`);
  const { spawn } = await import('node:child_process');
  const c = spawn(p.runtime, ['--root', p.runtimeRoot, 'run', '--bundle', p.dir, p.id], { stdio: o.stdio ?? 'inherit' });
  o.forward(c);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    c.on('error', (e) => reject(new RunError('RUNTIME_FAILED', `cannot start ${p.runtime}: ${e.message}`)));
    c.on('exit', (code, signal) => resolve({ code, signal }));
  });
  trace('run: runtime spawned');
  o.onStart?.();
  const r = await done;
  trace('run: runtime exited');
  const exitCode = r.code ?? 128 + ((await import('node:os')).constants.signals[r.signal ?? 'SIGKILL'] ?? 9);
  return { exitCode, signal: r.signal ?? undefined };
}

/** Signals passed on to the runtime; before it starts they are remembered (and stop the start). */
export function signalForwarder(): { interrupted: () => NodeJS.Signals | undefined; forward: (child: import('node:child_process').ChildProcess) => void; dispose: () => void } {
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  let pending: NodeJS.Signals | undefined;
  let child: import('node:child_process').ChildProcess | undefined;
  const on = (sig: NodeJS.Signals): void => {
    if (child?.pid) child.kill(sig);
    else pending = sig;
  };
  for (const s of signals) process.on(s, on);
  return {
    interrupted: () => pending,
    forward: (c) => {
      child = c;
    },
    dispose: () => {
      for (const s of signals) process.off(s, on);
    },
  };
}

