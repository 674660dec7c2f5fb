/**
 * `cfsdist daemon`: a long-lived process serving one store on STORE/daemon.sock, so that
 * `cfsdist pull` and `cfsdist run` do their work in a process whose code is loaded and warm
 * instead of paying start-up for every command (protocol.ts). The daemon pulls (the same
 * `pullRef` a client runs), and prepares and removes containers (`prepareContainer`,
 * `finishContainer`); the client itself starts the OCI runtime with its own stdio, forwards
 * its signals and takes the exit status, so a container behaves exactly as without a daemon.
 *
 * Bounds: request lines of at most 1 MiB, a first line within 10 s, at most 64 connections;
 * a run's connection may then stay open as long as its container runs.
 */
import { createServer, createConnection } from 'node:net';
import type { Server, Socket } from 'node:net';
import { chmod, unlink } from 'node:fs/promises';
import type { Store } from '../store/store.js';
import { CfsError } from '../errors.js';
import { MAX_REQUEST_LINE, envDiffers, envFingerprint, lineSplitter, socketPath, toWireError } from './protocol.js';
import type { PullRequest } from '../client/pull-ref.js';
import type { PrepareOptions, PreparedContainer } from '../run/container.js';

/** Errors of the daemon itself (socket in use, bad request). */
export class DaemonError extends CfsError {}

const FIRST_LINE_MS = 10_000;
const MAX_CONNECTIONS = 64;

/** A running daemon. */
export interface DaemonHandle {
  socket: string;
  /** Stop accepting; resolves when every connection (and so every container it prepared) ended. */
  close(): Promise<void>;
}

/** Is something answering on the unix socket `path`? */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

/** Serve `store` on its socket until `close()`. */
export async function serveDaemon(store: Store, o: { log?: (line: string) => void; firstLineMs?: number } = {}): Promise<DaemonHandle> {
  const path = socketPath(store.dir);
  if (Buffer.byteLength(path) > 107) throw new DaemonError('SOCKET_PATH', `socket path ${path} is longer than a unix socket allows (107 bytes): use a shorter store path`);
  if (await answers(path)) throw new DaemonError('DAEMON_RUNNING', `a cfsdist daemon already serves ${store.dir} (${path})`);
  await unlink(path).catch(() => undefined); // a socket left by a killed daemon
  const ours = envFingerprint();
  const open = new Set<Socket>();
  /** Connections that made their request (the others are dropped at close). */
  const busy = new WeakSet<Socket>();
  const server: Server = createServer((sock) => {
    if (open.size >= MAX_CONNECTIONS) {
      sock.end(JSON.stringify({ error: { name: 'DaemonError', code: 'BUSY', message: `the daemon has ${MAX_CONNECTIONS} connections open` } }) + '\n');
      return;
    }
    open.add(sock);
    sock.on('close', () => open.delete(sock));
    serveConnection(store, sock, { ours, log: o.log, firstLineMs: o.firstLineMs ?? FIRST_LINE_MS, started: () => busy.add(sock) });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Created 0600 from the start: no moment where another user could connect.
    const old = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  await chmod(path, 0o600);
  return {
    socket: path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle connections (no request yet) are dropped; runs in flight finish.
        for (const s of open) if (!busy.has(s)) s.destroy();
      }).then(() => unlink(path).catch(() => undefined)),
  };
}

