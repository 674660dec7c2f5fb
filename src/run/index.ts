/** Containers from store images: run, bundle, inspect, cleanup. */
export { RunError } from './errors.js';
export { runContainer, resolveImage, listContainerIds, readRecord, containerDir } from './container.js';
export type { RunOptions, RunResult, ContainerRecord, ImageRef, ProcessOptions, RootfsOptions } from './container.js';
export { makeBundle } from './bundle.js';
export type { BundleOptions, BundleResult } from './bundle.js';
export { inspectImage, inspectLines } from './inspect.js';
export type { InspectReport } from './inspect.js';
export { removeContainer, removeStaleContainers, staleContainers, liveContainers } from './cleanup.js';
export { resolveArgs, mergeEnv, parseImageConfig, resolveWorkdir, parseSignal } from './command.js';
export type { ImageRunConfig } from './command.js';
export { resolveUser } from './user.js';
export type { ExecUser } from './user.js';
export { runtimeSpec } from './spec.js';
export type { RuntimeSpec, SpecInput } from './spec.js';
