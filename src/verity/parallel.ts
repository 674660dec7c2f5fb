/**
 * Parallel fs-verity digests over worker threads.
 *
 * Large file: split into segments whose sizes are multiples of 4096 bytes; each worker reads
 * its segment itself and returns the segment's level-0 hashes (1/128 of the data); this thread
 * feeds them, in file order, into an FsVerityHasher, which builds the upper levels (another
 * 1/128 of the work). Since every segment boundary is a block boundary, the leaves are exactly
 * those of the single-threaded computation, so the digest is identical for every size.
 * At most a few segments are in flight per worker, so memory stays bounded.
 *
 * Many files: paths go to the workers in batches of 64; a worker opens, stats and digests each
 * file whole, except files of PARALLEL_MIN_SIZE or more, which it hands back: those then go
 * through the segment path one after another. A handful of small files is hashed on the
 * calling thread instead (starting workers costs more).
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { open, stat } from 'node:fs/promises';
import { BLOCK_SIZE, DigestError, FsVerityHasher, HASH_SIZE, fsverityDigestFile } from './digest.js';
import type { WorkerReply, WorkerRequest } from './worker.js';

/** Files at least this large are split over the workers. */
export const PARALLEL_MIN_SIZE = 8 << 20;
const MAX_SEGMENT = 16 << 20;
const MIN_SEGMENT = 1 << 20;
const PER_WORKER_INFLIGHT = 2;

type Req = WorkerRequest extends infer R ? (R extends { id: number } ? Omit<R, 'id'> : never) : never;
type OkReply = Extract<WorkerReply, { ok: true }>;

interface Slot {
  worker: Worker;
  inflight: number;
}

interface Task {
  req: Req;
  resolve: (r: OkReply) => void;
  reject: (e: Error) => void;
}

/** A fixed set of hashing worker threads; they keep the process alive only while busy. */
export class VerityPool {
  /** Number of worker threads. */
  readonly size: number;
  private slots: Slot[] = [];
  private queue: Task[] = [];
  private pending = new Map<number, { task: Task; slot: Slot }>();
  private nextId = 1;
  private closed = false;

