/** The content-addressed store: objects, images, tags, fsck and gc. */
export * from './errors.js';
export * from './names.js';
export * from './objects.js';
export * from './store.js';
export * from './sidecar.js';
export * from './lock.js';
export type { FsckOptions, FsckReport, GcOptions, GcReport } from './maintenance.js';
export { DEFAULT_GRACE_SECONDS } from './maintenance.js';
