/**
 * Packed units: compressed bytes exactly as a remote sent them (one HTTP response: a Range of
 * pack frames, or one whole compressed object), with where each object lies once each frame is
 * decompressed. A remote that can hand these out (RegistryRemote.fetchPacked) lets the pull do
 * all the work per byte — decompress, fs-verity hash, compare with the signed digest, write
 * the file — on UnpackPool's worker threads with plain synchronous calls, instead of on the
 * main thread and the libuv pool with a promise and several Buffers per object. On a cold pull
 * of the Debian family that halves the process's CPU time (see bench/registry.ts).
 *
 * `unpackInline` is the same work on the calling thread (zlib on the thread pool) for callers
 * that want objects as a stream (fetchObjects, the lazy FUSE fetcher).
 */
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import { Worker } from 'node:worker_threads';
import { toHex } from '../verity/digest.js';
import { StoreError } from '../store/errors.js';
import { PullError } from './errors.js';
import type { FetchedObject } from './remote.js';
import type { UnpackReply, UnpackRequest } from './unpack-worker.js';

/** An object inside a decompressed frame. */
export interface PackedObject {
  digest: Buffer;
  size: number;
  /** Offset in the decompressed frame. */
  at: number;
}

/** A piece of a unit that decompresses on its own. */
export interface PackedFrame {
  /** Offset and length in the unit's bytes. */
  off: number;
  len: number;
  /** Most bytes it may decompress to (bounds memory against a hostile remote). */
  maxOut: number;
  objects: PackedObject[];
  /** For messages, e.g. "pack sha256:… bytes 0-99 from docker://… (frame at 0)". */
  what: string;
}

/** Compressed bytes as received, holding whole objects. Nothing in it is verified yet. */
export interface PackedUnit {
  data: Buffer;
  encoding: 'gzip' | 'identity';
  frames: PackedFrame[];
}

/** What a remote's fetchPacked yields: units, or objects too large to hold whole (streams). */
export type PackedOrStream = PackedUnit | FetchedObject;

/** True for a unit (false for a streamed object). */
export function isUnit(x: PackedOrStream): x is PackedUnit {
  return (x as PackedUnit).frames !== undefined;
}

/** Content bytes of a unit's objects. */
export function unitBytes(u: PackedUnit): number {
  let n = 0;
  for (const f of u.frames) for (const o of f.objects) n += o.size;
  return n;
}

/** Number of objects of a unit. */
export function unitCount(u: PackedUnit): number {
  let n = 0;
  for (const f of u.frames) n += f.objects.length;
  return n;
}

const gunzipP = promisify(gunzip);

function frameError(f: PackedFrame, err: unknown): PullError {
  return new PullError('BAD_FRAME', `${f.what}: does not decompress: ${(err as Error).message}`, { cause: err });
}

function rangeError(f: PackedFrame, o: PackedObject, have: number): PullError {
  return new PullError('BAD_INDEX', `object ${toHex(o.digest)}: bytes ${o.at}-${o.at + o.size - 1} are past the end (${have} bytes) of ${f.what}`);
}

/** The objects of a unit, decompressed on this thread's zlib pool, NOT verified (the caller
 * verifies, as for any FetchedObject). The frames of a unit decompress in parallel. */
export async function* unpackInline(u: PackedUnit): AsyncGenerator<FetchedObject> {
  const plain = await Promise.all(
    u.frames.map(async (f) => {
      const raw = u.data.subarray(f.off, f.off + f.len);
      if (u.encoding === 'identity') return raw;
      try {
        return await gunzipP(raw, { maxOutputLength: Math.max(1, f.maxOut) });
      } catch (err) {
        throw frameError(f, err);
      }
    }),
  );
  for (let i = 0; i < u.frames.length; i++) {
    const f = u.frames[i]!;
    const p = plain[i]!;
    for (const o of f.objects) {
      if (o.at + o.size > p.length) throw rangeError(f, o, p.length);
      const bytes = p.subarray(o.at, o.at + o.size);
      yield { digest: o.digest, size: o.size, body: (async function* () { yield bytes; })() };
    }
  }
}

interface Slot {
  worker: Worker;
  inflight: number;
  /** Set once the worker failed; its tasks were rejected. */
  dead?: Error;
}

