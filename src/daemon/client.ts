/**
 * The client side of `cfsdist daemon` (protocol.ts): `daemonFor(store)` is undefined unless the
 * store has a daemon socket; its `pull` and `run` give what the local calls give — and fall back
 * to them when nothing answers there, the daemon declines (another environment, full) or it goes
 * away in the middle of a pull.
 */
import { existsSync } from 'node:fs';
import { createConnection } from 'node:net';
import type { Socket } from 'node:net';
import { MAX_ANSWER_LINE, envFingerprint, lineSplitter, socketPath } from './protocol.js';
import type { WireError } from './protocol.js';
import type { PullRequest } from '../client/pull-ref.js';
import type { PullProgress, PullSummary } from '../client/pull.js';
import type { ContainerRecord, RunOptions, RunResult } from '../run/container.js';
import { CfsError } from '../errors.js';
import { trace } from '../trace.js';

/** One connection, read as a sequence of JSON messages. */
class Conn {
  private queue: unknown[] = [];
  private waiting: ((m: unknown) => void) | undefined;
  private ended = false;

  constructor(readonly sock: Socket) {
    const deliver = (m: unknown): void => {
      if (this.waiting) {
        const w = this.waiting;
        this.waiting = undefined;
        w(m);
      } else this.queue.push(m);
    };
    sock.on(
      'data',
      lineSplitter(
        MAX_ANSWER_LINE,
        (line) => {
          let m: unknown;
          try {
            m = JSON.parse(line);
          } catch {
            return void sock.destroy(); // not our daemon speaking: treated as gone
          }
          deliver(m);
        },
        () => sock.destroy(),
      ),
    );
    const end = (): void => {
      this.ended = true;
      deliver(undefined);
    };
    sock.on('close', end);
    sock.on('error', () => undefined);
  }

  send(m: unknown): void {
    this.sock.write(JSON.stringify(m) + '\n');
  }

  /** The next message; undefined once the connection is closed. */
  next(): Promise<unknown> {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve) => (this.waiting = resolve));
  }

  close(): void {
    this.sock.destroy();
  }
}

function connect(path: string): Promise<Conn | undefined> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => resolve(new Conn(s)));
    s.once('error', () => resolve(undefined));
  });
}

/** Rebuild an error the daemon sent: same class for the ones callers test (SignError), same
 * code, message and exit code. */
async function rehydrate(w: WireError): Promise<Error> {
  let e: Error & { code?: string; exitCode?: number };
  if (w.name === 'SignError') {
    const { SignError } = await import('../sign/errors.js');
    e = new SignError(w.code ?? 'UNKNOWN', w.message);
  } else {
    e = new CfsError(w.code ?? 'DAEMON', w.message);
    e.name = w.name;
  }
  if (w.exitCode !== undefined) e.exitCode = w.exitCode;
  return e;
}

type Answer = { ok?: unknown; error?: WireError; event?: string; p?: PullProgress; line?: string };

/** The daemon declined (another environment, or full): the client does the work itself. */
function declined(a: Answer): boolean {
  return a.error?.code === 'ENV_MISMATCH' || a.error?.code === 'BUSY';
}

/** Read messages until the answer, passing events on; undefined when the connection closed. */
async function answer(c: Conn, onEvent: (m: Answer) => void): Promise<Answer | undefined> {
  for (;;) {
    const m = (await c.next()) as Answer | undefined;
    if (m === undefined) return undefined;
    if (m.event) onEvent(m);
    else return m;
  }
}

/** A daemon serving a store. */
export interface Daemon {
  socket: string;
  pull(req: PullRequest, hooks: { onProgress?: (p: PullProgress) => void; onNotice?: (line: string) => void }): Promise<{ name: string; tag: string; summary: PullSummary }>;
  run(storeDir: string, o: RunOptions): Promise<RunResult>;
}

/** The daemon serving store `dir`, if its socket exists (a stat when none runs); a socket
 * nothing answers on (a killed daemon's) makes each call do its work here. */
