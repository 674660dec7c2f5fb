/**
 * Layer decompression: gzip through node:zlib (streaming, on libuv's thread pool, so it runs
 * beside the tar parser), zstd through the Debian `zstd -dc` binary as a child process (Node 20
 * has no zstd in zlib; it arrived in 22.15), uncompressed tar passed through. The format is
 * recognised by magic bytes (1f 8b gzip, 28 b5 2f fd zstd); a media type that names a
 * compression the bytes do not have is an error.
 */
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { CfsError } from '../errors.js';
import { DecompressError } from './errors.js';

/** Compression of a layer blob. */
export type Compression = 'gzip' | 'zstd' | 'none';

const OUT_CHUNK = 256 << 10;

/** The compression a layer media type declares, or undefined for an unknown media type. */
export function compressionOfMediaType(mediaType: string): Compression | undefined {
  const mt = mediaType.trim().toLowerCase();
  if (/\+gzip$|\.tar\.gzip$|\.gzip$/.test(mt)) return 'gzip';
  if (/\+zstd$|\.zstd$/.test(mt)) return 'zstd';
  if (/(\.|\/)tar$|\.diff\.tar$|\+tar$/.test(mt) || mt === 'application/x-tar') return 'none';
  return undefined;
}

/** The compression recognised from the first bytes of a blob. */
export function sniffCompression(head: Uint8Array): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head[0] === 0x28 && head[1] === 0xb5 && head[2] === 0x2f && head[3] === 0xfd) return 'zstd';
  return 'none';
}

/** Options for `decompress`. */
export interface DecompressOptions {
  /** The layer's media type, if the source gives one. */
  mediaType?: string;
  /** A name for messages (e.g. the layer digest). */
  name?: string;
  /** Called once the compression is known. */
  onFormat?: (c: Compression) => void;
}

/** Recognise a blob's compression from its first bytes (checked against the media type) and
 *  give back a stream that still starts at byte 0. */
export async function peekCompression(src: AsyncIterable<Uint8Array>, opts: { mediaType?: string; name?: string } = {}): Promise<{ format: Compression; stream: AsyncIterable<Buffer> }> {
  const where = opts.name ? `${opts.name}: ` : '';
  const it = src[Symbol.asyncIterator]();
  // Peek at least 4 bytes for the magic.
  const head: Buffer[] = [];
  let headLen = 0;
  let ended = false;
  while (headLen < 4) {
    const r = await it.next();
    if (r.done) {
      ended = true;
      break;
    }
    const b = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
    head.push(b);
    headLen += b.length;
  }
  const first = head.length === 1 ? head[0]! : Buffer.concat(head);
  const sniffed = sniffCompression(first);
  const declared = opts.mediaType ? compressionOfMediaType(opts.mediaType) : undefined;
  if (declared && declared !== 'none' && declared !== sniffed) {
    await it.return?.();
    throw new DecompressError('COMPRESSION_MISMATCH', `${where}media type ${opts.mediaType} declares ${declared} but the data is ${sniffed === 'none' ? 'not compressed' : sniffed}`);
  }
  const stream: AsyncIterable<Buffer> = {
    [Symbol.asyncIterator]: async function* () {
      try {
        if (first.length) yield first;
        if (ended) return;
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          yield Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value.buffer, r.value.byteOffset, r.value.length);
        }
      } finally {
        await it.return?.();
      }
    },
  };
  return { format: sniffed, stream };
}

/** Decompress a layer blob given as chunks; yields the tar stream's chunks. */
export async function* decompress(src: AsyncIterable<Uint8Array>, opts: DecompressOptions = {}): AsyncGenerator<Buffer> {
  const where = opts.name ? `${opts.name}: ` : '';
  const { format, stream } = await peekCompression(src, opts);
  opts.onFormat?.(format);
  if (format === 'none') yield* stream;
  else if (format === 'gzip') yield* gunzip(stream, where);
  else yield* unzstd(stream, where);
}

async function* gunzip(src: AsyncIterable<Buffer>, where: string): AsyncGenerator<Buffer> {
  const input = Readable.from(src, { objectMode: false, highWaterMark: 1 << 20 });
  const z = createGunzip({ chunkSize: OUT_CHUNK });
  let srcErr: unknown;
  input.on('error', (e) => {
    srcErr = e;
    z.destroy(e);
  });
  input.pipe(z);
  try {
    for await (const chunk of z) yield chunk as Buffer;
  } catch (e) {
    throw mapError(srcErr ?? e, where, 'gzip');
  } finally {
    input.destroy();
    z.destroy();
  }
}

async function* unzstd(src: AsyncIterable<Buffer>, where: string): AsyncGenerator<Buffer> {
  // Node 20 has no zstd: run Debian's `zstd -dc` and stream the layer through it.
  const child = spawn('zstd', ['-dcq'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    if (stderr.length < 4096) stderr += d;
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; err?: Error }>((resolve) => {
    child.on('error', (err) => resolve({ code: null, signal: null, err }));
    child.on('close', (code, signal) => resolve({ code, signal }));
  });
  let srcErr: unknown;
  const feed = (async () => {
    try {
      for await (const c of src) {
        if (!child.stdin.write(c)) await new Promise<void>((res, rej) => {
          const onDrain = (): void => { cleanup(); res(); };
          const onErr = (e: Error): void => { cleanup(); rej(e); };
          const cleanup = (): void => { child.stdin.off('drain', onDrain); child.stdin.off('error', onErr); child.stdin.off('close', onDrain); };
          child.stdin.on('drain', onDrain);
          child.stdin.on('error', onErr);
          child.stdin.on('close', onDrain);
        });
        if (child.stdin.destroyed) break;
      }
    } catch (e) {
      // EPIPE when zstd stopped reading (bad data): its exit status says why.
      if ((e as NodeJS.ErrnoException).code !== 'EPIPE') {
        srcErr = e;
        child.kill('SIGKILL');
      }
    } finally {
      child.stdin.end();
    }
  })();
  child.stdin.on('error', () => { /* reported through the exit status */ });
  let complete = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    await feed;
    const st = await exited;
    if (srcErr) throw mapError(srcErr, where, 'zstd');
    if (st.err) {
      const missing = (st.err as NodeJS.ErrnoException).code === 'ENOENT';
      throw new DecompressError(missing ? 'ZSTD_MISSING' : 'ZSTD_FAILED', `${where}${missing ? 'zstd layers need the zstd tool (Debian package zstd)' : 'cannot run zstd: ' + st.err.message}`);
    }
    if (st.code !== 0) throw new DecompressError('ZSTD_CORRUPT', `${where}corrupt zstd data: ${stderr.trim().split('\n').pop() ?? `zstd exited with ${st.code ?? st.signal}`}`);
    complete = true;
  } finally {
    if (!complete) {
      child.kill('SIGKILL');
      await feed.catch(() => undefined);
      await exited;
    }
  }
}

function mapError(e: unknown, where: string, what: string): Error {
  if (e instanceof CfsError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(err?.message ?? '')) {
    return new DecompressError('GZIP_TRUNCATED', `${where}truncated ${what} data`, { cause: e });
  }
  if (typeof err?.code === 'string' && err.code.startsWith('Z_')) {
    return new DecompressError('GZIP_CORRUPT', `${where}corrupt ${what} data: ${err.message}`, { cause: e });
  }
  return e instanceof Error ? e : new Error(String(e));
}