/** Worker threads that turn units into verified files under one objects directory
 * (DIR/xx/<62 hex>, written in place, not fsynced: the caller syncs the filesystem once).
 * Bytes are transferred to the worker, not copied, when the unit owns its whole buffer. */
export class UnpackPool {
  readonly dir: string;
  readonly size: number;
  private slots: Slot[] = [];
  private pending = new Map<number, { slot: Slot; resolve: () => void; reject: (e: Error) => void; u: PackedUnit }>();
  private nextId = 1;
  private closed = false;

  constructor(dir: string, size = Math.min(2, availableParallelism())) {
    this.dir = dir;
    this.size = Math.max(1, size);
    for (let i = 0; i < this.size; i++) this.spawn();
  }

  private spawn(): void {
    const worker = new Worker(new URL('./unpack-worker.js', import.meta.url), { workerData: { dir: this.dir } });
    const slot: Slot = { worker, inflight: 0 };
    worker.on('message', (r: UnpackReply) => this.onReply(r));
    const fail = (err: Error): void => {
      if (slot.dead) return;
      slot.dead = new PullError('UNPACK_WORKER', `unpack worker failed: ${err.message}`, { cause: err });
      for (const [id, p] of this.pending) {
        if (p.slot === slot) {
          this.pending.delete(id);
          p.reject(slot.dead);
        }
      }
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (!this.closed) fail(new Error(`exited with code ${code}`));
    });
    worker.unref();
    this.slots.push(slot);
  }

  private onReply(r: UnpackReply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    this.pending.delete(r.id);
    if (--p.slot.inflight === 0) p.slot.worker.unref();
    if (r.ok) {
      p.resolve();
      return;
    }
    const f = p.u.frames[r.frame]!;
    const o = r.object >= 0 ? f.objects[r.object]! : undefined;
    switch (r.code) {
      case 'FRAME':
        p.reject(frameError(f, new Error(r.message)));
        return;
      case 'RANGE':
        p.reject(rangeError(f, o!, r.have));
        return;
      case 'DIGEST':
        p.reject(new PullError('OBJECT_CORRUPT', `object ${toHex(o!.digest)} (${f.what}) does not match the signed image: its content has fs-verity digest ${r.message}`));
        return;
      default:
        p.reject(new StoreError('WRITE_FAILED', `object ${o ? toHex(o.digest) : '?'}: ${r.message}`));
    }
  }

  /** Decompress, verify and write every object of `u`; resolves when all are on disk, rejects
   * (PullError OBJECT_CORRUPT / BAD_FRAME / BAD_INDEX, StoreError WRITE_FAILED) at the first
   * object that fails — objects before it in the unit may have been written. */
  run(u: PackedUnit): Promise<void> {
    if (this.closed) return Promise.reject(new PullError('UNPACK_WORKER', 'unpack pool is closed'));
    let best: Slot | undefined;
    for (const s of this.slots) if (!s.dead && (!best || s.inflight < best.inflight)) best = s;
    if (!best) return Promise.reject(this.slots[0]?.dead ?? new PullError('UNPACK_WORKER', 'no unpack worker'));
    const slot = best;
    const id = this.nextId++;
    // Transfer the bytes when the Buffer is the whole of its ArrayBuffer (never a slice of
    // Node's shared pool); otherwise the message copies them.
    const data = u.data;
    const own = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && !(data.buffer instanceof SharedArrayBuffer);
    const req: UnpackRequest = {
      id,
      data: own ? new Uint8Array(data.buffer as ArrayBuffer) : new Uint8Array(data),
      encoding: u.encoding,
      frames: u.frames.map((f) => ({ off: f.off, len: f.len, maxOut: f.maxOut, objects: f.objects.map((o) => ({ hex: toHex(o.digest), size: o.size, at: o.at })) })),
    };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { slot, resolve, reject, u: { ...u, data: Buffer.alloc(0) } });
      if (slot.inflight++ === 0) slot.worker.ref();
      slot.worker.postMessage(req, [req.data.buffer as ArrayBuffer]);
    });
  }

  /** Stop the workers (after the caller has awaited its runs). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new PullError('UNPACK_WORKER', 'unpack pool closed'));
    }
  }
}
