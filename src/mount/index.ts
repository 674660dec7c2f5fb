/** Mounting composefs images: the kernel path (EROFS + overlayfs) and the userspace path (FUSE). */
export { MountError } from './errors.js';
export { mountKernel } from './kernel.js';
export type { KernelMountOptions, KernelMountInfo } from './kernel.js';
export { unmount, isCfsdistMount } from './umount.js';
export type { UnmountOptions, UnmountReport } from './umount.js';
export { mountFuse } from './fuse/index.js';
export type { FuseMount, FuseMountOptions, FuseStats } from './fuse/index.js';
export { DirectoryFetcher, RemoteFetcher, openRemote } from './fetcher.js';
export type { ObjectFetcher, ObjectSink, ObjectSource } from './fetcher.js';
export { resolveImageRef, checkImageDigest, checkImage, kernelRequiresSignatures } from './image.js';
export type { ResolvedImage, ImageCheck, VerityImageStore } from './image.js';
export { kernelMountUnavailable, fuseUnavailable, compatFromEnv, kernelFilesystems, listLoops } from './compat.js';
export type { CompatForce } from './compat.js';
export { readMountInfo, mountAt, canonicalMountpoint, waitForMount } from './mountinfo.js';
export type { MountEntry } from './mountinfo.js';
export { listStates, runDir, MOUNT_SOURCE } from './state.js';
export type { MountState } from './state.js';
