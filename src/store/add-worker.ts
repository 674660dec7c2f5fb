/**
 * Worker thread body of ObjectDir.addFiles: adds a batch of files to an objects directory with
 * synchronous system calls, so one file costs one thread hop instead of a thread-pool round
 * trip per call. The rule is ObjectDir's: hash while reading, write a temporary file
 * (store/atomic.ts names), fsync, rename into place; a present object is not rewritten, its
 * mtime is refreshed. Several such workers run at once because fsync blocks the thread.
 */
import { parentPort } from 'node:worker_threads';
import { execFileSync } from 'node:child_process';
import { closeSync, fstatSync, fsyncSync, mkdirSync, openSync, readSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher, fsverityDigest, toHex } from '../verity/digest.js';
import { tempPath } from './atomic.js';

/** A batch to add. */
export interface AddRequest {
  id: number;
  paths: string[];
  dir: string;
  tmpDir: string;
  fsync: boolean;
  verity: boolean;
}

/** Per file: hex digest and size, whether it was present, or an error message. */
export interface AddReply {
  id: number;
  results: ({ hex: string; size: number; existed: boolean; sub?: string } | { error: string })[];
}

const SMALL = 1 << 20;
const CHUNK = 1 << 20;
const chunk = Buffer.allocUnsafe(CHUNK);
const madeDirs = new Set<string>();

function writeAllSync(fd: number, data: Uint8Array): void {
  for (let off = 0; off < data.length; ) off += writeSync(fd, data, off, data.length - off);
}

function ioMessage(err: unknown): string {
  const m = /^([A-Z]+): (.*?), \w+ '.*'$/.exec((err as Error)?.message ?? String(err));
  return m ? `${m[2]} (${m[1]})` : ((err as Error)?.message ?? String(err));
}

/** Rename a finished temporary file into place unless the object is there already. */
function commit(req: AddRequest, tmp: string, digest: Buffer, size: number): { hex: string; size: number; existed: boolean; sub?: string } {
  const hex = toHex(digest);
  const sub = join(req.dir, hex.slice(0, 2));
  const final = join(sub, hex.slice(2));
  if (statSync(final, { throwIfNoEntry: false })) {
    unlinkSync(tmp);
    const now = new Date();
    utimesSync(final, now, now);
    return { hex, size, existed: true };
  }
  if (req.verity) {
    try {
      execFileSync('fsverity', ['enable', tmp], { stdio: 'ignore' });
    } catch {
      /* never fatal: the object is still correct, just without kernel verification */
    }
  }
  if (!madeDirs.has(sub)) {
    mkdirSync(sub, { recursive: true });
    madeDirs.add(sub);
  }
  try {
    renameSync(tmp, final);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(sub, { recursive: true }); // the directory went away since we made it
    renameSync(tmp, final);
  }
  return { hex, size, existed: false, sub };
}

function writeTempSync(req: AddRequest, data: Uint8Array | ((fd: number) => void)): string {
  const tmp = tempPath(req.tmpDir);
  const fd = openSync(tmp, 'wx', 0o644);
  try {
    if (typeof data === 'function') data(fd);
    else writeAllSync(fd, data);
    if (req.fsync) fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    unlinkSync(tmp);
    throw err;
  }
  closeSync(fd);
  return tmp;
}

function addOne(req: AddRequest, path: string): { hex: string; size: number; existed: boolean; sub?: string } {
  const fd = openSync(path, 'r');
  let tmp: string | undefined;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error('not a regular file');
    if (st.size <= SMALL) {
      // One read of size+1: a short count is the whole file; a full one means it grew.
      const data = Buffer.allocUnsafe(st.size + 1);
      let got = 0;
      for (;;) {
        const n = readSync(fd, data, got, data.length - got, got);
        if (n === 0) break;
        got += n;
        if (got === data.length) break;
      }
      if (got <= st.size) {
        const body = data.subarray(0, got);
        const digest = fsverityDigest(body);
        const hex = toHex(digest);
        const final = join(req.dir, hex.slice(0, 2), hex.slice(2));
        if (statSync(final, { throwIfNoEntry: false })) {
          const now = new Date();
          utimesSync(final, now, now);
          return { hex, size: got, existed: true };
        }
        tmp = writeTempSync(req, body);
        const r = commit(req, tmp, digest, got);
        tmp = undefined;
        return r;
      }
    }
    // Large (or growing) file: stream it through the hasher into the temporary file.
    const h = new FsVerityHasher();
    tmp = writeTempSync(req, (out) => {
      for (let pos = 0; ; ) {
        const n = readSync(fd, chunk, 0, CHUNK, pos);
        if (n === 0) break;
        h.update(chunk.subarray(0, n));
        writeAllSync(out, chunk.subarray(0, n));
        pos += n;
      }
    });
    const r = commit(req, tmp, h.digest(), h.size);
    tmp = undefined;
    return r;
  } catch (err) {
    if (tmp) {
      try {
        unlinkSync(tmp);
      } catch {
        /* already gone */
      }
    }
    throw err;
  } finally {
    closeSync(fd);
  }
}

parentPort?.on('message', (req: AddRequest) => {
  const results: AddReply['results'] = req.paths.map((p) => {
    try {
      return addOne(req, p);
    } catch (err) {
      return { error: `${p}: ${ioMessage(err)}` };
    }
  });
  parentPort!.postMessage({ id: req.id, results } satisfies AddReply);
});
