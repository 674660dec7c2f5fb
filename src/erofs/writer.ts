/**
 * Tree → composefs EROFS image, byte-identical to C mkcomposefs 1.0.8 (spec §2–§10).
 *
 * Pipeline: choose the format version; copy the tree into writer nodes while applying the
 * composefs rewrite (overlay xattr escaping, metacopy/redirect, whiteouts, root opaque, the
 * 00..ff whiteout stubs); number inodes breadth-first; decide shared xattrs; place inodes
 * (with the tail-within-one-block padding rules); assign data blocks; serialise.
 * The input tree is never modified.
 *
 * Memory: a tree of 100,000 inodes must not cost 100,000 writer objects. Node state lives in
 * typed-array columns indexed by node number, directory entries and xattr lists are flat
 * arrays with a range per node, and a regular file's own metacopy and redirect values are
 * composed from its digest and payload while the image is written, never built as Buffers.
 */
import { CfsError } from '../errors.js';
import {
  type Inode,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  fileTypeOf,
} from '../tree/tree.js';
import * as F from './format.js';
import { xxh32 } from './xxhash.js';

/** Writer options: the composefs format version range (defaults 0..1, as upstream). */
export interface WriteOptions {
  minVersion?: number;
  maxVersion?: number;
}

/** A tree that cannot be written as a composefs image. */
export class ErofsWriteError extends CfsError {}

/** An interned (key, value) pair with what the layout needs precomputed. */
interface XA {
  /** Index in the table: what node xattr lists store. */
  id: number;
  key: Buffer;
  value: Buffer;
  /** Prefix index and name suffix (§7.2). */
  idx: number;
  suffix: Buffer;
  /** Bloom filter bit of the name (§7.4). */
  bit: number;
  /** Entry size, 4-aligned (§7.1). */
  size: number;
  /** Number of inodes carrying this pair; > 1 means shared (§7.3). */
  count: number;
  /** Index in the shared table, or -1. */
  shared: number;
}

/**
 * Xattr ids below zero in a node's list stand for that regular file's own metacopy or
 * redirect pair: unique to the file (so never shared), and written from its digest/payload.
 */
const OWN_METACOPY = -1;
const OWN_REDIRECT = -2;

const enum Kind {
  Dir,
  Inline,
  Empty,
  Chunked,
  Symlink,
  Device,
  Plain,
}

/** Per-node boolean facts, packed in one column. */
const enum Flag {
  /** 64-byte inode. */
  Extended = 1,
  /** Directory: the last dirent group is stored inline after the inode. */
  DirTail = 2,
  /** Chunked file whose chunk map did not fit inline and went to a data block (§6.3 quirk). */
  MapOutOfLine = 4,
  /** Symlink whose target did not fit inline and went to a data block. */
  SymlinkBlock = 8,
  /** A whiteout (char device 0/0) rewritten as an empty file with whiteout xattrs. */
  Whiteout = 16,
  /** A directory that holds a whiteout (gets the whiteouts/opaque xattrs). */
  WhiteoutParent = 32,
  /** One of the root's 00..ff whiteout stubs (no source inode). */
  Stub = 64,
  /** Reached by at least one entry that is not marked as a secondary hardlink. */
  Primary = 128,
  /** Another file has the same digest: the metacopy pair is interned and may be shared. */
  SharedMetacopy = 256,
  /** Another file has the same payload: the redirect pair is interned and may be shared. */
  SharedRedirect = 512,
}

/** Writer node state as columns; node 0 is the root, numbers follow creation order. */
class NodeColumns {
  count = 0;
  /** Source inode; undefined for the whiteout stubs. */
  readonly src: (Inode | undefined)[] = [];
  // Float64 where the source value is written unchecked-but-range-checked by Buffer writes.
  readonly mode: Float64Array;
  readonly size: Float64Array;
  readonly nlink: Float64Array;
  readonly nid: Float64Array;
  readonly firstBlock: Float64Array;
  readonly rdev: Uint32Array;
  readonly xsize: Uint32Array;
  readonly tailLen: Uint32Array;
  readonly nblocks: Uint32Array;
  /** Directories: their entries' range in the builder's flat entry arrays. */
  readonly dirOff: Uint32Array;
  readonly dirLen: Uint32Array;
  /** Inode number (breadth-first), -1 until numbered. */
  readonly ino: Int32Array;
  readonly kind: Uint8Array;
  /** Number of shared references (the first shared pairs, in key order, up to 128). */
  readonly nShared: Uint8Array;
  readonly chunkFormat: Uint8Array;
  readonly flags: Uint16Array;

  constructor(cap: number) {
    this.mode = new Float64Array(cap);
    this.size = new Float64Array(cap);
    this.nlink = new Float64Array(cap);
    this.nid = new Float64Array(cap);
    this.firstBlock = new Float64Array(cap);
    this.rdev = new Uint32Array(cap);
    this.xsize = new Uint32Array(cap);
    this.tailLen = new Uint32Array(cap);
    this.nblocks = new Uint32Array(cap);
    this.dirOff = new Uint32Array(cap);
    this.dirLen = new Uint32Array(cap);
    this.ino = new Int32Array(cap).fill(-1);
    this.kind = new Uint8Array(cap);
    this.nShared = new Uint8Array(cap);
    this.chunkFormat = new Uint8Array(cap);
    this.flags = new Uint16Array(cap);
  }

  add(src: Inode | undefined, mode: number, kind: Kind): number {
    const i = this.count++;
    this.src.push(src);
    this.mode[i] = mode;
    this.kind[i] = kind;
    this.nlink[i] = src ? src.nlink : 1;
    return i;
  }
}

