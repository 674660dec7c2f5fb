/**
 * The thread a FUSE session runs on (see server.ts for why a thread of its own). The main
 * thread hands over the /dev/fuse descriptor, the verified image (shared memory, not copied)
 * and the objects directory; lazy fetches are asked of the main thread, which owns the fetcher
 * (a network client, or a test's fake). Messages to the main thread: `init` once the kernel's
 * INIT is answered, `log` lines, `fetch` requests and `abort`s of them (their deadline passed),
 * and `done` with counters at the end.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { ErofsImage } from '../../erofs/reader.js';
import type { ObjectFetcher } from '../fetcher.js';
import { ImageFs } from './fs.js';
import { FuseSession } from './server.js';
import { VerifiedObjects } from './verified.js';

/** What the main thread passes to the worker. */
export interface WorkerInput {
  fd: number;
  /** The image bytes (already verified), or the path of an image too large to hold. */
  image: SharedArrayBuffer | string;
  imageName: string;
  objects: string;
  /** Whether missing objects may be fetched (through the main thread). */
  fetch: boolean;
  /** Overall deadline of one fetch (ms). */
  fetchDeadlineMs?: number;
  validSec?: number;
}

/** Messages from the worker. */
export type WorkerMessage =
  | { type: 'init' }
  | { type: 'log'; line: string }
  | { type: 'fetch'; id: number; hex: string; size: number }
  | { type: 'abort'; id: number }
  | { type: 'done'; error?: string; stats: Record<string, number>; requests: Record<string, number> };

/** Replies to fetch requests. */
export interface FetchReply {
  id: number;
  error?: string;
}

async function main(): Promise<void> {
  const port = parentPort!;
  const input = workerData as WorkerInput;
  const post = (m: WorkerMessage): void => port.postMessage(m);
  const log = (line: string): void => post({ type: 'log', line });
  const image = typeof input.image === 'string' ? ErofsImage.open(input.image, { lazy: true }) : ErofsImage.fromBuffer(Buffer.from(input.image), input.imageName);
  const pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  let nextId = 1;
  port.on('message', (r: FetchReply) => {
    const p = pending.get(r.id);
    pending.delete(r.id);
    if (r.error === undefined) p?.resolve();
    else p?.reject(new Error(r.error));
  });
  const fetcher: ObjectFetcher | undefined = input.fetch
    ? {
        fetch: (digest, size, signal) =>
          new Promise<void>((resolve, reject) => {
            const id = nextId++;
            const onAbort = (): void => {
              pending.delete(id);
              post({ type: 'abort', id });
              reject(signal!.reason instanceof Error ? signal!.reason : new Error('fetch aborted'));
            };
            signal?.addEventListener('abort', onAbort, { once: true });
            const done = (): void => signal?.removeEventListener('abort', onAbort);
            pending.set(id, {
              resolve: () => (done(), resolve()),
              reject: (e) => (done(), reject(e)),
            });
            post({ type: 'fetch', id, hex: digest.toString('hex'), size });
          }),
      }
    : undefined;
  const objects = new VerifiedObjects(input.objects, { fetcher, fetchDeadlineMs: input.fetchDeadlineMs });
  const fs = new ImageFs(image, objects, { log });
  const session = new FuseSession(input.fd, fs, { validSec: input.validSec, log, onInit: () => post({ type: 'init' }), closeFd: false });
  let error: string | undefined;
  try {
    await session.serve();
  } catch (e) {
    error = (e as Error).message;
  } finally {
    // Fetches still under way fail now (their readers are gone with the mount): their deadline
    // timers end, and with them this thread.
    for (const p of pending.values()) p.reject(new Error('the FUSE session ended'));
    pending.clear();
    fs.closeAll();
    image.close();
  }
  const requests: Record<string, number> = {};
  for (const [op, n] of session.counts) requests[String(op)] = n;
  post({ type: 'done', error, stats: { ...objects.stats, interrupted: session.interrupted }, requests });
  port.close();
}

await main();
