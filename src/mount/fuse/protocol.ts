/**
 * The FUSE kernel protocol (Linux include/uapi/linux/fuse.h, version 7), only what a read-only
 * filesystem needs: opcodes, flags, and encoders/decoders of the structures exchanged over
 * /dev/fuse. All integers are little-endian on the machines we run on (x86-64, arm64); the
 * kernel uses host byte order.
 */

/** Protocol major version. */
export const FUSE_KERNEL_VERSION = 7;
/** Highest minor version we speak (7.31: everything used here exists by then). */
export const FUSE_KERNEL_MINOR_VERSION = 31;
/** Node id of the root directory. */
export const FUSE_ROOT_ID = 1;
/** Smallest read buffer the kernel accepts for /dev/fuse reads. */
export const FUSE_MIN_READ_BUFFER = 8192;

/** Request opcodes. */
export const Op = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  OPEN: 14,
  READ: 15,
  STATFS: 17,
  RELEASE: 18,
  FSYNC: 20,
  GETXATTR: 22,
  LISTXATTR: 23,
  FLUSH: 25,
  INIT: 26,
  OPENDIR: 27,
  READDIR: 28,
  RELEASEDIR: 29,
  FSYNCDIR: 30,
  ACCESS: 34,
  INTERRUPT: 36,
  DESTROY: 38,
  BATCH_FORGET: 42,
  READDIRPLUS: 44,
} as const;

/** INIT flags (fuse_init_in/out.flags). */
export const Init = {
  ASYNC_READ: 1 << 0,
  BIG_WRITES: 1 << 5,
  DO_READDIRPLUS: 1 << 13,
  READDIRPLUS_AUTO: 1 << 14,
  NO_OPEN_SUPPORT: 1 << 17,
  PARALLEL_DIROPS: 1 << 18,
  POSIX_ACL: 1 << 20,
  MAX_PAGES: 1 << 22,
  CACHE_SYMLINKS: 1 << 23,
  NO_OPENDIR_SUPPORT: 1 << 24,
  INIT_EXT: 1 << 30,
} as const;

/** OPEN reply flags. */
export const Fopen = {
  DIRECT_IO: 1 << 0,
  KEEP_CACHE: 1 << 1,
  CACHE_DIR: 1 << 3,
} as const;

/** Sizes of fixed structures. */
export const SIZE = {
  inHeader: 40,
  outHeader: 16,
  attr: 88,
  entryOut: 128,
  attrOut: 104,
  openOut: 16,
  initOut: 64,
  kstatfs: 80,
  dirent: 24,
  getxattrOut: 8,
} as const;

/** The header of every request. */
export interface InHeader {
  len: number;
  opcode: number;
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
}

/** Decode a request header (nodeids above 2^53 cannot occur: we hand them out). */
export function readInHeader(b: Buffer): InHeader {
  return {
    len: b.readUInt32LE(0),
    opcode: b.readUInt32LE(4),
    unique: b.readBigUInt64LE(8),
    nodeid: b.readUInt32LE(16) + b.readUInt32LE(20) * 2 ** 32,
    uid: b.readUInt32LE(24),
    gid: b.readUInt32LE(28),
    pid: b.readUInt32LE(32),
  };
}

/** Write a u64 given as a JS number (≤ 2^53). */
export function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32LE(v % 2 ** 32 >>> 0, at);
  b.writeUInt32LE(Math.floor(v / 2 ** 32) >>> 0, at + 4);
}

/** Read a u64 as a JS number (exact up to 2^53). */
export function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * 2 ** 32;
}

/** A reply: header plus body, as one buffer (one write to /dev/fuse per reply). */
export function reply(unique: bigint, error: number, body?: Buffer): Buffer {
  const len = SIZE.outHeader + (body ? body.length : 0);
  const b = Buffer.allocUnsafe(len);
  b.writeUInt32LE(len, 0);
  b.writeInt32LE(error, 4);
  b.writeBigUInt64LE(unique, 8);
  if (body) body.copy(b, SIZE.outHeader);
  return b;
}

/** File attributes as FUSE sends them (struct fuse_attr). */
export interface Attr {
  ino: number;
  size: number;
  blocks: number;
  mtimeSec: number;
  mtimeNsec: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  /** Device number in the kernel's "new" 32-bit encoding. */
  rdev: number;
}

/** Encode struct fuse_attr at `at` (atime and ctime are the mtime, as EROFS reports them). */
export function writeAttr(b: Buffer, a: Attr, at: number): void {
  writeU64(b, a.ino, at);
  writeU64(b, a.size, at + 8);
  writeU64(b, a.blocks, at + 16);
  for (const o of [24, 32, 40]) b.writeBigInt64LE(BigInt(a.mtimeSec), at + o);
  for (const o of [48, 52, 56]) b.writeUInt32LE(a.mtimeNsec, at + o);
  b.writeUInt32LE(a.mode, at + 60);
  b.writeUInt32LE(a.nlink, at + 64);
  b.writeUInt32LE(a.uid, at + 68);
  b.writeUInt32LE(a.gid, at + 72);
  b.writeUInt32LE(a.rdev >>> 0, at + 76);
  b.writeUInt32LE(4096, at + 80); // blksize
  b.writeUInt32LE(0, at + 84); // flags
}

