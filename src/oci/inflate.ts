/**
 * Gunzip on its own thread, with the blob digest and the diff_id checked there too.
 *
 * Node's zlib needs a callback on the owning thread after every output chunk; when that thread
 * is also parsing tar headers and copying file contents, inflate and parsing take turns
 * instead of overlapping. Here a worker owns the gunzip stream and writes the tar bytes into a
 * shared ring buffer (fixed size: bounded memory); this thread reads them as chunks that are
 * valid until the next one is asked for (the ByteReader contract, see bytes.ts). Compressed
 * input goes the other way through a second shared ring. Both rings are the only buffers of
 * data in flight, so memory is fixed whatever the blob size. The SHA-256 of the blob and of
 * the tar stream are computed by the worker; a mismatch fails the stream at its end.
 */
import { Worker } from 'node:worker_threads';
import { DecompressError, SourceError } from './errors.js';
import { parseDigest } from './source.js';
import type { InflateConfig, InflateReply, InflateRequest } from './inflate-worker.js';

/** Options of `inflateOffThread`. */
export interface InflateOptions {
  /** Expected blob digest (`sha256:…`) and size, checked at the end. */
  digest?: string;
  size?: number;
  /** Expected digest of the uncompressed tar stream (config diff_id). */
  diffId?: string;
  /** Name for messages. */
  what: string;
  /** Ring size (default 8 MiB). */
  ringSize?: number;
  /** Called with each compressed chunk's size as it is fed (progress). */
  onInput?: (n: number) => void;
}

const INPUT_RING = 4 << 20;

/** Gunzip `src` (raw, unverified blob bytes) on a worker thread; yields the tar stream. */
export async function* inflateOffThread(src: AsyncIterable<Uint8Array>, opts: InflateOptions): AsyncGenerator<Buffer> {
  const blobD = opts.digest ? parseDigest(opts.digest, opts.what) : undefined;
  const diffD = opts.diffId ? parseDigest(opts.diffId, `${opts.what} diff_id`) : undefined;
  const ring = new SharedArrayBuffer(opts.ringSize ?? 8 << 20);
  const view = Buffer.from(ring);
  const input = new SharedArrayBuffer(INPUT_RING);
  const inView = Buffer.from(input);
  const cfg: InflateConfig = { ring, input, blobAlg: blobD?.alg, diffAlg: diffD?.alg };
  const worker = new Worker(new URL('./inflate-worker.js', import.meta.url), { workerData: cfg });

  // Events from the worker, consumed in order by the generator below.
  const queue: InflateReply[] = [];
  let wake: (() => void) | undefined;
  let failure: Error | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  let inflight = 0;
  let inputWake: (() => void) | undefined;
  worker.on('message', (r: InflateReply) => {
    if (r.t === 'inack') {
      inflight -= r.bytes;
      const w = inputWake;
      inputWake = undefined;
      w?.();
      return;
    }
    queue.push(r);
    notify();
  });
  worker.on('error', (err) => {
    failure ??= new DecompressError('INFLATE_FAILED', `${opts.what}: inflate worker failed: ${err.message}`);
    notify();
  });
  worker.on('exit', () => {
    failure ??= new DecompressError('INFLATE_FAILED', `${opts.what}: inflate worker exited`);
    notify();
    inputWake?.();
  });

  // Feed the compressed bytes through the input ring (space comes back as zlib consumes it;
  // the worker frees in the order the bytes were sent, so used space is one cyclic range).
  let stopFeeding = false;
  let inHead = 0;
  const feedPiece = async (c: Uint8Array): Promise<void> => {
    const n = c.length;
    for (;;) {
      if (stopFeeding || failure) return;
      const gap = inHead + n > INPUT_RING ? INPUT_RING - inHead : 0;
      if (inflight + gap + n <= INPUT_RING) {
        const off = gap ? 0 : inHead;
        inView.set(c, off);
        inHead = off + n === INPUT_RING ? 0 : off + n;
        inflight += gap + n;
        worker.postMessage({ t: 'in', off, len: n, bytes: gap + n } satisfies InflateRequest);
        return;
      }
      await new Promise<void>((r) => (inputWake = r));
    }
  };
  const feed = (async () => {
    try {
      for await (const c of src) {
        if (stopFeeding || failure) break;
        opts.onInput?.(c.length);
        // Pieces of at most a quarter of the ring, so a big source chunk never blocks forever.
        for (let o = 0; o < c.length; o += INPUT_RING / 4) await feedPiece(c.subarray(o, Math.min(c.length, o + INPUT_RING / 4)));
      }
      if (!stopFeeding && !failure) worker.postMessage({ t: 'end' } satisfies InflateRequest);
    } catch (err) {
      failure ??= err as Error; // a source error (e.g. a read failure) ends the stream as is
      notify();
    }
  })();

  // Ring space of chunks already consumed (the caller asked for the next one), returned in
  // batches of at least 1 MiB, or before waiting.
  let credit = 0;
  let last = 0;
  const giveBack = (): void => {
    if (credit) worker.postMessage({ t: 'credit', bytes: credit } satisfies InflateRequest);
    credit = 0;
  };
  try {
    for (;;) {
      credit += last;
      last = 0;
      if (credit >= 1 << 20) giveBack();
      if (queue.length === 0) giveBack();
      while (queue.length === 0 && !failure) await new Promise<void>((r) => (wake = r));
      const r = queue.shift();
      if (!r) throw failure!;
      if (r.t === 'out') {
        last = r.bytes;
        yield view.subarray(r.off, r.off + r.len);
        continue;
      }
      if (r.t === 'error') {
        const truncated = r.code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(r.message);
        throw new DecompressError(truncated ? 'GZIP_TRUNCATED' : 'GZIP_CORRUPT', `${opts.what}: ${truncated ? 'truncated gzip data' : `corrupt gzip data: ${r.message}`}`);
      }
      if (r.t === 'done') {
        await feed;
        if (failure) throw failure;
        if (opts.size !== undefined && r.blobBytes !== opts.size) throw new SourceError('SIZE_MISMATCH', `${opts.what}: ${r.blobBytes} bytes, descriptor says ${opts.size}`);
        if (blobD && r.blob !== blobD.hex) throw new SourceError('DIGEST_MISMATCH', `${opts.what}: content does not match digest ${opts.digest}`);
        if (diffD && r.diff !== diffD.hex) throw new SourceError('DIGEST_MISMATCH', `${opts.what}: uncompressed content does not match diff_id ${opts.diffId}`);
        return;
      }
    }
  } finally {
    stopFeeding = true;
    inputWake?.();
    worker.removeAllListeners('exit');
    await worker.terminate();
    await feed.catch(() => undefined);
  }
}
