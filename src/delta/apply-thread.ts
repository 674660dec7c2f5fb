/**
 * Applying a tree delta off the event loop: the rebuild (parse, patch, write, hash) of a large
 * image takes long enough to stall a pull's other work (connections, progress) and a lazy
 * mount's requests, so it runs on a worker thread of its own, bounded by the signed image size
 * (applyDeltaTree's limits).
 */
import { Worker } from 'node:worker_threads';
import type { ImageFacts } from '../sign/image-facts.js';
import { DeltaError } from './errors.js';
import type { ApplyReply, ApplyRequest } from './apply-worker.js';

/** The image a delta rebuilds from the base image at `basePath`, with its objects. */
export function applyDeltaOffThread(basePath: string, delta: Buffer, expected: Buffer, imageSize: number): Promise<{ image: Buffer; facts: ImageFacts }> {
  const data: ApplyRequest = { basePath, delta, expected, imageSize };
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./apply-worker.js', import.meta.url), { workerData: data });
    let done = false;
    w.once('message', (r: ApplyReply) => {
      done = true;
      if (!r.ok) return reject(new DeltaError(r.code, r.message));
      const digests = Buffer.from(r.digests.buffer, r.digests.byteOffset, r.digests.byteLength);
      const objects = r.sizes.map((size, i) => ({ digest: digests.subarray(i * 32, i * 32 + 32), size }));
      resolve({ image: Buffer.from(r.image.buffer, r.image.byteOffset, r.image.byteLength), facts: { objects, count: objects.length, totalSize: r.totalSize } });
    });
    w.once('error', (err) => {
      done = true;
      reject(new DeltaError('DELTA_CORRUPT', `applying the delta failed: ${err.message}`));
    });
    w.once('exit', (code) => {
      if (!done) reject(new DeltaError('DELTA_CORRUPT', `delta worker exited with ${code}`));
    });
  });
}