  constructor(size = availableParallelism()) {
    this.size = Math.max(1, size);
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./worker.js', import.meta.url));
    const slot: Slot = { worker, inflight: 0 };
    worker.on('message', (r: WorkerReply) => this.onReply(slot, r));
    const fail = (err: Error): void => {
      // Reject what this worker had, forget it; a new one is spawned on demand.
      this.slots = this.slots.filter((s) => s !== slot);
      for (const [id, p] of this.pending) {
        if (p.slot === slot) {
          this.pending.delete(id);
          p.task.reject(new DigestError('VERITY_WORKER', `fs-verity worker failed: ${err.message}`));
        }
      }
      this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closed && this.slots.includes(slot)) fail(new Error(`exited with code ${code}`));
    });
    worker.unref();
    this.slots.push(slot);
    return slot;
  }

  private onReply(slot: Slot, r: WorkerReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    slot.inflight--;
    if (slot.inflight === 0) slot.worker.unref();
    if (r.ok) p.task.resolve(r);
    else {
      const e = new DigestError('VERITY_IO', r.message);
      p.task.reject(e);
    }
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && !this.closed) {
      while (this.slots.length < this.size) this.spawn();
      let best: Slot | undefined;
      for (const s of this.slots) if (s.inflight < PER_WORKER_INFLIGHT && (!best || s.inflight < best.inflight)) best = s;
      if (!best) return;
      const task = this.queue.shift()!;
      const id = this.nextId++;
      this.pending.set(id, { task, slot: best });
      if (best.inflight === 0) best.worker.ref();
      best.inflight++;
      best.worker.postMessage({ ...task.req, id } as WorkerRequest);
    }
  }

  /** Queue one request. */
  run(req: Req): Promise<OkReply> {
    if (this.closed) return Promise.reject(new DigestError('VERITY_WORKER', 'verity pool is closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      this.pump();
    });
  }

  /** Level-0 hashes of `length` bytes of `path` at `offset` (offset a multiple of 4096). */
  async leaves(path: string, offset: number, length: number): Promise<Uint8Array> {
    const r = await this.run({ kind: 'leaves', path, offset, length });
    if (r.kind !== 'leaves') throw new DigestError('VERITY_WORKER', 'unexpected worker reply');
    return new Uint8Array(r.hashes);
  }

  /** Whole-file digests of a batch of files; an entry is an Error for a file that failed, or
   * (no digest) the size of a file of `largeMin` bytes or more, which was left unhashed. */
  async files(paths: string[], largeMin = Number.MAX_SAFE_INTEGER): Promise<(Error | { digest?: Buffer; size: number })[]> {
    const r = await this.run({ kind: 'files', paths, largeMin });
    if (r.kind !== 'files') throw new DigestError('VERITY_WORKER', 'unexpected worker reply');
    const all = Buffer.from(r.digests);
    return paths.map((p, i) => {
      const e = r.errors[i];
      if (e !== null) return new DigestError('VERITY_IO', e ?? p);
      if (r.sizes[i] >= largeMin) return { size: r.sizes[i] };
      return { digest: Buffer.from(all.subarray(i * HASH_SIZE, (i + 1) * HASH_SIZE)), size: r.sizes[i] };
    });
  }

  /** Stop the workers; pending requests are rejected. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.queue) t.reject(new DigestError('VERITY_WORKER', 'verity pool closed'));
    this.queue = [];
    const slots = this.slots;
    this.slots = [];
    await Promise.all(slots.map((s) => s.worker.terminate()));
  }
}

let shared: VerityPool | undefined;

/** The process-wide pool (created on first use, one worker per CPU). */
export function sharedPool(): VerityPool {
  if (!shared) shared = new VerityPool();
  return shared;
}

function segmentSize(size: number, workers: number): number {
  const want = Math.ceil(size / (workers * 4));
  const seg = Math.min(MAX_SEGMENT, Math.max(MIN_SEGMENT, want));
  return Math.ceil(seg / BLOCK_SIZE) * BLOCK_SIZE;
}

/** fs-verity digest of `size` bytes of a file, hashed by the pool's workers; `segment` (a
 * multiple of 4096) overrides the split size (tests use it to probe boundaries). */
export async function digestFileSegments(path: string, size: number, opts: { pool?: VerityPool; segment?: number } = {}): Promise<Buffer> {
  const pool = opts.pool ?? sharedPool();
  const seg = opts.segment ?? segmentSize(size, pool.size);
  if (seg <= 0 || seg % BLOCK_SIZE !== 0) throw new DigestError('VERITY_ARG', `segment size ${seg} is not a positive multiple of 4096`);
  const h = new FsVerityHasher();
  const window = pool.size * PER_WORKER_INFLIGHT + 1;
  const inflight: { p: Promise<Uint8Array>; len: number }[] = [];
  let next = 0;
  const issue = (): void => {
    while (inflight.length < window && next < size) {
      const len = Math.min(seg, size - next);
      const p = pool.leaves(path, next, len);
      p.catch(() => undefined); // awaited below, in order; avoid unhandled rejections meanwhile
      inflight.push({ p, len });
      next += len;
    }
  };
  issue();
  while (inflight.length > 0) {
    const { p, len } = inflight.shift()!;
    const hashes = await p;
    h.updateLeaves(hashes, len);
    issue();
  }
  return h.digest();
}

/** fs-verity digest of a file using all CPUs for large files (same result as fsverityDigestFile). */
export async function fsverityDigestFileParallel(path: string, opts: { pool?: VerityPool } = {}): Promise<Buffer> {
  const st = await stat(path);
  if (!st.isFile()) throw new DigestError('VERITY_IO', `${path}: not a regular file`);
  if (st.size < PARALLEL_MIN_SIZE) return fsverityDigestFile(path);
  return digestFileSegments(path, st.size, opts);
}

