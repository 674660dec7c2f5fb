/**
 * Reader of composefs EROFS images (spec §3–§8; overlay xattrs mapped back per §7.6).
 *
 * `ErofsImage` gives lazy access (one inode, one directory, one path) over a buffer or a file
 * descriptor, and `toTree()` materialises the whole image as the Tree the source dumpfile would
 * parse to. The input is treated as hostile: every offset and count is checked against the
 * image size before it is used, walks are iterative, a directory reached twice is an error, and
 * a whole-image walk may claim no more bytes (inodes, xattrs, directory and file data) than the
 * image holds, so work and memory stay linear in the image size. Every failure is an
 * `ErofsError` naming the image, the nid and the byte offset at fault.
 */
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import { CfsError } from '../errors.js';
import {
  BLOCK_SIZE,
  CFS_HDR,
  CFS_HEADER_VERSION,
  CFS_MAGIC,
  CFS_FLAG_HAS_ACL,
  DIRENT,
  DIRENT_SIZE,
  EROFS_MAGIC,
  FT_BLKDEV,
  FT_CHRDEV,
  FT_DIR,
  FT_FIFO,
  FT_REG_FILE,
  FT_SOCK,
  FT_SYMLINK,
  IC,
  IE,
  INODE_COMPACT_SIZE,
  INODE_EXTENDED_SIZE,
  INODE_SLOT,
  LAYOUT_CHUNK_BASED,
  LAYOUT_FLAT_INLINE,
  LAYOUT_FLAT_PLAIN,
  METACOPY_SIZE,
  SB,
  SUPERBLOCK_OFFSET,
  SUPERBLOCK_SIZE,
  XATTR_ENTRY_HEADER_SIZE,
  XATTR_IBODY_HEADER_SIZE,
  XATTR_PREFIXES,
} from './format.js';
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  splitPath,
  type Inode,
  type Xattr,
} from '../tree/tree.js';

// Reader-only constants (format.ts does not define them).
/** Incompat feature bits we accept: all compression-related ones (compressed inodes are rejected one by one), chunked files, device table. */
export const READER_SUPPORTED_INCOMPAT = 0x7f;
/** Longest directory entry name (EROFS_NAME_LEN) and longest xattr name (XATTR_NAME_MAX). */
export const MAX_NAME_LEN = 255;
/** Longest symlink target the reader accepts (PATH_MAX). */
export const MAX_SYMLINK_LEN = 4096;
/** Highest composefs header version the reader understands. */
export const MAX_COMPOSEFS_VERSION = 1;

/** A malformed, truncated or unsupported image; names the image, nid and offset at fault. */
export class ErofsError extends CfsError {
  /** Inode at fault, when known. */
  readonly nid: number | undefined;
  /** Byte offset at fault, when known. */
  readonly offset: number | undefined;
  constructor(code: string, message: string, at: { nid?: number; offset?: number } = {}) {
    super(code, message);
    this.nid = at.nid;
    this.offset = at.offset;
  }
}

// ------------------------------------------------------------------------------------------
// Byte sources

/** Random access to the image bytes; callers bounds-check before reading. */
export interface ByteSource {
  /** Total size in bytes. */
  readonly size: number;
  /** Bytes [offset, offset + length); may be a view that must not be written to. */
  read(offset: number, length: number): Buffer;
  /** Release the underlying file, if any. */
  close(): void;
}

/** A whole image held in memory; reads are zero-copy views. */
export class BufferSource implements ByteSource {
  readonly size: number;
  constructor(readonly buf: Buffer) {
    this.size = buf.length;
  }
  read(offset: number, length: number): Buffer {
    return this.buf.subarray(offset, offset + length);
  }
  close(): void {}
}

/** An image file read with positioned reads through an LRU cache of 4 KiB chunks (16 MiB by default). */
export class FileSource implements ByteSource {
  readonly size: number;
  private readonly chunks = new Map<number, Buffer>();
  private closed = false;
  constructor(
    private readonly fd: number,
    private readonly name: string,
    private readonly chunkSize = 4096,
    private readonly maxChunks = 4096,
  ) {
    this.size = fstatSync(fd).size;
  }
  /** Open `path` read-only; `cacheBytes` bounds the chunk cache. */
  static open(path: string, cacheBytes = 16 << 20): FileSource {
    return new FileSource(openSync(path, 'r'), path, 4096, Math.max(4, Math.ceil(cacheBytes / 4096)));
  }
  read(offset: number, length: number): Buffer {
    const ci = Math.floor(offset / this.chunkSize);
    const start = ci * this.chunkSize;
    if (offset + length <= start + this.chunkSize) {
      const chunk = this.chunk(ci);
      const rel = offset - start;
      if (rel + length > chunk.length) throw this.short(offset);
      return chunk.subarray(rel, rel + length);
    }
    const out = Buffer.allocUnsafe(length);
    this.fill(out, offset);
    return out;
  }
  close(): void {
    if (!this.closed) {
      this.closed = true;
      closeSync(this.fd);
    }
  }
  private chunk(ci: number): Buffer {
    const hit = this.chunks.get(ci);
    if (hit) {
      this.chunks.delete(ci);
      this.chunks.set(ci, hit);
      return hit;
    }
    const start = ci * this.chunkSize;
    const len = Math.max(0, Math.min(this.chunkSize, this.size - start));
    const buf = Buffer.allocUnsafe(len);
    this.fill(buf, start);
    if (this.chunks.size >= this.maxChunks) {
      const oldest = this.chunks.keys().next().value as number;
      this.chunks.delete(oldest);
    }
    this.chunks.set(ci, buf);
    return buf;
  }
  private fill(buf: Buffer, position: number): void {
    let done = 0;
    while (done < buf.length) {
      const n = readSync(this.fd, buf, done, buf.length - done, position + done);
      if (n === 0) throw this.short(position + done);
      done += n;
    }
  }
  private short(offset: number): ErofsError {
    return new ErofsError('TRUNCATED', `${this.name}: file ended at offset ${offset} while reading (did it shrink?)`, { offset });
  }
}

// ------------------------------------------------------------------------------------------
// Records

/** Superblock and composefs header facts. */
export interface ImageInfo {
  /** Image size in bytes. */
  size: number;
  /** composefs header version field (0 or 1), or undefined for a plain EROFS image. */
  composefsVersion: number | undefined;
  /** composefs header flag: some inode has a POSIX ACL. */
  hasAcl: boolean;
  rootNid: number;
  inos: number;
  buildTimeSec: number;
  buildTimeNsec: number;
  blocks: number;
  metaBlkaddr: number;
  xattrBlkaddr: number;
  featureCompat: number;
  featureIncompat: number;
}

