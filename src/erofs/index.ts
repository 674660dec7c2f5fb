/** composefs EROFS images: the writer (byte-identical to C mkcomposefs) and the reader. */
export { writeImage, ErofsWriteError, type WriteOptions } from './writer.js';
export { readImage, readImageFile, ErofsImage, ErofsError, BufferSource, FileSource } from './reader.js';
export type { ImageInfo, InodeStat, DirEntry, OpenOptions, ByteSource } from './reader.js';
export { lsEntries, lsLines, formatLs, collectObjects, objectPaths } from './reader-listing.js';