const ENC = (s: string) => Buffer.from(s, 'latin1');
const OVERLAY_PREFIX = ENC(F.OVERLAY_PREFIX);
const OVERLAY_ESCAPED = ENC(F.OVERLAY_ESCAPED_PREFIX);
const K_METACOPY = ENC(F.XATTR_METACOPY);
const K_REDIRECT = ENC(F.XATTR_REDIRECT);
const K_OPAQUE = ENC(F.XATTR_OPAQUE);
const K_ESC_WHITEOUT = ENC('trusted.overlay.overlay.whiteout');
const K_USER_WHITEOUT = ENC('user.overlay.whiteout');
const K_ESC_WHITEOUTS = ENC('trusted.overlay.overlay.whiteouts');
const K_USER_WHITEOUTS = ENC('user.overlay.whiteouts');
const K_ESC_OPAQUE = ENC('trusted.overlay.overlay.opaque');
const K_USER_OPAQUE = ENC('user.overlay.opaque');
const K_SELINUX = ENC('security.selinux');
const K_ACL_ACCESS = ENC('system.posix_acl_access');
const K_ACL_DEFAULT = ENC('system.posix_acl_default');
const EMPTY = Buffer.alloc(0);
const V_Y = ENC('y');
const V_X = ENC('x');
const SLASH = ENC('/');
const STUB_COUNT = 256;

interface NameInfo {
  idx: number;
  suffix: Buffer;
  bit: number;
}

/**
 * Interns xattr pairs so equal pairs are one object (counted once per inode). Pairs are found
 * by a hash of their bytes, so no string is built per lookup; key names are cached by Buffer
 * identity first (the dumpfile parser shares one Buffer per distinct key).
 */
class XattrTable {
  private byHash = new Map<number, XA | XA[]>();
  private list: XA[] = [];
  private namesByRef = new Map<Buffer, NameInfo>();
  private names = new Map<string, NameInfo>();

  name(key: Buffer): NameInfo {
    let n = this.namesByRef.get(key);
    if (n) return n;
    const k = key.toString('latin1');
    n = this.names.get(k);
    if (!n) {
      const [idx, suffix] = splitPrefix(key);
      n = { idx, suffix, bit: xxh32(suffix, F.XATTR_FILTER_SEED + idx) & 31 };
      this.names.set(k, n);
    }
    if (this.namesByRef.size < 4096) this.namesByRef.set(key, n);
    return n;
  }

  get(key: Buffer, value: Buffer): XA {
    const h = xxh32(value, xxh32(key, 0));
    const found = this.byHash.get(h);
    if (found) {
      if (Array.isArray(found)) {
        for (const x of found) if (x.key.equals(key) && x.value.equals(value)) return x;
      } else if (found.key.equals(key) && found.value.equals(value)) {
        return found;
      }
    }
    const name = this.name(key);
    const x: XA = {
      id: this.list.length,
      key,
      value,
      idx: name.idx,
      suffix: name.suffix,
      bit: name.bit,
      size: F.roundUp(F.XATTR_ENTRY_HEADER_SIZE + name.suffix.length + value.length, 4),
      count: 0,
      shared: -1,
    };
    if (!found) this.byHash.set(h, x);
    else if (Array.isArray(found)) found.push(x);
    else this.byHash.set(h, [found, x]);
    this.list.push(x);
    return x;
  }

  byId(id: number): XA {
    return this.list[id]!;
  }

  all(): XA[] {
    return this.list;
  }
}