/** An inode exactly as stored (no overlay mapping). */
export interface RawInode {
  nid: number;
  /** Byte offset of the inode in the image. */
  offset: number;
  extended: boolean;
  /** Data layout: 0 flat plain, 2 flat inline, 4 chunk based. */
  layout: number;
  /** st_mode as stored (converted whiteouts are still regular files here). */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** i_ino. */
  ino: number;
  /** i_u: block address, rdev or chunk format depending on type and layout. */
  u: number;
  /** Bytes of the inode's xattr area (0 when it has none). */
  xattrSize: number;
  /** Byte offset of the inline tail (right after the xattr area). */
  inlineOffset: number;
}

/** An inode as the source dumpfile described it (§7.6 applied). */
export interface InodeStat {
  nid: number;
  /** st_mode; converted whiteouts are character devices again. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Xattrs with composefs' overlay xattrs mapped back, in `composefs-info` order. */
  xattrs: Xattr[];
  /** Backing object path (from trusted.overlay.redirect, leading `/` removed). */
  payload?: Buffer;
  /** fs-verity digest (from a 36-byte trusted.overlay.metacopy). */
  digest?: Buffer;
  /** A regular file that stands for an overlay whiteout (chr 0/0). */
  whiteout: boolean;
  /** The stored inode. */
  raw: RawInode;
}

/** One directory entry (never `.`, `..` or a whiteout stub). */
export interface DirEntry {
  name: Buffer;
  nid: number;
  /** EROFS file type (FT_*). */
  type: number;
}

/** Options of `ErofsImage.open`. */
export interface OpenOptions {
  /** Read through a file descriptor and a cache instead of loading the file. */
  lazy?: boolean;
  /** With `lazy`: bytes of image the cache may hold (default 16 MiB). */
  cacheBytes?: number;
}

// ------------------------------------------------------------------------------------------
// Internals

const PREFIX_BY_INDEX: (Buffer | undefined)[] = [Buffer.alloc(0)];
for (const [i, p] of XATTR_PREFIXES) PREFIX_BY_INDEX[i] = Buffer.from(p, 'latin1');

const FT_BY_TYPE = new Map<number, number>([
  [S_IFREG, FT_REG_FILE],
  [S_IFDIR, FT_DIR],
  [S_IFCHR, FT_CHRDEV],
  [S_IFBLK, FT_BLKDEV],
  [S_IFIFO, FT_FIFO],
  [S_IFSOCK, FT_SOCK],
  [S_IFLNK, FT_SYMLINK],
]);

/** Whiteout stubs (chr 0/0) are left out of listings; this marks them in a walk. */
const STUB: Inode = Object.freeze({ mode: S_IFCHR, nlink: 0, uid: 0, gid: 0, rdev: 0, mtimeSec: 0, mtimeNsec: 0, size: 0, xattrs: [] }) as Inode;

/** Bytes a whole-image walk may still claim; a valid image never claims a byte twice. */
class Budget {
  constructor(public remaining: number) {}
}

interface DirBlock {
  offset: number;
  length: number;
}

function isStubRaw(raw: RawInode): boolean {
  return (raw.mode & S_IFMT) === S_IFCHR && raw.u === 0;
}

// ------------------------------------------------------------------------------------------
// The image

/** How the reader maps one stored xattr back to the dumpfile (§7.6). */
const X_KEEP = 0;
const X_DROP = 1;
const X_WHITEOUT = 2;
const X_METACOPY = 3;
const X_REDIRECT = 4;

const L_TRUSTED = Buffer.from('trusted.');
const L_USER = Buffer.from('user.');
const L_OVERLAY = Buffer.from('overlay.');
const L_METACOPY = Buffer.from('metacopy');
const L_REDIRECT = Buffer.from('redirect');
const L_WHITEOUT = Buffer.from('whiteout');
const L_WHITEOUTS = Buffer.from('whiteouts');
const L_OVERLAY_WHITEOUT = Buffer.from('overlay.whiteout');
const L_OVERLAY_WHITEOUTS = Buffer.from('overlay.whiteouts');
const EMPTY = Buffer.alloc(0);

function eqAt(src: Buffer, pos: number, len: number, lit: Buffer): boolean {
  return len === lit.length && startsAt(src, pos, len, lit);
}

function startsAt(src: Buffer, pos: number, len: number, lit: Buffer): boolean {
  const n = lit.length;
  if (len < n) return false;
  for (let i = 0; i < n; i++) if (src[pos + i] !== lit[i]) return false;
  return true;
}

/** A decoded shared xattr: raw key, value, and how it maps back. */
interface SharedEntry {
  key: Buffer;
  value: Buffer;
  kind: number;
  /** Key after mapping (kind X_KEEP only). */
  logicalKey: Buffer;
}

/** A composefs (or plain, uncompressed) EROFS image with lazy, bounds-checked access. */
export class ErofsImage {
  /** Superblock and header facts. */
  readonly info: ImageInfo;
  private readonly size: number;
  private readonly whole: Buffer | undefined;
  private readonly metaBase: number;
  private readonly xattrBase: number;
  private readonly sharedCache = new Map<number, SharedEntry>();
  private readonly keyCache = new Map<string, Buffer>();
  /** Buffer holding the range most recently checked by `at`. */
  private cur: Buffer = EMPTY;
  // Side results of `collectXattrs` in logical mode (avoids an allocation per inode).
  private xPayload: Buffer | undefined;
  private xDigest: Buffer | undefined;
  private xWhiteout = false;
  // Scratch of `classify`: where the key to keep starts, its length and prefix index.
  private cIndex = 0;
  private cStart = 0;
  private cLen = 0;

  /** Parse the header and superblock of `source`; `name` is used in error messages. */
  constructor(
    readonly source: ByteSource,
    readonly name = '<image>',
  ) {
    this.size = source.size;
    this.whole = source instanceof BufferSource ? source.buf : undefined;
    this.info = this.readSuperblock();
    this.metaBase = this.info.metaBlkaddr * BLOCK_SIZE;
    this.xattrBase = this.info.xattrBlkaddr * BLOCK_SIZE;
  }

  /** An image held in memory. */
  static fromBuffer(buf: Buffer, name = '<buffer>'): ErofsImage {
    return new ErofsImage(new BufferSource(buf), name);
  }

  /**
   * Open an image file: loaded into memory, or read through the fd with `lazy` (always for files
   * over 1 GiB, which no metadata image should reach).
   */
  static open(path: string, opts: OpenOptions = {}): ErofsImage {
    if (!opts.lazy && statSync(path).size <= 1 << 30) return new ErofsImage(new BufferSource(readFileSync(path)), path);
    const fs = FileSource.open(path, opts.cacheBytes);
    try {
      return new ErofsImage(fs, path);
    } catch (e) {
      fs.close();
      throw e;
    }
  }

