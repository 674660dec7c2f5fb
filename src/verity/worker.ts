/**
 * Worker thread body for the parallel fs-verity path (see parallel.ts). It answers two kinds
 * of request, reading files itself so that no file data crosses threads:
 *  - `leaves`: the level-0 hashes (32 bytes per 4096-byte block, zero-padded last block) of
 *    `length` bytes of `path` at `offset`;
 *  - `files`: whole fs-verity digests of a batch of small files.
 */
import { parentPort } from 'node:worker_threads';
import { closeSync, openSync, readSync } from 'node:fs';
import { BLOCK_SIZE, FsVerityHasher, HASH_SIZE, hashLeaves } from './digest.js';

/** A request from the pool. */
export type WorkerRequest =
  | { id: number; kind: 'leaves'; path: string; offset: number; length: number }
  | { id: number; kind: 'files'; paths: string[] };

/** A reply to the pool. */
export type WorkerReply =
  | { id: number; ok: true; kind: 'leaves'; hashes: ArrayBuffer }
  | { id: number; ok: true; kind: 'files'; digests: ArrayBuffer; sizes: number[]; errors: (string | null)[] }
  | { id: number; ok: false; message: string; errno?: string };

const CHUNK = 1 << 20; // read 1 MiB at a time: it stays in cache while it is hashed
const buf = Buffer.allocUnsafe(CHUNK);

function readFully(fd: number, into: Buffer, len: number, pos: number, path: string): void {
  let got = 0;
  while (got < len) {
    const n = readSync(fd, into, got, len - got, pos + got);
    if (n === 0) throw Object.assign(new Error(`${path}: file shrank while hashing (short read at offset ${pos + got})`), { code: 'ESHORT' });
    got += n;
  }
}

function leaves(path: string, offset: number, length: number): ArrayBuffer {
  const out = new Uint8Array(Math.ceil(length / BLOCK_SIZE) * HASH_SIZE);
  const fd = openSync(path, 'r');
  try {
    let o = 0;
    for (let done = 0; done < length; ) {
      const n = Math.min(CHUNK, length - done);
      readFully(fd, buf, n, offset + done, path);
      o += hashLeaves(buf.subarray(0, n), out, o) * HASH_SIZE;
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return out.buffer;
}

function files(paths: string[]): { digests: ArrayBuffer; sizes: number[]; errors: (string | null)[] } {
  const digests = new Uint8Array(paths.length * HASH_SIZE);
  const sizes: number[] = [];
  const errors: (string | null)[] = [];
  paths.forEach((path, i) => {
    try {
      const fd = openSync(path, 'r');
      try {
        const h = new FsVerityHasher();
        let pos = 0;
        for (;;) {
          const n = readSync(fd, buf, 0, CHUNK, pos);
          if (n === 0) break;
          h.update(buf.subarray(0, n));
          pos += n;
        }
        digests.set(h.digest(), i * HASH_SIZE);
        sizes.push(pos);
        errors.push(null);
      } finally {
        closeSync(fd);
      }
    } catch (err) {
      sizes.push(-1);
      errors.push((err as Error)?.message ?? String(err));
    }
  });
  return { digests: digests.buffer, sizes, errors };
}

parentPort?.on('message', (req: WorkerRequest) => {
  let reply: WorkerReply;
  const transfer: ArrayBuffer[] = [];
  try {
    if (req.kind === 'leaves') {
      const hashes = leaves(req.path, req.offset, req.length);
      reply = { id: req.id, ok: true, kind: 'leaves', hashes };
      transfer.push(hashes);
    } else {
      const r = files(req.paths);
      reply = { id: req.id, ok: true, kind: 'files', digests: r.digests, sizes: r.sizes, errors: r.errors };
      transfer.push(r.digests);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = { id: req.id, ok: false, message: e?.message ?? String(err), errno: e?.code };
  }
  parentPort!.postMessage(reply, transfer);
});