/** Encode struct fuse_entry_out (nodeid 0 means "no entry", cached for `validSec`). */
export function writeEntryOut(b: Buffer, at: number, nodeid: number, attr: Attr | undefined, validSec: number): void {
  b.fill(0, at, at + SIZE.entryOut);
  writeU64(b, nodeid, at);
  writeU64(b, 0, at + 8); // generation
  writeU64(b, validSec, at + 16); // entry_valid
  writeU64(b, validSec, at + 24); // attr_valid
  if (attr) writeAttr(b, attr, at + 40);
}

/** struct fuse_entry_out as a buffer. */
export function entryOut(nodeid: number, attr: Attr | undefined, validSec: number): Buffer {
  const b = Buffer.allocUnsafe(SIZE.entryOut);
  writeEntryOut(b, 0, nodeid, attr, validSec);
  return b;
}

/** struct fuse_attr_out. */
export function attrOut(attr: Attr, validSec: number): Buffer {
  const b = Buffer.alloc(SIZE.attrOut);
  writeU64(b, validSec, 0);
  writeAttr(b, attr, 16);
  return b;
}

/** struct fuse_open_out. */
export function openOut(fh: number, flags: number): Buffer {
  const b = Buffer.alloc(SIZE.openOut);
  writeU64(b, fh, 0);
  b.writeUInt32LE(flags, 8);
  return b;
}

/** struct fuse_getxattr_out (the size of a value or name list). */
export function getxattrOut(size: number): Buffer {
  const b = Buffer.alloc(SIZE.getxattrOut);
  b.writeUInt32LE(size, 0);
  return b;
}

/** Filesystem totals for STATFS. */
export interface StatFs {
  blocks: number;
  files: number;
}

/** struct fuse_statfs_out (a read-only filesystem: nothing free). */
export function statfsOut(s: StatFs): Buffer {
  const b = Buffer.alloc(SIZE.kstatfs);
  writeU64(b, s.blocks, 0);
  writeU64(b, s.files, 24);
  b.writeUInt32LE(4096, 40); // bsize
  b.writeUInt32LE(255, 44); // namelen
  b.writeUInt32LE(4096, 48); // frsize
  return b;
}

/** The fuse_init_in fields we use. */
export interface InitIn {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
}

/** Decode fuse_init_in. */
export function readInitIn(body: Buffer): InitIn {
  return { major: body.readUInt32LE(0), minor: body.readUInt32LE(4), maxReadahead: body.readUInt32LE(8), flags: body.readUInt32LE(12) };
}

/** The fuse_init_out fields we set. */
export interface InitOut {
  minor: number;
  maxReadahead: number;
  flags: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  maxPages: number;
}

/** Encode fuse_init_out (time granularity 1 ns). */
export function initOut(o: InitOut): Buffer {
  const b = Buffer.alloc(SIZE.initOut);
  b.writeUInt32LE(FUSE_KERNEL_VERSION, 0);
  b.writeUInt32LE(o.minor, 4);
  b.writeUInt32LE(o.maxReadahead, 8);
  b.writeUInt32LE(o.flags >>> 0, 12);
  b.writeUInt16LE(o.maxBackground, 16);
  b.writeUInt16LE(o.congestionThreshold, 18);
  b.writeUInt32LE(o.maxWrite, 20);
  b.writeUInt32LE(1, 24); // time_gran
  b.writeUInt16LE(o.maxPages, 28);
  return b;
}

/** Bytes a dirent with a name of `nameLen` bytes takes (8-byte aligned). */
export function direntSize(nameLen: number): number {
  return (SIZE.dirent + nameLen + 7) & ~7;
}

/** Encode struct fuse_dirent at `at`; returns its aligned size. `off` is the next entry's cookie. */
export function writeDirent(b: Buffer, at: number, ino: number, off: number, type: number, name: Buffer): number {
  const size = direntSize(name.length);
  writeU64(b, ino, at);
  writeU64(b, off, at + 8);
  b.writeUInt32LE(name.length, at + 16);
  b.writeUInt32LE(type, at + 20);
  name.copy(b, at + SIZE.dirent);
  b.fill(0, at + SIZE.dirent + name.length, at + size);
  return size;
}

/** The NUL-terminated name at the start of a request body. */
export function cString(body: Buffer, at = 0): Buffer {
  const end = body.indexOf(0, at);
  return body.subarray(at, end < 0 ? body.length : end);
}