  /** Release the file descriptor of a lazily opened image. */
  close(): void {
    this.source.close();
  }

  /** The root directory's nid. */
  get rootNid(): number {
    return this.info.rootNid;
  }

  private fail(code: string, what: string, at: { nid?: number; offset?: number } = {}): ErofsError {
    let where = this.name;
    if (at.nid !== undefined) where += `: nid ${at.nid}`;
    const off = at.offset !== undefined ? ` (offset ${at.offset})` : '';
    return new ErofsError(code, `${where}: ${what}${off}`, at);
  }

  /**
   * Check that [offset, offset+length) lies inside the image and make it readable: afterwards
   * `this.cur` holds it, starting at the returned position.
   */
  private at(offset: number, length: number, what: string, nid?: number): number {
    if (!(offset >= 0 && length >= 0 && offset + length <= this.size)) {
      throw this.fail('OUT_OF_RANGE', `${what}: ${length} bytes at ${offset} lie outside the ${this.size}-byte image`, { nid, offset });
    }
    if (this.whole !== undefined) {
      this.cur = this.whole;
      return offset;
    }
    this.cur = this.source.read(offset, length);
    return 0;
  }

  /** Bytes [offset, offset+length) as a buffer of their own (a view when in memory). */
  private slice(offset: number, length: number, what: string, nid?: number): Buffer {
    const p = this.at(offset, length, what, nid);
    return p === 0 && this.cur.length === length ? this.cur : this.cur.subarray(p, p + length);
  }

  private readSuperblock(): ImageInfo {
    if (this.size < SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE) {
      throw this.fail('TRUNCATED', `image of ${this.size} bytes is too short for an EROFS superblock`);
    }
    const hdr = this.slice(0, SUPERBLOCK_OFFSET + SUPERBLOCK_SIZE, 'superblock');
    let composefsVersion: number | undefined;
    let hasAcl = false;
    if (hdr.readUInt32LE(CFS_HDR.magic) === CFS_MAGIC) {
      const hv = hdr.readUInt32LE(CFS_HDR.version);
      if (hv !== CFS_HEADER_VERSION) throw this.fail('UNSUPPORTED_VERSION', `composefs header version ${hv} is not ${CFS_HEADER_VERSION}`, { offset: CFS_HDR.version });
      composefsVersion = hdr.readUInt32LE(CFS_HDR.composefsVersion);
      if (composefsVersion > MAX_COMPOSEFS_VERSION) {
        throw this.fail('UNSUPPORTED_VERSION', `composefs version ${composefsVersion} is newer than ${MAX_COMPOSEFS_VERSION}`, { offset: CFS_HDR.composefsVersion });
      }
      hasAcl = (hdr.readUInt32LE(CFS_HDR.flags) & CFS_FLAG_HAS_ACL) !== 0;
    }
    const sb = SUPERBLOCK_OFFSET;
    if (hdr.readUInt32LE(sb + SB.magic) !== EROFS_MAGIC) throw this.fail('BAD_MAGIC', 'not an EROFS image (bad superblock magic)', { offset: sb });
    const bits = hdr[sb + SB.blkszbits]!;
    if (bits !== 12) throw this.fail('UNSUPPORTED_FEATURE', `block size 2^${bits} is not 4096`, { offset: sb + SB.blkszbits });
    const featureIncompat = hdr.readUInt32LE(sb + SB.featureIncompat);
    if (featureIncompat & ~READER_SUPPORTED_INCOMPAT) {
      throw this.fail('UNSUPPORTED_FEATURE', `unsupported incompat features 0x${featureIncompat.toString(16)}`, { offset: sb + SB.featureIncompat });
    }
    const blocks = hdr.readUInt32LE(sb + SB.blocks);
    if (blocks * BLOCK_SIZE > this.size) {
      throw this.fail('TRUNCATED', `superblock says ${blocks} blocks (${blocks * BLOCK_SIZE} bytes) but the image has ${this.size} bytes`, { offset: sb + SB.blocks });
    }
    const lo = hdr.readUInt32LE(sb + SB.inos);
    const hi = hdr.readUInt32LE(sb + SB.inos + 4);
    return {
      size: this.size,
      composefsVersion,
      hasAcl,
      rootNid: hdr.readUInt16LE(sb + SB.rootNid),
      inos: hi * 2 ** 32 + lo,
      buildTimeSec: this.readI64(hdr, sb + SB.buildTime, 'build_time'),
      buildTimeNsec: hdr.readUInt32LE(sb + SB.buildTimeNsec),
      blocks,
      metaBlkaddr: hdr.readUInt32LE(sb + SB.metaBlkaddr),
      xattrBlkaddr: hdr.readUInt32LE(sb + SB.xattrBlkaddr),
      featureCompat: hdr.readUInt32LE(sb + SB.featureCompat),
      featureIncompat,
    };
  }

  /** A signed 64-bit field that must fit a JS number exactly. */
  private readI64(b: Buffer, at: number, what: string, nid?: number): number {
    const lo = b.readUInt32LE(at);
    const hi = b.readInt32LE(at + 4);
    if (hi >= 0x200000 || hi < -0x200000) throw this.fail('OUT_OF_RANGE', `${what} does not fit 53 bits`, { nid });
    return hi * 2 ** 32 + lo;
  }

  // ---------------------------------------------------------------------------------------
  // Inodes

