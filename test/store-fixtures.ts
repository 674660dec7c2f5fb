/**
 * Deterministic workloads shared by the store tests and their child processes
 * (test/store-child.ts): object contents, "pulls" (objects + image + tag under one lease).
 */
import { createCipheriv, createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import type { Store } from '../src/store/store.js';

/** Compiled child script. */
export const CHILD = join(dirname(fileURLToPath(import.meta.url)), 'store-child.js');

/** Deterministic pseudo-random bytes for (seed, i). */
export function bytesFor(seed: string, i: number, size: number): Buffer {
  const key = createHash('sha256').update(`${seed}/${i}`).digest().subarray(0, 16);
  return createCipheriv('aes-128-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** Size of object i of a workload: mostly under 12 KB, every 40th about 300 KiB (so a kill can
 * land in the middle of a write), and a few empty ones. */
export function sizeFor(seed: string, i: number): number {
  if (i % 40 === 39) return 300 * 1024 + (i % 7);
  const h = createHash('sha256').update(`size/${seed}/${i}`).digest();
  return i % 97 === 5 ? 0 : h.readUInt32LE(0) % 12000;
}

/** Object contents of a pull: `shared` objects common to every seed, then own ones. */
export function pullObjects(seed: string, count: number, shared = Math.floor(count / 2)): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) out.push(i < shared ? bytesFor('common', i, sizeFor('common', i)) : bytesFor(seed, i, sizeFor(seed, i)));
  return out;
}

/** A stand-in image: the store does not parse images, it only needs bytes and the object list. */
export function imageBytes(seed: string, digests: Buffer[]): Buffer {
  return Buffer.concat([Buffer.from(`fake composefs image ${seed}\n`), ...digests]);
}

/** One pull: under a lease, add the objects (8 at a time), the image, then the tag. */
export async function runPull(store: Store, seed: string, count: number, tag: string): Promise<Buffer> {
  return store.withLease(async () => {
    const objects = pullObjects(seed, count);
    const digests: Buffer[] = new Array(objects.length);
    let next = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < objects.length) {
          const i = next++;
          digests[i] = (await store.objects.addBuffer(objects[i])).digest;
        }
      }),
    );
    const image = await store.addImage(imageBytes(seed, digests), digests);
    await store.setTag('crash', tag, image);
    return image;
  });
}

/** Start the child script with arguments; collects stdout. */
export function startChild(args: string[]): { child: ChildProcess; stdout: () => string; ready: Promise<void>; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> } {
  const child = spawn(process.execPath, [CHILD, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let onReady: () => void = () => undefined;
  const ready = new Promise<void>((r) => (onReady = r));
  child.stdout!.on('data', (c: Buffer) => {
    out += c.toString();
    if (out.includes('ready\n')) onReady();
  });
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>((resolve) =>
    child.on('close', (code, signal) => {
      onReady();
      resolve({ code, signal, stderr: err });
    }),
  );
  return { child, stdout: () => out, ready, exit };
}