function serveConnection(store: Store, sock: Socket, c: { ours: Record<string, string | null>; log?: (line: string) => void; firstLineMs: number; started: () => void }): void {
  const { ours, log } = c;
  const send = (m: unknown): void => {
    if (!sock.destroyed) sock.write(JSON.stringify(m) + '\n');
  };
  const fail = (e: unknown): void => {
    send({ error: toWireError(e) });
    sock.end();
  };
  let first = true;
  let run: { prepared?: PreparedContainer; finished: boolean; preparing?: Promise<void> } | undefined;
  const idle = setTimeout(() => sock.destroy(), c.firstLineMs);
  const onLine = (line: string): void => {
    let m: { op?: unknown; env?: unknown; req?: unknown; opts?: unknown; owner?: unknown; exitCode?: unknown };
    try {
      m = JSON.parse(line) as typeof m;
    } catch {
      return fail(new DaemonError('BAD_REQUEST', 'request is not JSON'));
    }
    if (first) {
      first = false;
      clearTimeout(idle);
      c.started();
      const differ = envDiffers(m.env, ours);
      if ((m.op === 'pull' || m.op === 'run') && differ.length) {
        log?.(`cfsdist daemon: ${String(m.op)}: the client's ${differ.join(', ')} differ from the daemon's: the client does it itself`);
        return fail(new DaemonError('ENV_MISMATCH', `the daemon's environment differs from the client's in ${differ.join(', ')}`));
      }
      if (m.op === 'pull') {
        const req = m.req as PullRequest;
        log?.(`cfsdist daemon: pull ${String(req?.ref)}`);
        void doPull(store, req, send).then(() => sock.end(), fail);
        return;
      }
      if (m.op === 'run') {
        run = { finished: false };
        const r = run;
        r.preparing = doPrepare(store, m.opts as PrepareOptions, String(m.owner ?? ''), send).then(
          (p) => {
            r.prepared = p;
            log?.(`cfsdist daemon: run ${p.rec.ref}: container ${p.rec.id} for process ${p.rec.owner}`);
            send({ ok: { rec: p.rec, dir: p.dir, runtime: p.runtime, runtimeRoot: p.runtimeRoot, mode: p.mounted.mode, verity: p.mounted.verity } });
          },
          fail,
        );
        return;
      }
      return fail(new DaemonError('BAD_REQUEST', `unknown operation ${JSON.stringify(m.op)}`));
    }
    if (m.op === 'finish' && run?.prepared && !run.finished) {
      run.finished = true;
      const p = run.prepared;
      p.rec.phase = 'exited';
      if (typeof m.exitCode === 'number') p.rec.exitCode = m.exitCode;
      void finish(store, p).then(() => {
        log?.(`cfsdist daemon: container ${p.rec.id} exited ${p.rec.exitCode ?? '?'}: removed`);
        send({ ok: {} });
        sock.end();
      }, fail);
      return;
    }
    fail(new DaemonError('BAD_REQUEST', `unexpected ${JSON.stringify(m.op)} on this connection`));
  };
  sock.on('data', lineSplitter(MAX_REQUEST_LINE, onLine, () => fail(new DaemonError('BAD_REQUEST', `request line longer than ${MAX_REQUEST_LINE} bytes`))));
  sock.on('error', () => undefined);
  sock.on('close', () => {
    clearTimeout(idle);
    // The client went away without `finish` (killed): its container goes now.
    const r = run;
    if (r && !r.finished) {
      r.finished = true;
      void r.preparing?.then(() => {
        const p = r.prepared;
        if (!p) return;
        return finish(store, p).then(
          () => log?.(`cfsdist daemon: the client of container ${p.rec.id} went away: container removed`),
          (e: Error) => log?.(`cfsdist daemon: cannot remove container ${p.rec.id}: ${e.message}`),
        );
      });
    }
  });
}

async function doPull(store: Store, req: PullRequest, send: (m: unknown) => void): Promise<void> {
  const { pullRef } = await import('../client/pull-ref.js');
  const r = await pullRef(store, req, {
    onProgress: (p) => send({ event: 'progress', p }),
    onNotice: (line) => send({ event: 'notice', line }),
  });
  send({ ok: r });
}

async function doPrepare(store: Store, opts: PrepareOptions, owner: string, send: (m: unknown) => void): Promise<PreparedContainer> {
  const { prepareContainer } = await import('../run/container.js');
  if (!/^\d+-\d+$/.test(owner)) throw new DaemonError('BAD_REQUEST', 'a run needs its owner process (<pid>-<starttime>)');
  return prepareContainer(store, { ...opts, owner, log: (line) => send({ event: 'log', line }) });
}

async function finish(store: Store, p: PreparedContainer): Promise<void> {
  const { finishContainer } = await import('../run/container.js');
  await finishContainer(store, p.rec, p.mounted);
}