  /** The stored inode `nid` (header fields only; cheap). */
  inode(nid: number): RawInode {
    if (!Number.isSafeInteger(nid) || nid < 0) throw this.fail('BAD_NID', `invalid nid ${nid}`);
    const offset = this.metaBase + nid * INODE_SLOT;
    let p = this.at(offset, INODE_COMPACT_SIZE, 'inode', nid);
    let b = this.cur;
    const format = b.readUInt16LE(p + IC.format);
    if (format > 0xf) throw this.fail('UNSUPPORTED_FEATURE', `unknown i_format bits 0x${format.toString(16)}`, { nid, offset });
    const extended = (format & 1) === 1;
    const layout = format >> 1;
    if (layout !== LAYOUT_FLAT_PLAIN && layout !== LAYOUT_FLAT_INLINE && layout !== LAYOUT_CHUNK_BASED) {
      throw this.fail('UNSUPPORTED_LAYOUT', `data layout ${layout} (compressed or unknown) is not supported`, { nid, offset });
    }
    const icount = b.readUInt16LE(p + IC.xattrIcount);
    const xattrSize = icount === 0 ? 0 : XATTR_IBODY_HEADER_SIZE + (icount - 1) * 4;
    const mode = b.readUInt16LE(p + IC.mode);
    if (!FT_BY_TYPE.has(mode & S_IFMT)) throw this.fail('BAD_MODE', `invalid file type in mode 0${mode.toString(8)}`, { nid, offset });
    let r: RawInode;
    if (!extended) {
      r = {
        nid,
        offset,
        extended,
        layout,
        mode,
        nlink: b.readUInt16LE(p + IC.nlink),
        uid: b.readUInt16LE(p + IC.uid),
        gid: b.readUInt16LE(p + IC.gid),
        size: b.readUInt32LE(p + IC.size),
        mtimeSec: this.info.buildTimeSec,
        mtimeNsec: this.info.buildTimeNsec,
        ino: b.readUInt32LE(p + IC.ino),
        u: b.readUInt32LE(p + IC.u),
        xattrSize,
        inlineOffset: offset + INODE_COMPACT_SIZE + xattrSize,
      };
    } else {
      p = this.at(offset, INODE_EXTENDED_SIZE, 'extended inode', nid);
      b = this.cur;
      const slo = b.readUInt32LE(p + IE.size);
      const shi = b.readUInt32LE(p + IE.size + 4);
      const size = shi * 2 ** 32 + slo;
      if (size > 2 ** 53) throw this.fail('OUT_OF_RANGE', `inode size does not fit 53 bits`, { nid, offset: offset + IE.size });
      r = {
        nid,
        offset,
        extended,
        layout,
        mode,
        nlink: b.readUInt32LE(p + IE.nlink),
        uid: b.readUInt32LE(p + IE.uid),
        gid: b.readUInt32LE(p + IE.gid),
        size,
        mtimeSec: this.readI64(b, p + IE.mtime, 'mtime', nid),
        mtimeNsec: b.readUInt32LE(p + IE.mtimeNsec),
        ino: b.readUInt32LE(p + IE.ino),
        u: b.readUInt32LE(p + IE.u),
        xattrSize,
        inlineOffset: offset + INODE_EXTENDED_SIZE + xattrSize,
      };
    }
    if (r.inlineOffset > this.size) throw this.fail('OUT_OF_RANGE', `xattr area of ${xattrSize} bytes runs past the end of the image`, { nid, offset });
    return r;
  }

  /** Size of the inode header. */
  private static isize(raw: RawInode): number {
    return raw.extended ? INODE_EXTENDED_SIZE : INODE_COMPACT_SIZE;
  }

  /** The key `prefix[index] + src[start, start+len)`, shared between inodes. */
  private key(index: number, src: Buffer, start: number, len: number, nid: number, offset: number): Buffer {
    if (index & 0x80) throw this.fail('UNSUPPORTED_FEATURE', `long xattr name prefix ${index & 0x7f} is not supported`, { nid, offset });
    const prefix = PREFIX_BY_INDEX[index];
    if (!prefix) throw this.fail('BAD_XATTR', `unknown xattr name index ${index}`, { nid, offset });
    const total = prefix.length + len;
    if (total === 0) throw this.fail('BAD_XATTR', 'empty xattr name', { nid, offset });
    if (total > MAX_NAME_LEN) throw this.fail('BAD_XATTR', `xattr name of ${total} bytes is longer than ${MAX_NAME_LEN}`, { nid, offset });
    const ck = String.fromCharCode(index) + src.toString('latin1', start, start + len);
    let k = this.keyCache.get(ck);
    if (k === undefined) {
      k = Buffer.allocUnsafe(total);
      prefix.copy(k, 0);
      src.copy(k, prefix.length, start, start + len);
      if (this.keyCache.size < 65536) this.keyCache.set(ck, k);
    }
    return k;
  }

  /**
   * How the stored xattr (prefix `index`, name suffix at src[start, start+len)) maps back
   * (§7.6). For X_KEEP, sets cIndex/cStart/cLen to the key to keep.
   */
  private classify(index: number, src: Buffer, start: number, len: number): number {
    // Writers use the prefix indexes, but a full name under index 0 means the same.
    if (index === 0) {
      if (startsAt(src, start, len, L_TRUSTED)) {
        index = 4;
        start += L_TRUSTED.length;
        len -= L_TRUSTED.length;
      } else if (startsAt(src, start, len, L_USER)) {
        index = 1;
        start += L_USER.length;
        len -= L_USER.length;
      }
    }
    this.cIndex = index;
    this.cStart = start;
    this.cLen = len;
    if (index === 4 && startsAt(src, start, len, L_OVERLAY)) {
      const r = start + L_OVERLAY.length;
      const rl = len - L_OVERLAY.length;
      if (startsAt(src, r, rl, L_OVERLAY)) {
        const e = r + L_OVERLAY.length;
        const el = rl - L_OVERLAY.length;
        if (eqAt(src, e, el, L_WHITEOUT)) return X_WHITEOUT;
        if (eqAt(src, e, el, L_WHITEOUTS)) return X_DROP;
        // trusted.overlay.overlay.X -> trusted.overlay.X: drop one "overlay." of the suffix.
        this.cStart = r;
        this.cLen = rl;
        return X_KEEP;
      }
      if (eqAt(src, r, rl, L_METACOPY)) return X_METACOPY;
      if (eqAt(src, r, rl, L_REDIRECT)) return X_REDIRECT;
      return X_DROP;
    }
    if (index === 1 && (eqAt(src, start, len, L_OVERLAY_WHITEOUT) || eqAt(src, start, len, L_OVERLAY_WHITEOUTS))) return X_DROP;
    return X_KEEP;
  }

  private sharedXattr(id: number, nid: number, budget: Budget | undefined): SharedEntry {
    const hit = this.sharedCache.get(id);
    if (hit !== undefined) return hit;
    const offset = this.xattrBase + id * 4;
    let p = this.at(offset, XATTR_ENTRY_HEADER_SIZE, 'shared xattr', nid);
    const nameLen = this.cur[p]!;
    const index = this.cur[p + 1]!;
    const valueLen = this.cur.readUInt16LE(p + 2);
    const total = XATTR_ENTRY_HEADER_SIZE + nameLen + valueLen;
    p = this.at(offset, total, 'shared xattr', nid);
    const src = this.cur;
    if (budget) this.claim(budget, total, 'shared xattr', nid);
    const ns = p + XATTR_ENTRY_HEADER_SIZE;
    const key = this.key(index, src, ns, nameLen, nid, offset);
    const kind = this.classify(index, src, ns, nameLen);
    const e: SharedEntry = {
      key,
      value: src.subarray(ns + nameLen, p + total),
      kind,
      logicalKey: kind === X_KEEP ? this.key(this.cIndex, src, this.cStart, this.cLen, nid, offset) : key,
    };
    this.sharedCache.set(id, e);
    return e;
  }

