/**
 * On-disk structures and constants of a composefs EROFS image. Only layout facts live here;
 * `writer.ts` and `reader.ts` use them. See shared/spec/composefs-image-format.md §3–§8.
 * All integers are little-endian.
 */

/** Block size (bytes) and its log2. */
export const BLOCK_SIZE = 4096;
export const BLOCK_BITS = 12;

/** composefs header at offset 0. */
export const CFS_MAGIC = 0xd078629a;
export const CFS_HEADER_VERSION = 1;
export const CFS_HEADER_SIZE = 32;
/** Header flag: some inode has a POSIX ACL xattr. */
export const CFS_FLAG_HAS_ACL = 1;
/** Header field offsets. */
export const CFS_HDR = { magic: 0, version: 4, flags: 8, composefsVersion: 12 } as const;

/** EROFS superblock at offset 1024. */
export const SUPERBLOCK_OFFSET = 1024;
export const SUPERBLOCK_SIZE = 128;
export const EROFS_MAGIC = 0xe0f5e1e2;
/** Superblock field offsets (relative to SUPERBLOCK_OFFSET). */
export const SB = {
  magic: 0,
  checksum: 4,
  featureCompat: 8,
  blkszbits: 12,
  extslots: 13,
  rootNid: 14,
  inos: 16,
  buildTime: 24,
  buildTimeNsec: 32,
  blocks: 36,
  metaBlkaddr: 40,
  xattrBlkaddr: 44,
  uuid: 48,
  volumeName: 64,
  featureIncompat: 80,
} as const;
export const FEATURE_COMPAT_MTIME = 0x2;
export const FEATURE_COMPAT_XATTR_FILTER = 0x4;
export const FEATURE_INCOMPAT_CHUNKED_FILE = 0x4;

/** Inode area starts right after the superblock; nids count 32-byte slots from offset 0. */
export const INODE_AREA_START = SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE; // 1152
export const INODE_SLOT = 32;
export const ROOT_NID = INODE_AREA_START / INODE_SLOT; // 36

export const INODE_COMPACT_SIZE = 32;
export const INODE_EXTENDED_SIZE = 64;

/** i_format: bit 0 = extended, bits 1..3 = data layout. */
export const LAYOUT_FLAT_PLAIN = 0;
export const LAYOUT_FLAT_INLINE = 2;
export const LAYOUT_CHUNK_BASED = 4;

/** Compact inode (32 bytes) field offsets. */
export const IC = { format: 0, xattrIcount: 2, mode: 4, nlink: 6, size: 8, u: 16, ino: 20, uid: 24, gid: 26 } as const;
/** Extended inode (64 bytes) field offsets. */
export const IE = {
  format: 0,
  xattrIcount: 2,
  mode: 4,
  size: 8,
  u: 16,
  ino: 20,
  uid: 24,
  gid: 28,
  mtime: 32,
  mtimeNsec: 40,
  nlink: 44,
} as const;

/** Chunk-based files: low bits of i_u hold chunkbits - BLOCK_BITS; this bit means "indexes". */
export const CHUNK_FORMAT_BLKBITS_MASK = 0x1f;
export const CHUNK_FORMAT_INDEXES = 0x20;
export const CHUNK_MAX_BITS = BLOCK_BITS + 31; // 43
export const CHUNK_MAX_COUNT = 1024;
/** A block-map entry meaning "no data" (a hole). */
export const NULL_ADDR = 0xffffffff;

/** Inode xattr header (12 bytes) and entry header (4 bytes). */
export const XATTR_IBODY_HEADER_SIZE = 12;
export const XATTR_ENTRY_HEADER_SIZE = 4;
export const XATTR_MAX_SHARED_REFS = 128;
/** Seed of the xattr name bloom filter; the prefix index is added to it. */
export const XATTR_FILTER_SEED = 0x25bbe08f;

/** xattr name prefix indexes (index 5 is only ever read). */
export const XATTR_PREFIXES: ReadonlyArray<readonly [number, string]> = [
  [1, 'user.'],
  [2, 'system.posix_acl_access'],
  [3, 'system.posix_acl_default'],
  [4, 'trusted.'],
  [5, 'lustre.'],
  [6, 'security.'],
];
/** Prefixes in the order the writer tries them (first match wins; lustre is never used). */
export const WRITER_XATTR_PREFIXES: ReadonlyArray<readonly [number, Buffer]> = [
  [1, Buffer.from('user.')],
  [2, Buffer.from('system.posix_acl_access')],
  [3, Buffer.from('system.posix_acl_default')],
  [4, Buffer.from('trusted.')],
  [6, Buffer.from('security.')],
];

/** Directory entry (12 bytes). */
export const DIRENT_SIZE = 12;
export const DIRENT = { nid: 0, nameoff: 8, fileType: 10 } as const;
/** Directory file types. */
export const FT_UNKNOWN = 0;
export const FT_REG_FILE = 1;
export const FT_DIR = 2;
export const FT_CHRDEV = 3;
export const FT_BLKDEV = 4;
export const FT_FIFO = 5;
export const FT_SOCK = 6;
export const FT_SYMLINK = 7;

/** Overlay xattrs composefs writes. */
export const OVERLAY_PREFIX = 'trusted.overlay.';
export const OVERLAY_ESCAPED_PREFIX = 'trusted.overlay.overlay.';
export const XATTR_METACOPY = 'trusted.overlay.metacopy';
export const XATTR_REDIRECT = 'trusted.overlay.redirect';
export const XATTR_OPAQUE = 'trusted.overlay.opaque';
/** Metacopy value header: version 0, length 36, flags 0, hash algorithm 1 (SHA-256). */
export const METACOPY_HEADER = Buffer.from([0, 36, 0, 1]);
export const METACOPY_SIZE = 36;

/** Round `n` up to a multiple of `m` (a power of two or any positive integer). */
export function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}
