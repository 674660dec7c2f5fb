/** fs-verity digests: single-threaded streaming (digest.ts) and parallel over workers (parallel.ts). */
export * from './digest.js';
export * from './parallel.js';