  /**
   * The xattrs of an inode in the order `composefs-info` lists them (inline entries, then
   * shared references). `logical` maps composefs' overlay xattrs back (§7.6) and leaves the
   * payload, digest and whiteout mark in xPayload/xDigest/xWhiteout. A key that occurs twice
   * (hostile images only) keeps its first place and its last value.
   */
  private collectXattrs(raw: RawInode, budget: Budget | undefined, logical: boolean): Xattr[] {
    this.xPayload = undefined;
    this.xDigest = undefined;
    this.xWhiteout = false;
    const xsize = raw.xattrSize;
    const out: Xattr[] = [];
    if (xsize === 0) return out;
    const nid = raw.nid;
    const base = raw.offset + ErofsImage.isize(raw);
    const p0 = this.at(base, xsize, 'xattr area', nid);
    const area = this.cur;
    const end0 = p0 + xsize;
    const nShared = area[p0 + 4]!;
    let p = p0 + XATTR_IBODY_HEADER_SIZE + 4 * nShared;
    if (p > end0) throw this.fail('BAD_XATTR', `${nShared} shared xattr ids do not fit a ${xsize}-byte xattr area`, { nid, offset: base });
    while (p < end0) {
      if (p + XATTR_ENTRY_HEADER_SIZE > end0) throw this.fail('BAD_XATTR', 'xattr entry header runs past the xattr area', { nid, offset: base + p - p0 });
      const nameLen = area[p]!;
      const index = area[p + 1]!;
      const valueLen = area.readUInt16LE(p + 2);
      const ns = p + XATTR_ENTRY_HEADER_SIZE;
      const end = ns + nameLen + valueLen;
      if (end > end0) throw this.fail('BAD_XATTR', 'xattr entry runs past the xattr area', { nid, offset: base + p - p0 });
      if (!logical) {
        out.push({ key: this.key(index, area, ns, nameLen, nid, base + p - p0), value: area.subarray(ns + nameLen, end) });
      } else {
        // Validate the stored name even when the mapping drops it.
        if (index & 0x80 || PREFIX_BY_INDEX[index] === undefined || (index === 0 && nameLen === 0)) this.key(index, area, ns, nameLen, nid, base + p - p0);
        const kind = this.classify(index, area, ns, nameLen);
        if (kind === X_KEEP) out.push({ key: this.key(this.cIndex, area, this.cStart, this.cLen, nid, base + p - p0), value: area.subarray(ns + nameLen, end) });
        else this.noteAt(kind, area, ns + nameLen, end);
      }
      p = (end + 3) & ~3;
    }
    for (let i = 0; i < nShared; i++) {
      const id = area.readUInt32LE(p0 + XATTR_IBODY_HEADER_SIZE + 4 * i);
      const s = this.sharedXattr(id, nid, budget);
      if (!logical) out.push({ key: s.key, value: s.value });
      else if (s.kind === X_KEEP) out.push({ key: s.logicalKey, value: s.value });
      else this.noteAt(s.kind, s.value, 0, s.value.length);
    }
    return dedupe(out);
  }

  /** Record a dropped overlay xattr's meaning; its value is src[start, end) (no view made for values that are dropped). */
  private noteAt(kind: number, src: Buffer, start: number, end: number): void {
    if (kind === X_WHITEOUT) this.xWhiteout = true;
    else if (kind === X_METACOPY) this.xDigest = end - start === METACOPY_SIZE ? src.subarray(start + 4, end) : undefined;
    else if (kind === X_REDIRECT) {
      if (end > start && src[start] === 0x2f) start++;
      this.xPayload = end > start ? src.subarray(start, end) : undefined;
    }
  }

  /** The stored xattrs of an inode (no mapping), in `composefs-info` order. */
  rawXattrs(ino: RawInode | number): Xattr[] {
    return this.collectXattrs(typeof ino === 'number' ? this.inode(ino) : ino, undefined, false);
  }

  /** The inode as the source dumpfile described it: overlay xattrs mapped back (§7.6). */
  stat(nid: number): InodeStat {
    const raw = this.inode(nid);
    const xattrs = this.collectXattrs(raw, undefined, true);
    const type = raw.mode & S_IFMT;
    const whiteout = this.xWhiteout && type === S_IFREG;
    const st: InodeStat = {
      nid,
      mode: whiteout ? S_IFCHR | (raw.mode & 0o7777) : raw.mode,
      nlink: raw.nlink,
      uid: raw.uid,
      gid: raw.gid,
      rdev: type === S_IFCHR || type === S_IFBLK ? raw.u : 0,
      size: raw.size,
      mtimeSec: raw.mtimeSec,
      mtimeNsec: raw.mtimeNsec,
      xattrs,
      whiteout,
      raw,
    };
    if (type === S_IFREG && !whiteout) {
      if (this.xPayload) st.payload = this.xPayload;
      if (this.xDigest) st.digest = this.xDigest;
    }
    return st;
  }

  // ---------------------------------------------------------------------------------------
  // Data

  private claim(budget: Budget, n: number, what: string, nid: number): void {
    budget.remaining -= n;
    if (budget.remaining < 0) {
      throw this.fail('OVERLAP', `${what}: the image's inodes claim more bytes than it holds (overlapping or repeated data)`, { nid });
    }
  }

  /** Where the bytes of a flat (plain or inline) inode live: full blocks, then a tail. */
  private flatExtent(raw: RawInode, what: string): { blockOffset: number; blockBytes: number; tailOffset: number; tailBytes: number } {
    const nid = raw.nid;
    const size = raw.size;
    if (size > this.size) throw this.fail('OUT_OF_RANGE', `${what} of ${size} bytes is larger than the image`, { nid, offset: raw.offset });
    if (raw.layout === LAYOUT_FLAT_PLAIN) {
      const blockOffset = raw.u * BLOCK_SIZE;
      if (size > 0 && blockOffset + size > this.size) {
        throw this.fail('OUT_OF_RANGE', `${what}: block ${raw.u} + ${size} bytes lie outside the image`, { nid, offset: blockOffset });
      }
      return { blockOffset, blockBytes: size, tailOffset: 0, tailBytes: 0 };
    }
    if (raw.layout === LAYOUT_FLAT_INLINE) {
      const tailBytes = size % BLOCK_SIZE;
      const blockBytes = size - tailBytes;
      const blockOffset = raw.u * BLOCK_SIZE;
      if (blockBytes > 0 && blockOffset + blockBytes > this.size) {
        throw this.fail('OUT_OF_RANGE', `${what}: block ${raw.u} + ${blockBytes} bytes lie outside the image`, { nid, offset: blockOffset });
      }
      const tailOffset = raw.inlineOffset;
      if (tailOffset + tailBytes > this.size) throw this.fail('OUT_OF_RANGE', `${what}: inline tail runs past the end of the image`, { nid, offset: tailOffset });
      if ((tailOffset % BLOCK_SIZE) + tailBytes > BLOCK_SIZE) {
        throw this.fail('BAD_LAYOUT', `${what}: inline tail of ${tailBytes} bytes crosses a block boundary`, { nid, offset: tailOffset });
      }
      return { blockOffset, blockBytes, tailOffset, tailBytes };
    }
    throw this.fail('BAD_LAYOUT', `${what} has chunk-based layout, which holds no data in the image`, { nid, offset: raw.offset });
  }

