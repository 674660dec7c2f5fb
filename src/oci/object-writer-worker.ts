/**
 * Worker thread of ObjectWriter (object-writer.ts): hashes file contents (fs-verity) and writes
 * new objects into a composefs objects directory with plain synchronous system calls, off the
 * thread that parses the tar stream. Protocol: see `WriterRequest` / `WriterReply`.
 */
import { parentPort, threadId, workerData } from 'node:worker_threads';
import { closeSync, mkdirSync, openSync, renameSync, statSync, unlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { FsVerityHasher, fsverityDigest, toHex } from '../verity/digest.js';
import { TEMP_SUFFIX } from '../store/atomic.js';
import { selfId } from '../store/procid.js';

/** Messages to the worker. File bytes are in the shared ring at [off, off + len); `bytes` is
 *  the ring space to hand back once they are used (len plus any skipped end-of-ring gap). */
export type WriterRequest =
  | { t: 'file'; id: number; off: number; len: number; bytes: number }
  | { t: 'begin'; id: number }
  | { t: 'chunk'; id: number; off: number; len: number; bytes: number }
  | { t: 'end'; id: number }
  | { t: 'abort'; id: number }
  | { t: 'close'; id: number };

/** Messages from the worker. `bytes` returns flow-control credit. */
export type WriterReply =
  | { t: 'ack'; id: number; bytes: number }
  | { t: 'done'; id: number; bytes: number; digest: Uint8Array; size: number; existed: boolean; tmp?: string }
  | { t: 'error'; id: number; bytes: number; message: string }
  | { t: 'closed'; id: number; bytes: number };

/** Worker configuration. */
export interface WriterConfig {
  /** Objects directory (DIR/xx/<62 hex>). */
  dir: string;
  /** Temporary directory on the same filesystem. */
  tmpDir: string;
  /** Rename finished objects into place here (false: reply with the temp path instead). */
  commit: boolean;
  /** The shared ring buffer file bytes arrive in. */
  ring: SharedArrayBuffer;
}

interface Open {
  fd: number;
  tmp: string;
  hasher: FsVerityHasher;
}

const cfg = workerData as WriterConfig;
const ring = Buffer.from(cfg.ring);
const madeDirs = new Set<string>();
const open = new Map<number, Open>();

/** Replies are collected while one message (or batch) is handled and posted together: one
 *  wake-up of the main thread per batch, not per file. */
let outbox: WriterReply[] = [];

function post(r: WriterReply): void {
  outbox.push(r);
}

function sendOutbox(): void {
  if (outbox.length === 0) return;
  parentPort!.postMessage(outbox);
  outbox = [];
}

function writeAll(fd: number, b: Uint8Array): void {
  let off = 0;
  while (off < b.length) off += writeSync(fd, b, off, b.length - off);
}

let seq = 0;
/** The store's temp-name pattern (`.<pid>-<start>-…​.tmp`, so fsck/gc know whose it is), made
 *  unique by this worker's thread id and a counter instead of random bytes. */
function tempName(): string {
  return join(cfg.tmpDir, `.${selfId()}-w${threadId}-${++seq}${TEMP_SUFFIX}`);
}

function newTemp(): { fd: number; tmp: string } {
  const tmp = tempName();
  try {
    return { fd: openSync(tmp, 'wx', 0o644), tmp };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    mkdirSync(cfg.tmpDir, { recursive: true });
    return { fd: openSync(tmp, 'wx', 0o644), tmp };
  }
}

/** If the object exists, refresh its mtime (gc grace, as ObjectDir does) and say so. */
function present(final: string): boolean {
  const st = statSync(final, { throwIfNoEntry: false });
  if (!st?.isFile()) return false;
  const now = new Date();
  utimesSync(final, now, now);
  return true;
}

/** Move a finished temp file into place (or hand it back); returns [existed, tmp?].
 *  `checked`: the caller already found the object absent. */
function commit(tmp: string, digest: Buffer, checked = false): [boolean, string | undefined] {
  const hex = toHex(digest);
  const final = join(cfg.dir, hex.slice(0, 2), hex.slice(2));
  if (!checked && present(final)) {
    unlinkSync(tmp);
    return [true, undefined];
  }
  if (!cfg.commit) return [false, tmp];
  const sub = join(cfg.dir, hex.slice(0, 2));
  if (!madeDirs.has(sub)) {
    mkdirSync(sub, { recursive: true });
    madeDirs.add(sub);
  }
  renameSync(tmp, final);
  return [false, undefined];
}

function handle(m: WriterRequest): void {
  switch (m.t) {
    case 'file': {
      const data = ring.subarray(m.off, m.off + m.len);
      const digest = fsverityDigest(data);
      const hex = toHex(digest);
      if (present(join(cfg.dir, hex.slice(0, 2), hex.slice(2)))) {
        post({ t: 'done', id: m.id, bytes: m.bytes, digest, size: m.len, existed: true });
        return;
      }
      const { fd, tmp } = newTemp();
      try {
        writeAll(fd, data);
      } finally {
        closeSync(fd);
      }
      let result: [boolean, string | undefined];
      try {
        result = commit(tmp, digest, true);
      } catch (err) {
        try { unlinkSync(tmp); } catch { /* already gone */ }
        throw err;
      }
      post({ t: 'done', id: m.id, bytes: m.bytes, digest, size: m.len, existed: result[0], tmp: result[1] });
      return;
    }
    case 'begin': {
      const { fd, tmp } = newTemp();
      open.set(m.id, { fd, tmp, hasher: new FsVerityHasher() });
      return;
    }
    case 'chunk': {
      const o = open.get(m.id);
      if (!o) {
        post({ t: 'ack', id: m.id, bytes: m.bytes }); // aborted earlier
        return;
      }
      const data = ring.subarray(m.off, m.off + m.len);
      o.hasher.update(data);
      writeAll(o.fd, data);
      post({ t: 'ack', id: m.id, bytes: m.bytes });
      return;
    }
    case 'end': {
      const o = open.get(m.id);
      if (!o) return; // failed earlier; the error was reported then
      open.delete(m.id);
      closeSync(o.fd);
      const size = o.hasher.size;
      const digest = o.hasher.digest();
      let result: [boolean, string | undefined];
      try {
        result = commit(o.tmp, digest);
      } catch (err) {
        try { unlinkSync(o.tmp); } catch { /* already gone */ }
        throw err;
      }
      post({ t: 'done', id: m.id, bytes: 0, digest, size, existed: result[0], tmp: result[1] });
      return;
    }
    case 'close': {
      // Everything sent before was handled (messages are processed in order); drop leftovers.
      for (const [id, o] of open) {
        open.delete(id);
        try { closeSync(o.fd); } catch { /* closed */ }
        try { unlinkSync(o.tmp); } catch { /* already gone */ }
      }
      post({ t: 'closed', id: m.id, bytes: 0 });
      return;
    }
    case 'abort': {
      const o = open.get(m.id);
      if (o) {
        open.delete(m.id);
        closeSync(o.fd);
        try { unlinkSync(o.tmp); } catch { /* already gone */ }
      }
      return;
    }
  }
}

function handleOne(m: WriterRequest): void {
  try {
    handle(m);
  } catch (err) {
    const o = open.get(m.id);
    if (o) {
      open.delete(m.id);
      try { closeSync(o.fd); } catch { /* closed */ }
      try { unlinkSync(o.tmp); } catch { /* already gone */ }
    }
    const bytes = m.t === 'file' || m.t === 'chunk' ? m.bytes : 0;
    post({ t: 'error', id: m.id, bytes, message: (err as Error).message });
  }
}

parentPort!.on('message', (m: WriterRequest | WriterRequest[]) => {
  if (Array.isArray(m)) for (const x of m) handleOne(x);
  else handleOne(m);
  sendOutbox();
});