function cmpBuf(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

/** Build the composefs image of `root` and return its bytes. */
export function writeImage(root: Inode, opts: WriteOptions = {}): Buffer {
  const out = new WholeImage();
  new ImageBuilder(root, opts).build(out);
  return out.image();
}

/** What `writeImageTo` wrote. */
export interface ImageInfo {
  /** Image size in bytes. */
  size: number;
  /** Number of inodes. */
  inodes: number;
}

/**
 * Build the composefs image of `root` and hand its bytes to `write` in order, in chunks of
 * about `window` bytes (1 MB), so the whole image is never in memory. A chunk is only valid
 * during the call (its buffer is reused).
 */
export function writeImageTo(root: Inode, opts: WriteOptions, write: (chunk: Buffer) => void, window = WINDOW): ImageInfo {
  const out = new WindowedImage(write, window);
  const info = new ImageBuilder(root, opts).build(out);
  out.finish(info.size);
  return info;
}

/**
 * Where serialise() puts bytes. Writes come in increasing offset order, one span at a time:
 * `span(at, len)` makes image bytes [at, at + len) writable (zeroed until written) and
 * returns the buffer and the index of `at` in it.
 */
interface ImageOutput {
  start(total: number): void;
  span(at: number, len: number): [Buffer, number];
}

/** The whole image in one Buffer. */
class WholeImage implements ImageOutput {
  private buf: Buffer = EMPTY;

  start(total: number): void {
    this.buf = Buffer.alloc(total);
  }

  span(at: number): [Buffer, number] {
    return [this.buf, at];
  }

  image(): Buffer {
    return this.buf;
  }
}

/** Output window size: big enough that flushes are few, small next to an image. */
const WINDOW = 1 << 20;

/** A window over the image; bytes before a new span are complete and are flushed. */
class WindowedImage implements ImageOutput {
  private buf: Buffer;
  /** Image offset of buf[0]. */
  private base = 0;

  constructor(private readonly write: (chunk: Buffer) => void, window: number) {
    this.buf = Buffer.alloc(window);
  }

  start(): void {}

  span(at: number, len: number): [Buffer, number] {
    if (at + len > this.base + this.buf.length) {
      this.advance(at);
      // One inode's xattrs can exceed the window (up to 256 KB each): grow for it.
      if (len > this.buf.length) this.buf = Buffer.alloc(len);
    }
    return [this.buf, at - this.base];
  }

  /** Flush the rest, zero padding included, up to `total`. */
  finish(total: number): void {
    this.advance(total);
  }

  /**
   * Emit image bytes up to `to`: the window's, then zeros for a gap past its end. Nothing at
   * or after `to` has been written yet, so the window restarts empty at `to`.
   */
  private advance(to: number): void {
    while (this.base < to) {
      const n = Math.min(this.buf.length, to - this.base);
      this.write(this.buf.subarray(0, n));
      this.base += n;
      this.buf.fill(0);
    }
  }
}

/** What a first walk over the tree tells before any node is made. */
interface Survey {
  /** Upper bound on writer nodes: every entry a distinct inode, plus the root and stubs. */
  nodes: number;
  /** Upper bound on directory entries, `.`, `..` and stubs included. */
  entries: number;
  whiteout: boolean;
}

class ImageBuilder {
  private readonly root: Inode;
  private readonly minVersion: number;
  private readonly maxVersion: number;
  private version = 0;
  private n!: NodeColumns;
  /** Directory entries of all directories, each directory's sorted run in one range. */
  private entryKey: string[] = []; // latin1 name: its length is the name's byte length
  private entryNode!: Int32Array;
  /** Xattr ids of node i (sorted by key) are xattrIds[xattrOff[i] .. xattrOff[i+1]). */
  private xattrOff!: Uint32Array;
  private xattrIds!: Int32Array;
  private order!: Int32Array; // BFS inode order: node numbers
  private inodes = 0;
  private xt = new XattrTable();
  private metacopyName: NameInfo;
  private redirectName: NameInfo;
  private shared: XA[] = [];
  private sharedOffsets: number[] = [];
  private sharedBytes = 0;
  private buildSec = 0;
  private buildNsec = 0;
  private hasAcl = false;

  constructor(root: Inode, opts: WriteOptions) {
    if ((root.mode & S_IFMT) !== S_IFDIR || !root.entries) throw new ErofsWriteError('EROFS_ROOT', 'the root of an image must be a directory');
    this.root = root;
    this.minVersion = opts.minVersion ?? 0;
    let max = opts.maxVersion ?? 1;
    if (max < this.minVersion) max = this.minVersion;
    this.maxVersion = max;
    if (this.minVersion < 0 || this.maxVersion > 1) {
      throw new ErofsWriteError('EROFS_VERSION', `unsupported composefs version range ${this.minVersion}..${this.maxVersion} (only 0 and 1 exist)`);
    }
    this.metacopyName = this.xt.name(K_METACOPY);
    this.redirectName = this.xt.name(K_REDIRECT);
  }

  build(out: ImageOutput): ImageInfo {
    const survey = this.survey();
    this.chooseVersion(survey);
    this.n = new NodeColumns(survey.nodes);
    this.entryNode = new Int32Array(survey.entries);
    this.rewrite();
    this.buildXattrs();
    this.number();
    this.finishNodes();
    this.chooseShared();
    const inodesEnd = this.place();
    return this.serialise(inodesEnd, out);
  }

  /** Walk the directories once: column sizes, and whether any whiteout is reachable. */
  private survey(): Survey {
    // Directories seen: a directory reached twice is an error rewrite() reports; here it
    // must only not loop.
    const seen = new Set<Inode>();
    const stack: Inode[] = [this.root];
    const s: Survey = { nodes: 1 + STUB_COUNT, entries: STUB_COUNT, whiteout: false };
    while (stack.length) {
      const dir = stack.pop()!;
      if (seen.has(dir)) continue;
      seen.add(dir);
      s.nodes += dir.entries!.size;
      s.entries += dir.entries!.size + 2;
      for (const c of dir.entries!.values()) {
        if ((c.mode & S_IFMT) === S_IFCHR && c.rdev === 0) s.whiteout = true;
        if (c.entries) stack.push(c);
      }
    }
    return s;
  }

  /** §2.1: min version, raised to 1 when the input has a whiteout and max allows it. */
  private chooseVersion(survey: Survey): void {
    this.version = this.minVersion;
    if (this.version < 1 && this.maxVersion >= 1 && survey.whiteout) this.version = 1;
  }

  /** §2.2–§2.4: make writer nodes and directory entries, applying the composefs rewrite. */
  private rewrite(): void {
    const flags = this.n.flags;
    const nodeOf = new Map<Inode, number>([[this.root, this.convert(this.root, -1, '', undefined)]]);
    // Depth-first, parents before children; each inode once. Entries: dir, its node, the
    // node of its parent, its path (for messages).
    const stack: [Inode, number, number, string][] = [[this.root, 0, 0, '']];
    while (stack.length) {
      const [dir, d, parent, path] = stack.pop()!;
      const keys: string[] = [];
      const kids: number[] = [];
      for (const [key, child] of dir.entries!) {
        if (key.length === 0 || key.length > 255 || key.includes('/') || key.includes('\0') || key === '.' || key === '..') {
          throw new ErofsWriteError('EROFS_NAME', `invalid name ${JSON.stringify(key)} in ${path || '/'}`);
        }
        let c = nodeOf.get(child);
        if (c === undefined) {
          c = this.convert(child, d, path, key);
          nodeOf.set(child, c);
          if (child.entries) stack.push([child, c, d, path + '/' + key]);
        } else if (child.entries) {
          throw new ErofsWriteError('EROFS_HARDLINK', `directory ${path}/${key} is reachable twice (directories can't be hardlinked)`);
        }
        if (!dir.hardlinks?.has(key)) flags[c] |= Flag.Primary;
        keys.push(key);
        kids.push(c);
      }
      keys.push('.', '..');
      kids.push(d, parent);
      // §2.4: whiteout stubs 00..ff in the root where the name is free.
      if (d === 0) this.addStubs(keys, kids);
      this.storeEntries(d, keys, kids);
    }
  }

  private addStubs(keys: string[], kids: number[]): void {
    for (let i = 0; i < STUB_COUNT; i++) {
      const key = i.toString(16).padStart(2, '0');
      if (this.root.entries!.has(key)) continue;
      const stub = this.n.add(undefined, S_IFCHR | 0o644, Kind.Device);
      this.n.flags[stub] |= Flag.Stub;
      keys.push(key);
      kids.push(stub);
    }
  }

  /** Append a directory's entries to the flat arrays in byte order of their names. */
  private storeEntries(d: number, keys: string[], kids: number[]): void {
    const perm = keys.map((_, i) => i).sort((a, b) => (keys[a]! < keys[b]! ? -1 : keys[a]! > keys[b]! ? 1 : 0));
    const off = this.entryKey.length;
    for (let i = 0; i < perm.length; i++) {
      this.entryKey.push(keys[perm[i]!]!);
      this.entryNode[off + i] = kids[perm[i]!]!;
    }
    this.n.dirOff[d] = off;
    this.n.dirLen[d] = perm.length;
  }

  /** The inode whose uid, gid and mtime node i has (stubs copy the root's). */
  private attrs(i: number): Inode {
    return this.n.src[i] ?? this.root;
  }

  /** Make the node of one inode, with the per-entry rewrite of §2.2 (b)–(c); (a) is in xattrsOf. */
  private convert(src: Inode, parent: number, dirPath: string, key: string | undefined): number {
    const path = () => (key === undefined ? '/' : `${dirPath}/${key}`);
    const type = src.mode & S_IFMT;
    if (!fileTypeOf(src.mode)) throw new ErofsWriteError('EROFS_MODE', `invalid mode ${src.mode.toString(8)} at ${path()}`);
    const n = this.n;
    const i = n.add(src, src.mode, Kind.Plain);
    switch (type) {
      case S_IFDIR:
        n.kind[i] = Kind.Dir;
        break;
      case S_IFREG: {
        const size = src.size;
        if (!Number.isInteger(size) || size < 0 || size > 2 ** 53) throw new ErofsWriteError('EROFS_SIZE', `invalid size ${size} at ${path()}`);
        n.size[i] = size;
        if (size === 0) n.kind[i] = Kind.Empty;
        else if (src.content) {
          if (src.content.length !== size) throw new ErofsWriteError('EROFS_SIZE', `inline content of ${src.content.length} bytes but size ${size} at ${path()}`);
          n.kind[i] = Kind.Inline;
        } else {
          // (b) metacopy and redirect: added by xattrsOf from the digest and payload
          n.kind[i] = Kind.Chunked;
          if (src.digest && src.digest.length !== 32) throw new ErofsWriteError('EROFS_DIGEST', `digest of ${src.digest.length} bytes at ${path()}`);
        }
        break;
      }
      case S_IFLNK: {
        const t = src.target;
        if (!t || t.length === 0 || t.length >= 4096) throw new ErofsWriteError('EROFS_SYMLINK', `invalid symlink target at ${path()}`);
        n.kind[i] = Kind.Symlink;
        n.size[i] = t.length;
        break;
      }
      case S_IFCHR:
        if (src.rdev === 0) {
          // (c) whiteout → empty regular file with escaped whiteout xattrs; mark the parent
          n.mode[i] = S_IFREG | (src.mode & 0o7777);
          n.kind[i] = Kind.Empty;
          n.flags[i] |= Flag.Whiteout;
          if (parent >= 0) n.flags[parent] |= Flag.WhiteoutParent;
        } else {
          n.kind[i] = Kind.Device;
          n.rdev[i] = src.rdev >>> 0;
        }
        break;
      default:
        // block devices keep rdev in i_u; fifos and sockets have no data
        if (fileTypeOf(src.mode) === 'blk') {
          n.kind[i] = Kind.Device;
          n.rdev[i] = src.rdev >>> 0;
        }
    }
    return i;
  }

  /** The key of an xattr id in node lists. */
  private keyOf(id: number): Buffer {
    if (id >= 0) return this.xt.byId(id).key;
    return id === OWN_METACOPY ? K_METACOPY : K_REDIRECT;
  }

  private readonly byKey = (a: number, b: number): number => cmpBuf(this.keyOf(a), this.keyOf(b));

  /** §2.2: every node's final xattr list, sorted by key, into the flat id arrays. */
  private buildXattrs(): void {
    this.flagSharedOverlayValues();
    const count = this.n.count;
    const off = new Uint32Array(count + 1);
    let ids = new Int32Array(count * 2 + 16);
    let len = 0;
    const list: number[] = [];
    const selinux = this.root.xattrs.find((x) => x.key.equals(K_SELINUX));
    const stubLabel = selinux ? this.xt.get(K_SELINUX, selinux.value).id : -1;
    for (let i = 0; i < count; i++) {
      this.xattrsOf(i, list, stubLabel);
      if (list.length > 1) list.sort(this.byKey);
      if (len + list.length > ids.length) {
        const bigger = new Int32Array(Math.max(ids.length * 2, len + list.length));
        bigger.set(ids);
        ids = bigger;
      }
      for (const id of list) ids[len++] = id;
      off[i + 1] = len;
    }
    this.xattrOff = off;
    this.xattrIds = ids;
  }

  /** Node i's xattrs (unsorted) into `list`. */
  private xattrsOf(i: number, list: number[], stubLabel: number): void {
    list.length = 0;
    const src = this.n.src[i];
    const f = this.n.flags[i]!;
    // (a) escape overlay xattrs; keys are unique in a Tree, so these need no replace check
    if (src) for (const x of src.xattrs) list.push(this.xt.get(escapeKey(x.key), x.value).id);
    else if (f & Flag.Stub && stubLabel >= 0) list.push(stubLabel);
    if (f & Flag.Whiteout) {
      this.setX(list, K_ESC_WHITEOUT, EMPTY);
      this.setX(list, K_USER_WHITEOUT, EMPTY);
    }
    if (f & Flag.WhiteoutParent) {
      this.setX(list, K_ESC_WHITEOUTS, EMPTY);
      this.setX(list, K_USER_WHITEOUTS, EMPTY);
      if (this.version >= 1) {
        this.setX(list, K_ESC_OPAQUE, V_X);
        this.setX(list, K_USER_OPAQUE, V_X);
      }
    }
    // §2.3: the root is opaque.
    if (i === 0) this.setX(list, K_OPAQUE, V_Y);
    if (this.n.kind[i] === Kind.Chunked) this.overlayXattrs(src!, f, list);
  }

  /** (b) metacopy and redirect of an external file; own (unmaterialised) unless duplicated. */
  private overlayXattrs(src: Inode, f: number, list: number[]): void {
    if (!src.digest) this.setX(list, K_METACOPY, EMPTY);
    else if (f & Flag.SharedMetacopy) this.setX(list, K_METACOPY, Buffer.concat([F.METACOPY_HEADER, src.digest]));
    else list.push(OWN_METACOPY);
    if (src.payload && src.payload.length > 0) {
      if (f & Flag.SharedRedirect) this.setX(list, K_REDIRECT, Buffer.concat([SLASH, src.payload]));
      else list.push(OWN_REDIRECT);
    }
  }

  /** Set key=value in a node's list, replacing an existing value of the same key. */
  private setX(list: number[], key: Buffer, value: Buffer): void {
    const id = this.xt.get(key, value).id;
    for (let k = 0; k < list.length; k++) {
      if (this.keyOf(list[k]!).equals(key)) {
        list[k] = id;
        return;
      }
    }
    list.push(id);
  }

  /**
   * Files with equal digests (or payloads) have equal metacopy (redirect) pairs, which C
   * mkcomposefs shares like any other pair: flag those files so their pairs are interned.
   */
  private flagSharedOverlayValues(): void {
    const n = this.n;
    const external = (i: number): Inode | undefined => (n.kind[i] === Kind.Chunked ? n.src[i] : undefined);
    flagDuplicates(n, (i) => external(i)?.digest, Flag.SharedMetacopy);
    flagDuplicates(n, (i) => {
      const p = external(i)?.payload;
      return p && p.length > 0 ? p : undefined;
    }, Flag.SharedRedirect);
  }

  /** §2.5: breadth-first inode numbering, primary entries only. */
  private number(): void {
    const n = this.n;
    const order = new Int32Array(n.count);
    let len = 0;
    n.ino[0] = 0;
    order[len++] = 0;
    for (let q = 0; q < len; q++) {
      const d = order[q]!;
      const end = n.dirOff[d]! + n.dirLen[d]!;
      const marks = n.src[d]?.hardlinks;
      for (let e = n.dirOff[d]!; e < end; e++) {
        const c = this.entryNode[e]!;
        const key = this.entryKey[e]!;
        if (n.ino[c]! >= 0 || key === '.' || key === '..') continue;
        if (marks?.has(key) && n.src[c] && n.flags[c]! & Flag.Primary) continue;
        n.ino[c] = len;
        order[len++] = c;
      }
    }
    this.order = order;
    this.inodes = len;
  }

  /** §2.6–§2.7: directory nlink, build time, per-directory data. */
  private finishNodes(): void {
    const n = this.n;
    let minSec = Infinity;
    let minNsec = 0;
    for (let q = 0; q < this.inodes; q++) {
      const i = this.order[q]!;
      const a = this.attrs(i);
      if (a.mtimeSec < minSec || (a.mtimeSec === minSec && a.mtimeNsec < minNsec)) {
        minSec = a.mtimeSec;
        minNsec = a.mtimeNsec;
      }
      if (n.kind[i] === Kind.Dir) {
        let subdirs = 0;
        const end = n.dirOff[i]! + n.dirLen[i]!;
        for (let e = n.dirOff[i]!; e < end; e++) {
          const key = this.entryKey[e]!;
          if (key !== '.' && key !== '..' && n.kind[this.entryNode[e]!] === Kind.Dir) subdirs++;
        }
        n.nlink[i] = 2 + subdirs;
        this.dirData(i);
      }
    }
    this.buildSec = minSec;
    this.buildNsec = minNsec;
  }

  /**
   * §8: pack dirents into blocks; a final group of at most 2048 bytes becomes the tail.
   * Calls `group(from, to, block)` for each group (block -1: the inline tail); returns the
   * number of groups and the bytes used by the last one.
   */
  private direntGroups(i: number, group?: (from: number, to: number, block: number) => void): [number, number] {
    const off = this.n.dirOff[i]!;
    const end = off + this.n.dirLen[i]!;
    let groups = 0;
    let from = off;
    let used = 0;
    for (let e = off; e < end; e++) {
      const need = F.DIRENT_SIZE + this.entryKey[e]!.length;
      if (used + need > F.BLOCK_SIZE) {
        group?.(from, e, groups);
        groups++;
        from = e;
        used = 0;
      }
      used += need;
    }
    group?.(from, end, this.n.flags[i]! & Flag.DirTail ? -1 : groups);
    return [groups + 1, used];
  }

  /** §8: a directory's block count, inline tail and size. */
  private dirData(i: number): void {
    const n = this.n;
    const [groups, used] = this.direntGroups(i);
    const tail = used <= F.BLOCK_SIZE / 2;
    if (tail) n.flags[i] |= Flag.DirTail;
    n.nblocks[i] = tail ? groups - 1 : groups;
    n.tailLen[i] = tail ? used : 0;
    n.size[i] = n.nblocks[i]! * F.BLOCK_SIZE + n.tailLen[i]!;
  }

  /** Write dirents [from, to) of the flat entry arrays as one block at `img[off]`. */
  private writeDirents(img: Buffer, off: number, from: number, to: number): void {
    let nameoff = F.DIRENT_SIZE * (to - from);
    for (let e = from; e < to; e++) {
      const key = this.entryKey[e]!;
      const c = this.entryNode[e]!;
      const d = off + (e - from) * F.DIRENT_SIZE;
      img.writeBigUInt64LE(BigInt(this.n.nid[c]!), d + F.DIRENT.nid);
      img.writeUInt16LE(nameoff, d + F.DIRENT.nameoff);
      img[d + F.DIRENT.fileType] = fileTypeCode(this.n.mode[c]!);
      img.write(key, off + nameoff, 'latin1');
      nameoff += key.length;
    }
  }

  /** §7.3: pairs used by more than one inode are shared; table sorted descending. */
  private chooseShared(): void {
    for (let q = 0; q < this.inodes; q++) {
      const i = this.order[q]!;
      for (let k = this.xattrOff[i]!; k < this.xattrOff[i + 1]!; k++) {
        const id = this.xattrIds[k]!;
        if (id >= 0) this.xt.byId(id).count++;
      }
    }
    const shared: XA[] = [];
    for (const x of this.xt.all()) {
      if (x.count > 0 && (x.key.equals(K_ACL_ACCESS) || x.key.equals(K_ACL_DEFAULT))) this.hasAcl = true;
      if (x.count > 1) shared.push(x);
    }
    shared.sort((a, b) => {
      const k = cmpBuf(b.key, a.key);
      if (k) return k;
      if (a.value.length !== b.value.length) return b.value.length - a.value.length;
      return cmpBuf(b.value, a.value);
    });
    let off = 0;
    shared.forEach((x, i) => {
      x.shared = i;
      this.shared.push(x);
      this.sharedOffsets.push(off);
      off += x.size;
    });
    this.sharedBytes = off;
  }

  /** Value length of an own (unmaterialised) pair of node i. */
  private ownValueLength(id: number, i: number): number {
    return id === OWN_METACOPY ? F.METACOPY_SIZE : 1 + this.n.src[i]!.payload!.length;
  }

  private ownName(id: number): NameInfo {
    return id === OWN_METACOPY ? this.metacopyName : this.redirectName;
  }

  /** Inline size of xattr id in node i's xattr area. */
  private entrySize(id: number, i: number): number {
    if (id >= 0) return this.xt.byId(id).size;
    return F.roundUp(F.XATTR_ENTRY_HEADER_SIZE + this.ownName(id).suffix.length + this.ownValueLength(id, i), 4);
  }

  /** §7: node i's xattr area size and number of shared references. */
  private xattrArea(i: number): void {
    const from = this.xattrOff[i]!;
    const to = this.xattrOff[i + 1]!;
    if (from === to) return;
    let s = F.XATTR_IBODY_HEADER_SIZE;
    let refs = 0;
    for (let k = from; k < to; k++) {
      const id = this.xattrIds[k]!;
      if (id >= 0 && this.xt.byId(id).shared >= 0 && refs < F.XATTR_MAX_SHARED_REFS) {
        refs++;
        s += 4;
      } else {
        s += this.entrySize(id, i);
      }
    }
    this.n.nShared[i] = refs;
    this.n.xsize[i] = F.roundUp(s, 4);
  }

  /** §6: inode sizes, tails and positions; returns inodes_end. */
  private place(): number {
    const n = this.n;
    let pos = F.INODE_AREA_START;
    for (let q = 0; q < this.inodes; q++) {
      const i = this.order[q]!;
      this.xattrArea(i);
      this.typeData(i);
      const a = this.attrs(i);
      const extended = !(
        a.mtimeSec === this.buildSec &&
        a.mtimeNsec === this.buildNsec &&
        n.nlink[i]! <= 0xffff &&
        a.uid <= 0xffff &&
        a.gid <= 0xffff &&
        n.size[i]! <= 0xffffffff
      );
      if (extended) n.flags[i] |= Flag.Extended;
      const isize = extended ? F.INODE_EXTENDED_SIZE : F.INODE_COMPACT_SIZE;
      const xsize = n.xsize[i]!;
      pos = F.roundUp(pos, F.INODE_SLOT);
      const tailLen = n.tailLen[i]!;
      if (n.kind[i] === Kind.Symlink) {
        // Upstream keeps the target inline only while inode + xattrs + target stay below one
        // block: a total of exactly 4096 (e.g. a 4064-byte target behind a bare compact inode)
        // already goes to a data block of its own. The padding below still uses that total.
        const total = isize + xsize + tailLen;
        if (total >= F.BLOCK_SIZE) {
          n.flags[i] |= Flag.SymlinkBlock;
          n.nblocks[i] = 1;
          n.tailLen[i] = 0;
        }
        if (Math.floor(pos / F.BLOCK_SIZE) !== Math.floor((pos + total - 1) / F.BLOCK_SIZE)) pos = F.roundUp(pos, F.BLOCK_SIZE);
      } else if (tailLen > 0) {
        const room = F.BLOCK_SIZE - ((pos + isize + xsize) % F.BLOCK_SIZE);
        if (room < tailLen) {
          const pad = F.roundUp(room, F.INODE_SLOT);
          if (pad - room + tailLen <= F.BLOCK_SIZE) {
            pos += pad;
          } else {
            // Only a huge chunk map gets here: it moves to a data block (upstream quirk, §6.3).
            n.flags[i] |= Flag.MapOutOfLine;
            n.nblocks[i] = 1;
            n.tailLen[i] = 0;
            pos = F.roundUp(pos, F.BLOCK_SIZE);
          }
        }
      }
      n.nid[i] = pos / F.INODE_SLOT;
      pos += isize + xsize + n.tailLen[i]!;
    }
    return F.roundUp(pos, F.INODE_SLOT);
  }

  /** §6.2: tail length and block count for non-directory types (directories: dirData). */
  private typeData(i: number): void {
    const n = this.n;
    switch (n.kind[i]) {
      case Kind.Inline: {
        const len = n.src[i]!.content!.length;
        let blocks = Math.floor(len / F.BLOCK_SIZE);
        let tail = len % F.BLOCK_SIZE;
        if (tail > F.BLOCK_SIZE / 2) {
          blocks += 1;
          tail = 0;
        }
        n.nblocks[i] = blocks;
        n.tailLen[i] = tail;
        break;
      }
      case Kind.Symlink:
        n.tailLen[i] = n.src[i]!.target!.length;
        break;
      case Kind.Chunked: {
        const size = n.size[i]!;
        let bits = Math.max(F.BLOCK_BITS, bitLength(size - 1));
        if (bits > F.CHUNK_MAX_BITS) bits = F.CHUNK_MAX_BITS;
        const count = Math.ceil(size / 2 ** bits);
        if (count > F.CHUNK_MAX_COUNT) {
          throw new ErofsWriteError('EROFS_TOO_LARGE', `cannot write file: File too large (${size} bytes needs ${count} chunks, limit ${F.CHUNK_MAX_COUNT})`);
        }
        n.chunkFormat[i] = bits - F.BLOCK_BITS;
        n.tailLen[i] = 4 * count;
        break;
      }
      default:
        break;
    }
  }

  private layoutOf(i: number): number {
    if (this.n.kind[i] === Kind.Chunked) return F.LAYOUT_CHUNK_BASED;
    if (this.n.tailLen[i]! > 0) return F.LAYOUT_FLAT_INLINE;
    return F.LAYOUT_FLAT_PLAIN;
  }

  /**
   * §3–§8: assign data blocks and write everything, in offset order: headers, inodes with
   * their xattrs and inline tails, the shared xattrs, then the data blocks.
   */
  private serialise(inodesEnd: number, out: ImageOutput): ImageInfo {
    const n = this.n;
    const dataStart = F.roundUp(inodesEnd + this.sharedBytes, F.BLOCK_SIZE);
    let block = dataStart / F.BLOCK_SIZE;
    for (let q = 0; q < this.inodes; q++) {
      const i = this.order[q]!;
      if (n.nblocks[i]) {
        n.firstBlock[i] = block;
        block += n.nblocks[i]!;
      }
    }
    const total = block * F.BLOCK_SIZE;
    out.start(total);
    this.writeHeaders(...out.span(0, F.INODE_AREA_START), inodesEnd, block);
    for (let q = 0; q < this.inodes; q++) this.writeMeta(out, this.order[q]!, inodesEnd % F.BLOCK_SIZE);
    let at = inodesEnd;
    for (const x of this.shared) {
      writeXattrEntry(...out.span(at, x.size), x);
      at += x.size;
    }
    for (let q = 0; q < this.inodes; q++) {
      const i = this.order[q]!;
      if (n.nblocks[i]) this.writeBlocks(out, i);
    }
    return { size: total, inodes: this.inodes };
  }

  /** Node i's inode, xattr area and inline tail. */
  private writeMeta(out: ImageOutput, i: number, sharedBase: number): void {
    const n = this.n;
    const isize = n.flags[i]! & Flag.Extended ? F.INODE_EXTENDED_SIZE : F.INODE_COMPACT_SIZE;
    const [img, at] = out.span(n.nid[i]! * F.INODE_SLOT, isize + n.xsize[i]! + n.tailLen[i]!);
    this.writeInode(img, i, at);
    let p = at + isize;
    if (n.xsize[i]) {
      this.writeXattrArea(img, i, p, sharedBase);
      p += n.xsize[i]!;
    }
    if (n.kind[i] === Kind.Dir) {
      if (n.flags[i]! & Flag.DirTail) {
        this.direntGroups(i, (from, to, b) => {
          if (b < 0) this.writeDirents(img, p, from, to);
        });
      }
    } else {
      this.writeTail(img, i, p);
    }
  }

  /** composefs header and EROFS superblock (`img[o]` is image offset 0). */
  private writeHeaders(img: Buffer, o: number, inodesEnd: number, blocks: number): void {
    img.writeUInt32LE(F.CFS_MAGIC, o + F.CFS_HDR.magic);
    img.writeUInt32LE(F.CFS_HEADER_VERSION, o + F.CFS_HDR.version);
    img.writeUInt32LE(this.hasAcl ? F.CFS_FLAG_HAS_ACL : 0, o + F.CFS_HDR.flags);
    img.writeUInt32LE(this.version, o + F.CFS_HDR.composefsVersion);
    const sb = o + F.SUPERBLOCK_OFFSET;
    img.writeUInt32LE(F.EROFS_MAGIC, sb + F.SB.magic);
    img.writeUInt32LE(F.FEATURE_COMPAT_MTIME | F.FEATURE_COMPAT_XATTR_FILTER, sb + F.SB.featureCompat);
    img[sb + F.SB.blkszbits] = F.BLOCK_BITS;
    img.writeUInt16LE(F.ROOT_NID, sb + F.SB.rootNid);
    img.writeBigUInt64LE(BigInt(this.inodes), sb + F.SB.inos);
    img.writeBigUInt64LE(BigInt(this.buildSec), sb + F.SB.buildTime);
    img.writeUInt32LE(this.buildNsec >>> 0, sb + F.SB.buildTimeNsec);
    img.writeUInt32LE(blocks, sb + F.SB.blocks);
    img.writeUInt32LE(0, sb + F.SB.metaBlkaddr);
    img.writeUInt32LE(Math.floor(inodesEnd / F.BLOCK_SIZE), sb + F.SB.xattrBlkaddr);
  }

  /** The compact or extended inode of node i at `at`. */
  private writeInode(img: Buffer, i: number, at: number): void {
    const n = this.n;
    const a = this.attrs(i);
    const kind = n.kind[i]!;
    let iu = 0;
    // Out-of-line map (upstream quirk): the block address was stored in i_u, then its low
    // 16 bits were overwritten by the chunk format.
    if (kind === Kind.Chunked) iu = n.flags[i]! & Flag.MapOutOfLine ? ((n.firstBlock[i]! & 0xffff0000) | n.chunkFormat[i]!) >>> 0 : n.chunkFormat[i]!;
    else if (kind === Kind.Device) iu = n.rdev[i]!;
    else if (n.nblocks[i]) iu = n.firstBlock[i]!;
    const xsize = n.xsize[i]!;
    const icount = xsize ? (xsize - F.XATTR_IBODY_HEADER_SIZE) / 4 + 1 : 0;
    const layout = this.layoutOf(i);
    if (n.flags[i]! & Flag.Extended) {
      img.writeUInt16LE((layout << 1) | 1, at + F.IE.format);
      img.writeUInt16LE(icount, at + F.IE.xattrIcount);
      img.writeUInt16LE(n.mode[i]!, at + F.IE.mode);
      img.writeBigUInt64LE(BigInt(n.size[i]!), at + F.IE.size);
      img.writeUInt32LE(iu, at + F.IE.u);
      img.writeUInt32LE(n.ino[i]!, at + F.IE.ino);
      img.writeUInt32LE(a.uid, at + F.IE.uid);
      img.writeUInt32LE(a.gid, at + F.IE.gid);
      img.writeBigUInt64LE(BigInt(a.mtimeSec), at + F.IE.mtime);
      img.writeUInt32LE(a.mtimeNsec >>> 0, at + F.IE.mtimeNsec);
      img.writeUInt32LE(n.nlink[i]! >>> 0, at + F.IE.nlink);
    } else {
      img.writeUInt16LE(layout << 1, at + F.IC.format);
      img.writeUInt16LE(icount, at + F.IC.xattrIcount);
      img.writeUInt16LE(n.mode[i]!, at + F.IC.mode);
      img.writeUInt16LE(n.nlink[i]!, at + F.IC.nlink);
      img.writeUInt32LE(n.size[i]!, at + F.IC.size);
      img.writeUInt32LE(iu, at + F.IC.u);
      img.writeUInt32LE(n.ino[i]!, at + F.IC.ino);
      img.writeUInt16LE(a.uid, at + F.IC.uid);
      img.writeUInt16LE(a.gid, at + F.IC.gid);
    }
  }

  /** §7: header, shared references first, then the other pairs inline, both in key order. */
  private writeXattrArea(img: Buffer, i: number, p: number, sharedBase: number): void {
    const from = this.xattrOff[i]!;
    const to = this.xattrOff[i + 1]!;
    const nShared = this.n.nShared[i]!;
    let filter = 0;
    for (let k = from; k < to; k++) {
      const id = this.xattrIds[k]!;
      filter |= 1 << (id >= 0 ? this.xt.byId(id).bit : this.ownName(id).bit);
    }
    img.writeUInt32LE(~filter >>> 0, p);
    img[p + 4] = nShared;
    let q = p + F.XATTR_IBODY_HEADER_SIZE;
    let inl = q + 4 * nShared;
    let refs = 0;
    for (let k = from; k < to; k++) {
      const id = this.xattrIds[k]!;
      const x = id >= 0 ? this.xt.byId(id) : undefined;
      if (x && x.shared >= 0 && refs < nShared) {
        img.writeUInt32LE((sharedBase + this.sharedOffsets[x.shared]!) / 4, q);
        q += 4;
        refs++;
      } else if (x) {
        inl += writeXattrEntry(img, inl, x);
      } else {
        inl += this.writeOwnEntry(img, inl, id, i);
      }
    }
  }

  /** An own metacopy (header + digest) or redirect ('/' + payload) entry, composed in place. */
  private writeOwnEntry(img: Buffer, at: number, id: number, i: number): number {
    const name = this.ownName(id);
    const src = this.n.src[i]!;
    img[at] = name.suffix.length;
    img[at + 1] = name.idx;
    img.writeUInt16LE(this.ownValueLength(id, i), at + 2);
    name.suffix.copy(img, at + 4);
    const v = at + 4 + name.suffix.length;
    if (id === OWN_METACOPY) {
      F.METACOPY_HEADER.copy(img, v);
      src.digest!.copy(img, v + F.METACOPY_HEADER.length);
    } else {
      img[v] = 0x2f; // '/'
      src.payload!.copy(img, v + 1);
    }
    return this.entrySize(id, i);
  }

  /** Inline tail of a non-directory at `p`. */
  private writeTail(img: Buffer, i: number, p: number): void {
    const n = this.n;
    const tailLen = n.tailLen[i]!;
    if (!tailLen) return;
    const src = n.src[i]!;
    switch (n.kind[i]) {
      case Kind.Inline:
        src.content!.copy(img, p, src.content!.length - tailLen);
        break;
      case Kind.Symlink:
        src.target!.copy(img, p);
        break;
      case Kind.Chunked:
        // Chunk maps are all 0xFF (no blocks).
        img.fill(0xff, p, p + tailLen);
        break;
      default:
        break;
    }
  }

  /** Node i's data blocks. */
  private writeBlocks(out: ImageOutput, i: number): void {
    const n = this.n;
    const first = n.firstBlock[i]! * F.BLOCK_SIZE;
    const src = n.src[i];
    switch (n.kind[i]) {
      case Kind.Dir:
        // One span per block: a large directory's blocks can outgrow the output window.
        this.direntGroups(i, (from, to, b) => {
          if (b >= 0) this.writeDirents(...out.span(first + b * F.BLOCK_SIZE, F.BLOCK_SIZE), from, to);
        });
        break;
      case Kind.Inline: {
        const c = src!.content!;
        const len = n.nblocks[i]! * F.BLOCK_SIZE;
        const [img, at] = out.span(first, len);
        c.copy(img, at, 0, Math.min(c.length, len));
        break;
      }
      case Kind.Symlink:
        src!.target!.copy(...out.span(first, F.BLOCK_SIZE));
        break;
      case Kind.Chunked: {
        // The out-of-line chunk map (upstream quirk): a whole block of 0xFF.
        const [img, at] = out.span(first, F.BLOCK_SIZE);
        img.fill(0xff, at, at + F.BLOCK_SIZE);
        break;
      }
      default:
        break;
    }
  }
}

/**
 * Set `flag` on every node whose `bytesOf` value equals another node's. Open addressing on
 * an Int32Array of node numbers (+1): no object per node.
 */
function flagDuplicates(n: NodeColumns, bytesOf: (i: number) => Buffer | undefined, flag: number): void {
  let size = 16;
  while (size < 2 * n.count + 2) size *= 2;
  const slots = new Int32Array(size);
  const mask = size - 1;
  for (let i = 0; i < n.count; i++) {
    const b = bytesOf(i);
    if (!b) continue;
    for (let h = xxh32(b, 0) & mask; ; h = (h + 1) & mask) {
      const j = slots[h]!;
      if (j === 0) {
        slots[h] = i + 1;
        break;
      }
      if (bytesOf(j - 1)!.equals(b)) {
        n.flags[i] |= flag;
        n.flags[j - 1] |= flag;
        break;
      }
    }
  }
}

/** §2.2 (a): `trusted.overlay.X` is stored as `trusted.overlay.overlay.X`. */
function escapeKey(key: Buffer): Buffer {
  if (key.length < OVERLAY_PREFIX.length || !key.subarray(0, OVERLAY_PREFIX.length).equals(OVERLAY_PREFIX)) return key;
  return Buffer.concat([OVERLAY_ESCAPED, key.subarray(OVERLAY_PREFIX.length)]);
}

function bitLength(x: number): number {
  if (x <= 0) return 0;
  let n = 0;
  while (x >= 2 ** 32) {
    x = Math.floor(x / 2 ** 32);
    n += 32;
  }
  return n + (32 - Math.clz32(x));
}

function splitPrefix(key: Buffer): [number, Buffer] {
  for (const [idx, prefix] of F.WRITER_XATTR_PREFIXES) {
    if (key.length >= prefix.length && key.subarray(0, prefix.length).equals(prefix)) return [idx, key.subarray(prefix.length)];
  }
  return [0, key];
}

function writeXattrEntry(img: Buffer, at: number, x: XA): number {
  img[at] = x.suffix.length;
  img[at + 1] = x.idx;
  img.writeUInt16LE(x.value.length, at + 2);
  x.suffix.copy(img, at + 4);
  x.value.copy(img, at + 4 + x.suffix.length);
  return x.size;
}

function fileTypeCode(mode: number): number {
  switch (fileTypeOf(mode)) {
    case 'reg': return F.FT_REG_FILE;
    case 'dir': return F.FT_DIR;
    case 'chr': return F.FT_CHRDEV;
    case 'blk': return F.FT_BLKDEV;
    case 'fifo': return F.FT_FIFO;
    case 'sock': return F.FT_SOCK;
    case 'lnk': return F.FT_SYMLINK;
    default: return F.FT_UNKNOWN;
  }
}