  private flatBytes(raw: RawInode, what: string, budget?: Budget, start = 0, length = raw.size): Buffer {
    const e = this.flatExtent(raw, what);
    if (budget) this.claim(budget, raw.size, what, raw.nid);
    const end = Math.min(raw.size, start + length);
    if (start >= end) return EMPTY;
    if (end <= e.blockBytes) return this.slice(e.blockOffset + start, end - start, what, raw.nid);
    if (start >= e.blockBytes) return this.slice(e.tailOffset + start - e.blockBytes, end - start, what, raw.nid);
    return Buffer.concat([
      this.slice(e.blockOffset + start, e.blockBytes - start, what, raw.nid),
      this.slice(e.tailOffset, end - e.blockBytes, what, raw.nid),
    ]);
  }

  /** The target of symlink `nid`. */
  readlink(nid: number): Buffer {
    return this.linkTarget(this.inode(nid));
  }

  private linkTarget(raw: RawInode, budget?: Budget): Buffer {
    if ((raw.mode & S_IFMT) !== S_IFLNK) throw this.fail('NOT_A_SYMLINK', 'not a symlink', { nid: raw.nid });
    if (raw.size === 0 || raw.size > MAX_SYMLINK_LEN) throw this.fail('BAD_SYMLINK', `symlink target length ${raw.size} is not 1..${MAX_SYMLINK_LEN}`, { nid: raw.nid });
    return this.flatBytes(raw, 'symlink target', budget);
  }

  /** Bytes of an inline (non chunk-based) regular file, or a range of them. */
  readData(nid: number, offset = 0, length?: number): Buffer {
    const raw = this.inode(nid);
    if ((raw.mode & S_IFMT) !== S_IFREG) throw this.fail('NOT_A_FILE', 'not a regular file', { nid });
    if (raw.layout === LAYOUT_CHUNK_BASED) throw this.fail('NO_INLINE_DATA', 'file data lives in a backing object, not in the image', { nid });
    return this.flatBytes(raw, 'file data', undefined, Math.max(0, offset), length ?? raw.size);
  }

  // ---------------------------------------------------------------------------------------
  // Directories

  private dirBlocks(raw: RawInode): DirBlock[] {
    if ((raw.mode & S_IFMT) !== S_IFDIR) throw this.fail('NOT_A_DIRECTORY', 'not a directory', { nid: raw.nid });
    const e = this.flatExtent(raw, 'directory');
    const blocks: DirBlock[] = [];
    for (let off = 0; off < e.blockBytes; off += BLOCK_SIZE) {
      blocks.push({ offset: e.blockOffset + off, length: Math.min(BLOCK_SIZE, e.blockBytes - off) });
    }
    if (e.tailBytes > 0) blocks.push({ offset: e.tailOffset, length: e.tailBytes });
    return blocks;
  }

  /**
   * Decode the dirents of one directory block and call `fn(name key, nid, type)` for each, in
   * order. `prev` is the previous name key (entries must be strictly increasing across the whole
   * directory); returns the last key.
   */
  private scanBlock(raw: RawInode, blk: DirBlock, prev: string | undefined, fn: (key: string, nid: number, type: number) => void): string | undefined {
    const nid = raw.nid;
    const p = this.at(blk.offset, blk.length, 'directory block', nid);
    const b = this.cur;
    const len = blk.length;
    const lim = p + len;
    if (len < DIRENT_SIZE) throw this.fail('BAD_DIRENT', `directory block of ${len} bytes is too short`, { nid, offset: blk.offset });
    const first = b.readUInt16LE(p + DIRENT.nameoff);
    if (first < DIRENT_SIZE || first % DIRENT_SIZE !== 0 || first > len) {
      throw this.fail('BAD_DIRENT', `first name offset ${first} is invalid`, { nid, offset: blk.offset + DIRENT.nameoff });
    }
    const count = first / DIRENT_SIZE;
    let nameoff = p + first;
    for (let i = 0; i < count; i++) {
      const d = p + i * DIRENT_SIZE;
      let end: number;
      if (i + 1 < count) {
        end = p + b.readUInt16LE(d + DIRENT_SIZE + DIRENT.nameoff);
        if (end > lim) throw this.fail('BAD_DIRENT', `name offset ${end - p} is past the block end`, { nid, offset: blk.offset + d - p + DIRENT_SIZE });
      } else {
        end = lim;
        while (end > nameoff && b[end - 1] === 0) end--;
      }
      const nlen = end - nameoff;
      if (nlen <= 0 || nlen > MAX_NAME_LEN) throw this.fail('BAD_DIRENT', `entry ${i} has a name of ${nlen} bytes`, { nid, offset: blk.offset + d - p });
      const key = b.toString('latin1', nameoff, end);
      if (key.indexOf('/') >= 0 || key.indexOf('\0') >= 0) throw this.fail('BAD_DIRENT', `entry name contains '/' or NUL`, { nid, offset: blk.offset + nameoff - p });
      if (prev !== undefined && !(key > prev)) throw this.fail('BAD_DIRENT', `entries are not in strictly increasing byte order`, { nid, offset: blk.offset + nameoff - p });
      prev = key;
      if (b.readUInt32LE(d + DIRENT.nid + 4) !== 0) throw this.fail('BAD_NID', `entry nid does not fit 32 bits`, { nid, offset: blk.offset + d - p });
      const child = b.readUInt32LE(d + DIRENT.nid);
      const type = b[d + DIRENT.fileType]!;
      fn(key, child, type);
      nameoff = end;
    }
    return prev;
  }

  private forEachDirent(raw: RawInode, budget: Budget | undefined, fn: (key: string, nid: number, type: number) => void): void {
    const blocks = this.dirBlocks(raw);
    if (budget) this.claim(budget, raw.size, 'directory', raw.nid);
    let prev: string | undefined;
    for (const blk of blocks) prev = this.scanBlock(raw, blk, prev, fn);
  }

  /** The entries of directory `nid` in byte order, without `.`, `..` and whiteout stubs. */
  readdir(nid: number): DirEntry[] {
    const out: DirEntry[] = [];
    this.forEachDirent(this.inode(nid), undefined, (key, child, type) => {
      if (key === '.' || key === '..') return;
      if (type === FT_CHRDEV && isStubRaw(this.inode(child))) return;
      out.push({ name: Buffer.from(key, 'latin1'), nid: child, type });
    });
    return out;
  }

