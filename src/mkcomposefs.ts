/**
 * `mkcomposefs`: dumpfile or directory → composefs image file. The output appears atomically
 * (temp file + rename) and nothing is left behind when the build fails.
 */
import { writeSync } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { DumpfileParser } from './dumpfile/parser.js';
import { type ImageInfo, writeImage, writeImageTo } from './erofs/writer.js';
import type { Inode } from './tree/tree.js';
import { CfsError } from './errors.js';

/** What to build and where. */
export interface BuildRequest {
  /** Dumpfile path (`-` = stdin) when `fromFile`, else a directory. */
  source: string;
  fromFile: boolean;
  /** Output image path (`-` = stdout). */
  out: string;
  /** Directory sources: copy regular files into this objects dir (DIR/xx/…). */
  digestStore?: string;
  /** Directory sources: regular files of at most this many bytes are inlined (default 64, as
   *  C mkcomposefs). */
  inlineMax?: number;
  minVersion?: number;
  maxVersion?: number;
  /** Upstream's CFS_PARSE_STRICT dumpfile checks. */
  strict?: boolean;
  /** Compute the image's fs-verity digest. */
  wantDigest?: boolean;
}

/** What was built. */
export interface BuildResult {
  size: number;
  digest?: string;
  inodes: number;
}

/** Read the source into a Tree. */
export async function readSource(req: Pick<BuildRequest, 'source' | 'fromFile' | 'digestStore' | 'inlineMax' | 'strict'>): Promise<Inode> {
  if (req.fromFile) {
    const parser = new DumpfileParser({ strict: req.strict, source: req.source === '-' ? '<stdin>' : req.source });
    if (req.source === '-') {
      for await (const c of process.stdin) parser.push(c as Buffer);
    } else {
      await readChunks(req.source, (c) => parser.push(c));
    }
    return parser.end();
  }
  const { readDirectory } = await import('./tree/from-directory.js');
  return readDirectory(req.source, { digestStore: req.digestStore, inlineMax: req.inlineMax });
}

/** Read chunk size: the dumpfile is parsed as it is read, never held whole. */
const READ_CHUNK = 1 << 20;

/** Feed the file at `path` to `each` in chunks of one reused buffer. */
async function readChunks(path: string, each: (chunk: Buffer) => void): Promise<void> {
  const fail = (e: NodeJS.ErrnoException): never => {
    throw new CfsError('IO', `cannot read dumpfile ${path}: ${e.message}`);
  };
  const fh = await open(path, 'r').catch(fail);
  try {
    const buf = Buffer.allocUnsafe(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null).catch(fail);
      if (bytesRead === 0) return;
      each(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
}

/** Build the image and write it to `req.out`. */
export async function buildImage(req: BuildRequest): Promise<BuildResult> {
  const root = await readSource(req);
  const opts = { minVersion: req.minVersion, maxVersion: req.maxVersion };
  if (req.out !== '-' && !req.wantDigest) {
    // Straight to the file: the image is written as it is serialised, never held whole.
    let info: ImageInfo | undefined;
    await writeFileAtomic(req.out, (write) => {
      info = writeImageTo(root, opts, write);
    });
    return { size: info!.size, inodes: info!.inodes };
  }
  const image = writeImage(root, opts);
  let digest: string | undefined;
  if (req.wantDigest) {
    const { fsverityDigest, toHex } = await import('./verity/digest.js');
    digest = toHex(fsverityDigest(image));
  }
  if (req.out === '-') {
    await new Promise<void>((res, rej) => process.stdout.write(image, (e) => (e ? rej(e) : res())));
  } else {
    await writeFileAtomic(req.out, image);
  }
  return { size: image.length, digest, inodes: image.readUInt32LE(1024 + 16) };
}

/** Produces a file's bytes synchronously through `write`, in order. */
export type Producer = (write: (chunk: Uint8Array) => void) => void;

/**
 * Write `data` (bytes, or a producer of them) to `path` through a temp file in the same
 * directory, fsync, rename. An error thrown by a producer itself is passed on unchanged;
 * I/O errors become CfsError IO.
 */
export async function writeFileAtomic(path: string, data: Uint8Array | Producer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  let fh;
  let producerError: unknown;
  try {
    fh = await open(tmp, 'wx', 0o644);
    if (typeof data === 'function') {
      const fd = fh.fd;
      producerError = runProducer(data, (chunk) => writeAllSync(fd, chunk));
      if (producerError !== undefined) throw producerError;
    } else {
      await fh.writeFile(data);
    }
    await fh.sync();
    await fh.close();
    fh = undefined;
    await rename(tmp, path);
  } catch (e) {
    await fh?.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    if (producerError !== undefined && e === producerError) throw e;
    const err = e as NodeJS.ErrnoException;
    throw new CfsError('IO', `cannot write ${path}: ${err.message}`);
  }
}

/**
 * Run a producer. Returns what it threw that is not a write error (undefined when it
 * finished); rethrows write errors, which are I/O failures of the output file.
 */
function runProducer(produce: Producer, write: (chunk: Uint8Array) => void): unknown {
  let writeError: unknown;
  try {
    produce((chunk) => {
      try {
        write(chunk);
      } catch (e) {
        writeError = e;
        throw e;
      }
    });
    return undefined;
  } catch (e) {
    if (writeError !== undefined && e === writeError) throw e;
    return e ?? new Error('producer threw undefined');
  }
}

/** writeSync until all of `chunk` is written (a write may be short). */
function writeAllSync(fd: number, chunk: Uint8Array): void {
  for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off, chunk.length - off);
}