/** "ENOENT: no such file or directory, open '/x'" → "no such file or directory (ENOENT)". */
function ioMessage(err: unknown): string {
  const m = /^([A-Z]+): (.*?), \w+ '.*'$/.exec((err as Error)?.message ?? String(err));
  return m ? `${m[2]} (${m[1]})` : ((err as Error)?.message ?? String(err));
}

/** Below this much work in all, digestFiles hashes on the calling thread. */
const INLINE_MAX_BYTES = 2 << 20;

async function digestFileHere(path: string): Promise<{ digest: Buffer; size: number }> {
  const fh = await open(path, 'r');
  try {
    const h = new FsVerityHasher();
    const buf = Buffer.allocUnsafe(1 << 20);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
    return { digest: h.digest(), size: h.size };
  } finally {
    await fh.close();
  }
}

const BATCH_FILES = 64;
/** Up to this many paths, digestFiles stats them here to decide whether workers are worth it. */
const FEW_FILES = 16;

/** One result of digestFilesSettled: a digest and size, or the error for that file. */
export type DigestResult = { path: string; digest: Buffer; size: number } | { path: string; error: Error };

/** fs-verity digests of many files, in input order, each entry a result or that file's error.
 * Workers open, stat and hash the files in batches of 64 (no per-file round trip through this
 * thread); a file of PARALLEL_MIN_SIZE or more is handed back and split over all workers. */
export async function digestFilesSettled(paths: string[], opts: { pool?: VerityPool } = {}): Promise<DigestResult[]> {
  const results: DigestResult[] = new Array(paths.length);
  const ioError = (p: string, err: unknown): DigestResult => ({ path: p, error: new DigestError('VERITY_IO', `${p}: ${ioMessage(err)}`) });

  // A few small files: not worth starting worker threads (tens of ms) — hash them here.
  if (!opts.pool && paths.length <= FEW_FILES) {
    const sizes = await Promise.all(paths.map((p) => stat(p).then((st) => (st.isFile() ? st.size : -1), () => -1)));
    if (sizes.reduce((n, x) => n + Math.max(x, 0), 0) <= INLINE_MAX_BYTES) {
      for (let i = 0; i < paths.length; i++) {
        try {
          const st = await stat(paths[i]);
          if (!st.isFile()) throw new Error('not a regular file');
          const { digest, size } = await digestFileHere(paths[i]);
          results[i] = { path: paths[i], digest, size };
        } catch (err) {
          results[i] = ioError(paths[i], err);
        }
      }
      return results;
    }
  }

  const pool = opts.pool ?? sharedPool();
  const large: { i: number; size: number }[] = [];
  let next = 0;
  const runner = async (): Promise<void> => {
    while (next < paths.length) {
      const start = next;
      next = Math.min(paths.length, next + BATCH_FILES);
      const r = await pool.files(paths.slice(start, next), PARALLEL_MIN_SIZE);
      r.forEach((x, k) => {
        const i = start + k;
        if (x instanceof Error) results[i] = { path: paths[i], error: x };
        else if (x.digest) results[i] = { path: paths[i], digest: x.digest, size: x.size };
        else large.push({ i, size: x.size });
      });
    }
  };
  await Promise.all(Array.from({ length: pool.size * PER_WORKER_INFLIGHT }, runner));

  large.sort((x, y) => x.i - y.i);
  for (const { i, size } of large) {
    try {
      results[i] = { path: paths[i], digest: await digestFileSegments(paths[i], size, { pool }), size };
    } catch (err) {
      results[i] = { path: paths[i], error: err as Error };
    }
  }
  return results;
}

/** fs-verity digests of many files, in input order; rejects with the first file's error. */
export async function digestFiles(paths: string[], opts: { pool?: VerityPool } = {}): Promise<Buffer[]> {
  const r = await digestFilesSettled(paths, opts);
  return r.map((x) => {
    if ('error' in x) throw x.error;
    return x.digest;
  });
}