  /** The nid `name` names in directory `dirNid` (binary search), or undefined. Finds `.` and `..`. */
  lookupIn(dirNid: number, name: Buffer | string): number | undefined {
    return this.lookupRaw(this.inode(dirNid), typeof name === 'string' ? Buffer.from(name) : name);
  }

  /**
   * Binary search: first over blocks by their first name, then over the entries of one block,
   * comparing bytes in place (a lookup decodes O(log n) names, never a whole directory).
   */
  private lookupRaw(raw: RawInode, name: Buffer): number | undefined {
    if ((raw.mode & S_IFMT) !== S_IFDIR) throw this.fail('NOT_A_DIRECTORY', 'not a directory', { nid: raw.nid });
    const e = this.flatExtent(raw, 'directory');
    const nFull = Math.ceil(e.blockBytes / BLOCK_SIZE);
    const nBlocks = nFull + (e.tailBytes > 0 ? 1 : 0);
    if (nBlocks === 0) return undefined;
    const blockOff = (i: number): number => (i < nFull ? e.blockOffset + i * BLOCK_SIZE : e.tailOffset);
    const blockLen = (i: number): number => (i < nFull ? Math.min(BLOCK_SIZE, e.blockBytes - i * BLOCK_SIZE) : e.tailBytes);
    let lo = 0;
    let hi = nBlocks - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.compareEntry(raw, blockOff(mid), blockLen(mid), 0, name) >= 0) lo = mid;
      else hi = mid - 1;
    }
    const off = blockOff(lo);
    const len = blockLen(lo);
    const count = this.direntCount(raw, off, len);
    let a = 0;
    let b = count - 1;
    while (a <= b) {
      const mid = (a + b) >> 1;
      const c = this.compareEntry(raw, off, len, mid, name);
      if (c === 0) {
        const p = this.at(off + mid * DIRENT_SIZE, DIRENT_SIZE, 'dirent', raw.nid);
        if (this.cur.readUInt32LE(p + DIRENT.nid + 4) !== 0) throw this.fail('BAD_NID', 'entry nid does not fit 32 bits', { nid: raw.nid, offset: off + mid * DIRENT_SIZE });
        const found = this.cur.readUInt32LE(p + DIRENT.nid);
        const dot = name.length <= 2 && name.every((c) => c === 0x2e);
        if (!dot && this.cur[p + DIRENT.fileType] === FT_CHRDEV && isStubRaw(this.inode(found))) return undefined;
        return found;
      }
      if (c < 0) b = mid - 1;
      else a = mid + 1;
    }
    return undefined;
  }

  /** Number of dirents in the block at `off` (validated). */
  private direntCount(raw: RawInode, off: number, len: number): number {
    const p = this.at(off, len, 'directory block', raw.nid);
    if (len < DIRENT_SIZE) throw this.fail('BAD_DIRENT', 'directory block too short', { nid: raw.nid, offset: off });
    const first = this.cur.readUInt16LE(p + DIRENT.nameoff);
    if (first < DIRENT_SIZE || first % DIRENT_SIZE !== 0 || first > len) {
      throw this.fail('BAD_DIRENT', `first name offset ${first} is invalid`, { nid: raw.nid, offset: off });
    }
    return first / DIRENT_SIZE;
  }

  /** Compare the name of entry `i` of the block at `off` with `name`: <0, 0, >0 as name <, =, > it. */
  private compareEntry(raw: RawInode, off: number, len: number, i: number, name: Buffer): number {
    const count = this.direntCount(raw, off, len);
    const p = this.at(off, len, 'directory block', raw.nid);
    const b = this.cur;
    const start = b.readUInt16LE(p + i * DIRENT_SIZE + DIRENT.nameoff);
    let end = i + 1 < count ? b.readUInt16LE(p + (i + 1) * DIRENT_SIZE + DIRENT.nameoff) : len;
    if (i + 1 >= count) while (end > start && b[p + end - 1] === 0) end--;
    if (start < count * DIRENT_SIZE || end <= start || end > len || end - start > MAX_NAME_LEN) {
      throw this.fail('BAD_DIRENT', `entry ${i} has an invalid name`, { nid: raw.nid, offset: off + i * DIRENT_SIZE });
    }
    return name.compare(b, p + start, p + end);
  }

  /** The nid at `path` (components split on `/`, no symlinks followed), or undefined. */
  lookup(path: Buffer | string): number | undefined {
    let nid = this.rootNid;
    for (const comp of splitPath(path)) {
      const raw = this.inode(nid);
      if ((raw.mode & S_IFMT) !== S_IFDIR) return undefined;
      const next = this.lookupRaw(raw, comp);
      if (next === undefined) return undefined;
      nid = next;
    }
    return nid;
  }

  // ---------------------------------------------------------------------------------------
  // The whole tree

  /**
   * Materialise the image as a Tree, exactly as the dumpfile it was built from would parse:
   * inline content in `content`, redirect/metacopy in `payload`/`digest`, whiteouts as chr 0/0,
   * stubs left out, hardlinks (same nid) as one Inode object with its secondary names marked in
   * `hardlinks` so a writer numbers it where this image did, directory size/nlink as stored.
   */
  toTree(): Inode {
    const budget = new Budget(this.size);
    // nid -> Inode already built (hardlinks), or STUB.
    const seen = new Map<number, Inode>();
    const rootRaw = this.inode(this.rootNid);
    if ((rootRaw.mode & S_IFMT) !== S_IFDIR) throw this.fail('BAD_ROOT', 'root inode is not a directory', { nid: rootRaw.nid });
    const root = this.materialise(rootRaw, budget);
    seen.set(rootRaw.nid, root);
    // Breadth-first, like the writers' numbering: the visit order is the sequence markPrimaries needs.
    const queue: RawInode[] = [rootRaw];
    const nodes: Inode[] = [root];
    const seq: Sequence = { nid: [rootRaw.nid], dir: [root], key: [''] };
    let entries = root.entries!;
    let dirNid = rootRaw.nid;
    let dirNode = root;
    let linked = false;
    const visit = (key: string, nid: number, type: number): void => {
      if (key === '.' || key === '..') return;
      const known = seen.get(nid);
      if (known !== undefined) {
        if (known === STUB) return;
        if (known.entries) throw this.fail('DIR_CYCLE', `directory nid ${nid} is reached a second time (as ${JSON.stringify(key)})`, { nid: dirNid });
        entries.set(key, known);
        seq.nid.push(nid);
        seq.dir.push(dirNode);
        seq.key.push(key);
        linked = true;
        return;
      }
      const raw = this.inode(nid);
      if (FT_BY_TYPE.get(raw.mode & S_IFMT) !== type) {
        throw this.fail('BAD_DIRENT', `entry ${JSON.stringify(key)} has file type ${type} but its inode has mode 0${raw.mode.toString(8)}`, { nid: dirNid });
      }
      seq.nid.push(nid);
      seq.dir.push(dirNode);
      seq.key.push(key);
      if (isStubRaw(raw)) {
        this.claim(budget, ErofsImage.isize(raw) + raw.xattrSize, 'inode', nid);
        seen.set(nid, STUB);
        return;
      }
      const child = this.materialise(raw, budget);
      seen.set(nid, child);
      entries.set(key, child);
      if (child.entries) {
        queue.push(raw);
        nodes.push(child);
      }
    };
    for (let qi = 0; qi < queue.length; qi++) {
      const draw = queue[qi]!;
      dirNode = nodes[qi]!;
      entries = dirNode.entries!;
      dirNid = draw.nid;
      this.forEachDirent(draw, budget, visit);
    }
    if (linked) markPrimaries(seq);
    return root;
  }

  private materialise(raw: RawInode, budget: Budget): Inode {
    this.claim(budget, ErofsImage.isize(raw) + raw.xattrSize, 'inode', raw.nid);
    const xattrs = this.collectXattrs(raw, budget, true);
    const type = raw.mode & S_IFMT;
    const inode: Inode = {
      mode: raw.mode,
      nlink: raw.nlink,
      uid: raw.uid,
      gid: raw.gid,
      rdev: 0,
      mtimeSec: raw.mtimeSec,
      mtimeNsec: raw.mtimeNsec,
      size: raw.size,
      xattrs,
    };
    switch (type) {
      case S_IFDIR:
        if (raw.layout === LAYOUT_CHUNK_BASED) throw this.fail('BAD_LAYOUT', 'directory has chunk-based layout', { nid: raw.nid });
        inode.entries = new Map();
        break;
      case S_IFREG: {
        if (this.xWhiteout) {
          inode.mode = S_IFCHR | (raw.mode & 0o7777);
          break;
        }
        const payload = this.xPayload;
        const digest = this.xDigest;
        if (payload) inode.payload = payload;
        if (digest) inode.digest = digest;
        if (raw.layout !== LAYOUT_CHUNK_BASED && raw.size > 0) inode.content = this.flatBytes(raw, 'file data', budget);
        break;
      }
      case S_IFLNK:
        inode.target = this.linkTarget(raw, budget);
        break;
      case S_IFCHR:
      case S_IFBLK:
        inode.rdev = raw.u;
        break;
      default:
        break;
    }
    return inode;
  }
}