export async function daemonFor(dir: string): Promise<Daemon | undefined> {
  const path = socketPath(dir);
  if (!existsSync(path)) return undefined;
  return {
    socket: path,
    pull: async (req, hooks) => {
      const c = await connect(path);
      if (c) {
        try {
          c.send({ op: 'pull', env: envFingerprint(), req });
          const a = await answer(c, (m) => {
            if (m.event === 'progress' && m.p) hooks.onProgress?.(m.p);
            if (m.event === 'notice' && m.line !== undefined) hooks.onNotice?.(m.line);
          });
          // A daemon gone mid-way (stopped, killed): the pull is done here, resuming what it
          // verified (the ingest area).
          if (a === undefined) hooks.onNotice?.(`the cfsdist daemon (${path}) went away; pulling in this process`);
          else if (a.ok) return a.ok as { name: string; tag: string; summary: PullSummary };
          else if (!declined(a)) throw await rehydrate(a.error ?? { name: 'Error', message: 'the daemon answered nothing' });
        } finally {
          c.close();
        }
      }
      const { pullRef } = await import('../client/pull-ref.js');
      return pullRef(dir, req, hooks);
    },
    run: (storeDir, o) => runVia(path, storeDir, o),
  };
}

/** `run` with the daemon preparing and removing the container and this process running the
 * runtime (its stdio, its signals, its exit status). */
async function runVia(path: string, storeDir: string, o: RunOptions): Promise<RunResult> {
  const { findRuntime, signalForwarder, startRuntime } = await import('../run/runtime.js');
  const { selfId } = await import('../store/procid.js');
  const sig = signalForwarder();
  let c: Conn | undefined;
  try {
    const runtime = await findRuntime(o.runtime ?? 'runc');
    // `-e KEY` takes KEY's value from this environment.
    const hostEnv: Record<string, string> = {};
    for (const e of o.env ?? []) if (!e.includes('=') && process.env[e] !== undefined) hostEnv[e] = process.env[e]!;
    trace('run: asking the daemon');
    c = await connect(path);
    let a: Answer | undefined;
    if (c) {
      const { stdio: _s, onStart: _o, log: _l, ...plain } = o;
      c.send({ op: 'run', env: envFingerprint(), owner: selfId(), opts: { ...plain, runtime, hostEnv } });
      a = await answer(c, (m) => {
        if (m.event === 'log' && m.line !== undefined) o.log?.(m.line);
      });
    }
    if (!a || declined(a)) {
      c?.close();
      c = undefined;
      sig.dispose();
      const { Store } = await import('../store/store.js');
      const { runContainer } = await import('../run/container.js');
      return await runContainer(await Store.open(storeDir), o);
    }
    if (!a.ok) throw await rehydrate(a.error ?? { name: 'Error', message: 'the daemon answered nothing' });
    trace('run: prepared by the daemon');
    const p = a.ok as { rec: ContainerRecord; dir: string; runtime: string; runtimeRoot: string; mode: 'kernel' | 'fuse'; verity: boolean };
    const id = p.rec.id;
    const conn = c!;
    let exitCode: number | undefined;
    try {
      const r = await startRuntime({ ...p, id }, { stdio: o.stdio, onStart: () => o.onStart?.(p.rec), interrupted: sig.interrupted, forward: sig.forward });
      exitCode = r.exitCode;
      return { id, exitCode: r.exitCode, signal: r.signal, mode: p.mode, verity: p.verity, kept: p.rec.keep };
    } finally {
      conn.send({ op: 'finish', ...(exitCode === undefined ? {} : { exitCode }) });
      const done = await answer(conn, () => undefined);
      if (!done?.ok) {
        // The daemon is gone or failed: remove the container here.
        const { Store } = await import('../store/store.js');
        const { removeContainer } = await import('../run/cleanup.js');
        await removeContainer(await Store.open(storeDir), id).catch(() => undefined);
      }
    }
  } finally {
    sig.dispose();
    c?.close();
  }
}
