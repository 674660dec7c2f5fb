/**
 * cfsdist as a library: the package's one entry point (`import … from 'cfsdist'`). The CLI is a
 * thin shell over these; README "Use it from TypeScript" shows them together.
 *
 *   formats   Tree model, dumpfile parser/writer, EROFS (composefs) writer/reader, fs-verity
 *   store     Store (objects, images, tags, configs, fsck, gc)
 *   import    openSource (oci:, docker-archive:, dir:, docker://) + importImage
 *   trust     keys, signImage / verifyImage
 *   wire      serve (createServer), pull / push over HttpRemote or an OCI registry
 *   mount     kernel (EROFS + overlayfs) and FUSE mounts, unmount
 *   run       runContainer, makeBundle, inspectImage
 */
export { CfsError, UsageError, TreeError } from './errors.js';
export * from './tree/index.js';
export * from './dumpfile/index.js';
export * from './erofs/index.js';
export * from './verity/index.js';
export * from './store/index.js';
export { openSource, hostPlatform, hostArchitecture } from './oci/source.js';
export type { ImageSource, LayeredSource, DirectorySource, SourceOptions } from './oci/source.js';
export { importImage } from './oci/import.js';
export type { ImportOptions, ImportResult } from './oci/import.js';
export { SourceError } from './oci/errors.js';
export * from './sign/index.js';
export * from './client/index.js';
export { openRegistryRemote, RegistryRemote, parseRegistryRef } from './registry/index.js';
export * from './server/index.js';
export * from './mount/index.js';
export * from './run/index.js';