/** Every entry of a walk in breadth-first order (stubs and repeated hardlinks included). */
interface Sequence {
  nid: number[];
  /** The directory holding the entry (the root for position 0, the root itself). */
  dir: Inode[];
  key: string[];
}

/**
 * Mark which names of each hardlinked inode are secondary (`Inode.hardlinks`), so that writing
 * the tree numbers every inode where this image numbered it. Writers number inodes breadth-first
 * at their primary entry and place them in that order, so the primary of inode X is an entry
 * (in breadth-first order) that comes after some entry of every inode with a smaller nid and
 * before some entry of every inode with a larger nid. The first such entry is taken (any of them
 * gives the same numbering); if none fits (an image from another writer), the first entry.
 */
function markPrimaries(seq: Sequence): void {
  const n = seq.nid.length;
  // Positions ordered by (nid, position).
  let order: ArrayLike<number>;
  let nidAt: (i: number) => number;
  let posAt: (i: number) => number;
  if (n < 2 ** 24 && seq.nid.every((x) => x < 2 ** 29)) {
    const packed = new Float64Array(n);
    for (let p = 0; p < n; p++) packed[p] = seq.nid[p]! * 2 ** 24 + p;
    packed.sort();
    order = packed;
    nidAt = (i) => Math.floor(packed[i]! / 2 ** 24);
    posAt = (i) => packed[i]! % 2 ** 24;
  } else {
    const idx = Array.from({ length: n }, (_, i) => i).sort((a, b) => seq.nid[a]! - seq.nid[b]! || a - b);
    order = idx;
    nidAt = (i) => seq.nid[idx[i]!]!;
    posAt = (i) => idx[i]!;
  }
  // Groups of equal nid: [start, end) in `order`; first/last position of each.
  const gStart: number[] = [];
  for (let i = 0; i < order.length; i++) if (i === 0 || nidAt(i) !== nidAt(i - 1)) gStart.push(i);
  gStart.push(order.length);
  const groups = gStart.length - 1;
  const lo = new Float64Array(groups);
  let m = -1;
  for (let g = 0; g < groups; g++) {
    lo[g] = m;
    m = Math.max(m, posAt(gStart[g]!));
  }
  const hi = new Float64Array(groups);
  m = n;
  for (let g = groups - 1; g >= 0; g--) {
    hi[g] = m;
    m = Math.min(m, posAt(gStart[g + 1]! - 1));
  }
  for (let g = 0; g < groups; g++) {
    const s = gStart[g]!;
    const e = gStart[g + 1]!;
    if (e - s < 2) continue;
    let primary = posAt(s);
    for (let i = s; i < e; i++) {
      const p = posAt(i);
      if (p > lo[g]! && p < hi[g]!) {
        primary = p;
        break;
      }
    }
    for (let i = s; i < e; i++) {
      const p = posAt(i);
      if (p === primary) continue;
      const dir = seq.dir[p]!;
      (dir.hardlinks ??= new Set()).add(seq.key[p]!);
    }
  }
}

/** Collapse repeated keys (hostile images): first position, last value. */
function dedupe(xs: Xattr[]): Xattr[] {
  const n = xs.length;
  if (n < 2) return xs;
  if (n <= 8) {
    let dup = false;
    for (let i = 1; i < n && !dup; i++) for (let j = 0; j < i; j++) if (xs[i]!.key.equals(xs[j]!.key)) dup = true;
    if (!dup) return xs;
  }
  const pos = new Map<string, number>();
  const out: Xattr[] = [];
  for (const x of xs) {
    const k = x.key.toString('latin1');
    const at = pos.get(k);
    if (at === undefined) {
      pos.set(k, out.length);
      out.push(x);
    } else {
      out[at] = x;
    }
  }
  return out;
}

/** Read an image held in memory into a Tree. */
export function readImage(buf: Buffer, name = '<buffer>'): Inode {
  return ErofsImage.fromBuffer(buf, name).toTree();
}

/** Read an image file into a Tree. */
export function readImageFile(path: string): Inode {
  return ErofsImage.open(path).toTree();
}
