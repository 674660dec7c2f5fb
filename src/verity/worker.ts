/**
 * Worker thread body for the parallel fs-verity path (see parallel.ts). It answers two kinds
 * of request, reading files itself so that no file data crosses threads:
 *  - `leaves`: the level-0 hashes (32 bytes per 4096-byte block, zero-padded last block) of
 *    `length` bytes of `path` at `offset`;
 *  - `files`: whole fs-verity digests of a batch of small files.
 */
import { parentPort } from 'node:worker_threads';
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { BLOCK_SIZE, FsVerityHasher, HASH_SIZE, hashLeaves } from './digest.js';

/** A request from the pool. */
export type WorkerRequest =
  | { id: number; kind: 'leaves'; path: string; offset: number; length: number }
  | { id: number; kind: 'files'; paths: string[]; largeMin: number };

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

/** "ENOENT: no such file or directory, open '/x'" → "no such file or directory (ENOENT)". */
function ioMessage(err: unknown): string {
  const m = /^([A-Z]+): (.*?), \w+ '.*'$/.exec((err as Error)?.message ?? String(err));
  return m ? `${m[2]} (${m[1]})` : ((err as Error)?.message ?? String(err));
}

function files(paths: string[], largeMin: number): { digests: ArrayBuffer; sizes: number[]; errors: (string | null)[] } {
  const digests = new Uint8Array(paths.length * HASH_SIZE);
  const sizes: number[] = [];
  const errors: (string | null)[] = [];
  paths.forEach((path, i) => {
    let fd: number | undefined;
    try {
      fd = openSync(path, 'r');
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('not a regular file');
      if (st.size >= largeMin) {
        // Left to the caller, who splits it over all workers.
        sizes.push(st.size);
        errors.push(null);
        return;
      }
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
    } catch (err) {
      sizes.push(-1);
      errors.push(`${path}: ${ioMessage(err)}`);
    } finally {
      if (fd !== undefined) closeSync(fd);
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
      const r = files(req.paths, req.largeMin);
      reply = { id: req.id, ok: true, kind: 'files', digests: r.digests, sizes: r.sizes, errors: r.errors };
      transfer.push(r.digests);
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    reply = { id: req.id, ok: false, message: e?.message ?? String(err), errno: e?.code };
  }
  parentPort!.postMessage(reply, transfer);
});
