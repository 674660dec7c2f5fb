/**
 * Worker threads for ObjectDir.addFiles (add-worker.ts): a few more threads than CPUs, since
 * each spends much of its time blocked in fsync. They keep the process alive only while busy.
 */
import { Worker } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import type { AddReply, AddRequest } from './add-worker.js';
import { StoreError } from './errors.js';

const PER_WORKER_INFLIGHT = 2;

interface Slot {
  worker: Worker;
  inflight: number;
  pending: Map<number, { resolve: (r: AddReply) => void; reject: (e: Error) => void }>;
}

/** A fixed set of add workers. */
export class AddPool {
  /** Number of worker threads. */
  readonly size: number;
  private slots: Slot[] = [];
  private queue: { req: Omit<AddRequest, 'id'>; resolve: (r: AddReply) => void; reject: (e: Error) => void }[] = [];
  private nextId = 1;

  constructor(size = Math.min(8, Math.max(4, 2 * availableParallelism()))) {
    this.size = size;
  }

  private spawn(): Slot {
    const worker = new Worker(new URL('./add-worker.js', import.meta.url));
    const slot: Slot = { worker, inflight: 0, pending: new Map() };
    worker.on('message', (r: AddReply) => {
      const p = slot.pending.get(r.id);
      if (!p) return;
      slot.pending.delete(r.id);
      if (--slot.inflight === 0) worker.unref();
      p.resolve(r);
      this.pump();
    });
    const fail = (err: Error): void => {
      this.slots = this.slots.filter((s) => s !== slot);
      for (const p of slot.pending.values()) p.reject(new StoreError('ADD_WORKER', `object add worker failed: ${err.message}`));
      slot.pending.clear();
      this.pump();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => {
      if (this.slots.includes(slot)) fail(new Error(`exited with code ${code}`));
    });
    worker.unref();
    this.slots.push(slot);
    return slot;
  }

  private pump(): void {
    while (this.queue.length > 0) {
      while (this.slots.length < this.size) this.spawn();
      let best: Slot | undefined;
      for (const s of this.slots) if (s.inflight < PER_WORKER_INFLIGHT && (!best || s.inflight < best.inflight)) best = s;
      if (!best) return;
      const t = this.queue.shift()!;
      const id = this.nextId++;
      best.pending.set(id, { resolve: t.resolve, reject: t.reject });
      if (best.inflight++ === 0) best.worker.ref();
      best.worker.postMessage({ ...t.req, id } satisfies AddRequest);
    }
  }

  /** Add one batch of files. */
  run(req: Omit<AddRequest, 'id'>): Promise<AddReply> {
    return new Promise((resolve, reject) => {
      this.queue.push({ req, resolve, reject });
      this.pump();
    });
  }
}

let shared: AddPool | undefined;

/** The process-wide add pool (created on first use). */
export function sharedAddPool(): AddPool {
  if (!shared) shared = new AddPool();
  return shared;
}
