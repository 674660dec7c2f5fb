/**
 * Worker thread of `inflateOffThread` (inflate.ts): gunzips a layer blob, hashes the blob
 * (its digest) and the tar stream (its diff_id) on the way, and hands the tar bytes to the
 * main thread through a shared ring buffer. Node's zlib is driven by callbacks on the thread
 * that owns the stream; owning it here keeps inflate running while the main thread parses.
 * Protocol: `InflateRequest` / `InflateReply`.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { createHash, type Hash } from 'node:crypto';
import { createGunzip } from 'node:zlib';

/** Messages to the worker. */
export type InflateRequest =
  | { t: 'in'; off: number; len: number; bytes: number }
  | { t: 'end' }
  | { t: 'credit'; bytes: number };

/** Messages from the worker. */
export type InflateReply =
  | { t: 'inack'; bytes: number }
  | { t: 'out'; off: number; len: number; bytes: number }
  | { t: 'done'; blob?: string; diff?: string; blobBytes: number; tarBytes: number }
  | { t: 'error'; code: string; message: string };

/** Worker configuration. */
export interface InflateConfig {
  /** Tar bytes out (this worker writes, the main thread reads). */
  ring: SharedArrayBuffer;
  /** Compressed bytes in (the main thread writes, zlib reads until the write callback). */
  input: SharedArrayBuffer;
  /** Hash algorithms for the blob and the tar stream (undefined: not hashed). */
  blobAlg?: 'sha256' | 'sha512';
  diffAlg?: 'sha256' | 'sha512';
}

const cfg = workerData as InflateConfig;
const ring = Buffer.from(cfg.ring);
const input = Buffer.from(cfg.input);
const size = ring.length;
let head = 0;
let used = 0;
const blobHash: Hash | undefined = cfg.blobAlg ? createHash(cfg.blobAlg) : undefined;
const diffHash: Hash | undefined = cfg.diffAlg ? createHash(cfg.diffAlg) : undefined;
let blobBytes = 0;
let tarBytes = 0;

function post(r: InflateReply): void {
  parentPort!.postMessage(r);
}

const z = createGunzip({ chunkSize: 256 << 10 });

/** Copy an output chunk into the ring if there is room; false if it must wait for credit. */
function place(chunk: Buffer): boolean {
  const n = chunk.length;
  const gap = head + n > size ? size - head : 0;
  if (used + gap + n > size) return false;
  const off = gap ? 0 : head;
  chunk.copy(ring, off);
  head = off + n === size ? 0 : off + n;
  used += gap + n;
  post({ t: 'out', off, len: n, bytes: gap + n });
  return true;
}

// Output chunks are hashed and copied in a microtask: zlib's callback has then already
// queued the next inflate job on the thread pool, so that work overlaps inflate.
const pending: Buffer[] = [];
let draining = false;
let ended = false;

function drain(): void {
  draining = false;
  while (pending.length) {
    const chunk = pending[0]!;
    if (!place(chunk)) {
      z.pause(); // resumed by credit
      return;
    }
    pending.shift();
  }
  if (ended) finish();
  else if (z.isPaused()) z.resume();
}

z.on('data', (chunk: Buffer) => {
  diffHash?.update(chunk);
  tarBytes += chunk.length;
  pending.push(chunk);
  if (!draining) {
    draining = true;
    queueMicrotask(drain);
  }
});
z.on('end', () => {
  ended = true;
  if (!draining && pending.length === 0) finish();
});
z.on('error', (err: NodeJS.ErrnoException) => {
  post({ t: 'error', code: err.code ?? 'Z_ERROR', message: err.message });
});

function finish(): void {
  post({ t: 'done', blob: blobHash?.digest('hex'), diff: diffHash?.digest('hex'), blobBytes, tarBytes });
}

parentPort!.on('message', (m: InflateRequest) => {
  switch (m.t) {
    case 'in': {
      const b = input.subarray(m.off, m.off + m.len);
      blobHash?.update(b);
      blobBytes += b.length;
      z.write(b, () => post({ t: 'inack', bytes: m.bytes })); // zlib is done with the bytes
      return;
    }
    case 'end':
      z.end();
      return;
    case 'credit':
      used -= m.bytes;
      if (pending.length && !draining) drain();
      return;
  }
});
