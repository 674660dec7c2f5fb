/**
 * Worker thread of applyDeltaOffThread (apply-thread.ts): rebuild the target image from the
 * base image file and a tree delta, bounded by the signed image size, and work out the
 * image's objects from the tree it was written from. One request per worker.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { readFileSync } from 'node:fs';
import { applyDeltaTree } from './delta.js';
import { factsOfTree } from '../sign/image-facts.js';

/** The request (workerData). */
export interface ApplyRequest {
  basePath: string;
  delta: Uint8Array;
  expected: Uint8Array;
  imageSize: number;
}

/** The answer: the image and its objects (digests concatenated, 32 bytes each), or the error. */
export type ApplyReply =
  | { ok: true; image: Uint8Array; digests: Uint8Array; sizes: number[]; totalSize: number }
  | { ok: false; code: string; message: string };

const req = workerData as ApplyRequest;
let reply: ApplyReply;
try {
  const toBuf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
  const { image, tree } = applyDeltaTree(readFileSync(req.basePath), toBuf(req.delta), toBuf(req.expected), { imageSize: req.imageSize });
  const facts = factsOfTree(tree, 'delta result');
  const digests = new Uint8Array(facts.count * 32);
  facts.objects.forEach((o, i) => digests.set(o.digest, i * 32));
  reply = { ok: true, image, digests, sizes: facts.objects.map((o) => o.size), totalSize: facts.totalSize };
} catch (err) {
  reply = { ok: false, code: (err as { code?: string }).code ?? 'DELTA_CORRUPT', message: (err as Error).message };
}
const transfer = reply.ok ? [reply.image.buffer as ArrayBuffer, reply.digests.buffer as ArrayBuffer] : [];
parentPort!.postMessage(reply, transfer);
