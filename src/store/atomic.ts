/**
 * Crash-safe file writes: content goes to a uniquely named temporary file in the same
 * filesystem (its name starts with the writer's process identity, so a leftover of a killed
 * writer is recognisable), is hashed while it is written, fsynced, and only then renamed into
 * place. A reader therefore sees either no file or the complete one.
 */
import { randomBytes } from 'node:crypto';
import { statSync } from 'node:fs';
import { open, unlink, utimes, mkdir } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { FsVerityHasher } from '../verity/digest.js';
import { selfId } from './procid.js';
import { StoreError } from './errors.js';

let seq = 0;

/** Suffix of every temporary file. */
export const TEMP_SUFFIX = '.tmp';

/** A fresh temporary file name in `dir`: `.<pid>-<start>-<n>-<random>.tmp` (hidden, so a
 * temporary file inside an objects directory is never mistaken for an object). */
export function tempPath(dir: string): string {
  return join(dir, `.${selfId()}-${++seq}-${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`);
}

/** True if a directory entry name is one of our temporary files. */
export function isTempName(name: string): boolean {
  return name.startsWith('.') && name.endsWith(TEMP_SUFFIX);
}

/** Anything addStream accepts. */
export type ByteSource = AsyncIterable<Uint8Array | string> | NodeJS.ReadableStream;

/** Chunks of a file, read 1 MiB at a time from `start` (default: the current position; the
 * buffer is reused: consume each chunk before asking for the next). */
export async function* fileChunks(fh: FileHandle, chunkSize = 1 << 20, start?: number): AsyncGenerator<Uint8Array> {
  const buf = Buffer.allocUnsafe(chunkSize);
  let pos = start;
  for (;;) {
    const { bytesRead } = await fh.read(buf, 0, chunkSize, pos ?? null);
    if (bytesRead === 0) return;
    if (pos !== undefined) pos += bytesRead;
    yield buf.subarray(0, bytesRead);
  }
}

/** Result of writeTemp. */
export interface TempFile {
  path: string;
  digest: Buffer;
  size: number;
}

/** Write `src` to a new temporary file in `tmpDir` while computing its fs-verity digest; the
 * file is fsynced (unless `sync` is false) and closed. On any error the file is removed. */
export async function writeTemp(tmpDir: string, src: ByteSource | Uint8Array, opts: { sync?: boolean; what?: string } = {}): Promise<TempFile> {
  const path = tempPath(tmpDir);
  // A Node stream may fail before we start reading it (e.g. a file stream whose open fails
  // while we create the temporary file): hold on to that error instead of crashing.
  const emitter = src as { on?: unknown; off?: unknown };
  let early: unknown;
  const onEarly = (e: unknown): void => {
    early ??= e;
  };
  const isEmitter = !(src instanceof Uint8Array) && typeof emitter.on === 'function' && typeof emitter.off === 'function';
  if (isEmitter) (src as NodeJS.EventEmitter).on('error', onEarly);
  let fh: FileHandle;
  try {
    try {
      fh = await open(path, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      await mkdir(tmpDir, { recursive: true });
      fh = await open(path, 'wx', 0o644);
    }
  } catch (err) {
    if (isEmitter) (src as NodeJS.EventEmitter).off('error', onEarly);
    throw err;
  }
  const h = new FsVerityHasher();
  try {
    if (src instanceof Uint8Array) {
      h.update(src);
      await writeAll(fh, src);
    } else {
      for await (const c of src as AsyncIterable<Uint8Array | string>) {
        const chunk = typeof c === 'string' ? Buffer.from(c) : c;
        if (chunk.length === 0) continue;
        h.update(chunk);
        await writeAll(fh, chunk);
      }
    }
    if (early !== undefined) throw early;
    if (opts.sync !== false) await fh.sync();
    await fh.close();
  } catch (err) {
    err = early ?? err;
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw err instanceof StoreError ? err : new StoreError('WRITE_FAILED', `${opts.what ?? path}: ${(err as Error).message}`, { cause: err });
  } finally {
    if (isEmitter) (src as NodeJS.EventEmitter).off('error', onEarly);
  }
  return { path, digest: h.digest(), size: h.size };
}

async function writeAll(fh: FileHandle, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) {
    const { bytesWritten } = await fh.write(data, off, data.length - off);
    off += bytesWritten;
  }
}

/** Set a file's times to now; false if it does not exist. Used as "exists, and keep it".
 * (A synchronous stat first: for the common "not there" case it costs a few microseconds,
 * where a failing asynchronous call costs a thread-pool round trip and an exception.) */
export async function touch(path: string): Promise<boolean> {
  if (!statSync(path, { throwIfNoEntry: false })) return false;
  const now = new Date();
  try {
    await utimes(path, now, now);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** fsync a directory so that renames into it survive a power loss. */
export async function fsyncDir(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  } finally {
    await fh?.close();
  }
}

/** Flush the dirty data and metadata of the filesystem holding `path` to disk: syncfs(2), through
 * coreutils `sync -f` (Node has no syncfs). One call makes a batch of files durable at once. */
export function syncFilesystem(path: string): Promise<void> {
  return import('node:child_process').then(
    ({ execFile }) =>
      new Promise<void>((resolve, reject) => {
        execFile('sync', ['-f', path], (err) => (err ? reject(new StoreError('SYNC_FAILED', `sync -f ${path}: ${err.message}`)) : resolve()));
      }),
  );
}
