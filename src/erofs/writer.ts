/**
 * Tree → composefs EROFS image, byte-identical to C mkcomposefs 1.0.8 (spec §2–§10).
 *
 * Pipeline: choose the format version; copy the tree into writer nodes while applying the
 * composefs rewrite (overlay xattr escaping, metacopy/redirect, whiteouts, root opaque, the
 * 00..ff whiteout stubs); number inodes breadth-first; decide shared xattrs; place inodes
 * (with the tail-within-one-block padding rules); assign data blocks; serialise.
 * The input tree is never modified.
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

interface DirEntry {
  key: string; // latin1 name: its length is the name's byte length
  node: WNode;
}

const enum Kind {
  Dir,
  Inline,
  Empty,
  Chunked,
  Symlink,
  Device,
  Plain,
}

interface WNode {
  src: Inode | undefined; // undefined for stubs
  mode: number;
  size: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  xattrs: XA[];
  kind: Kind;
  children?: DirEntry[];
  ino: number;
  // layout
  extended: boolean;
  isize: number;
  xsize: number;
  /** Number of shared references (the first shared pairs, in key order, up to 128). */
  nShared: number;
  parent: WNode | undefined;
  tail: Buffer | undefined;
  tailLen: number;
  blockData: Buffer | undefined; // full blocks (length = nblocks*4096), non-directories
  dirGroups: number[] | undefined; // directories: index of the first entry of each dirent block (+ end)
  dirTail: boolean; // directories: the last group is the inline tail
  nblocks: number;
  chunkFormat: number;
  mapOutOfLine: boolean;
  layout: number;
  nid: number;
  firstBlock: number;
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
/** Shared empty xattr list; `setX` replaces it before adding (copy on write). */
const NO_XATTRS: XA[] = [];
/** Chunk maps are all 0xFF (no blocks): tails share this one buffer. */
const NULL_MAP = Buffer.alloc(4 * F.CHUNK_MAX_COUNT, 0xff);

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

  private name(key: Buffer): NameInfo {
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

  all(): XA[] {
    return this.list;
  }
}

function cmpBuf(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b);
}

/** Build the composefs image of `root` and return its bytes. */
export function writeImage(root: Inode, opts: WriteOptions = {}): Buffer {
  const b = new ImageBuilder(root, opts);
  return b.build();
}

class ImageBuilder {
  private readonly root: Inode;
  private readonly minVersion: number;
  private readonly maxVersion: number;
  private version = 0;
  private nodes = new Map<Inode, WNode>();
  private order: WNode[] = []; // BFS inode order
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
  }

  build(): Buffer {
    this.chooseVersion();
    const rootNode = this.rewrite();
    this.number(rootNode);
    this.finishNodes();
    this.chooseShared();
    const inodesEnd = this.place();
    return this.serialise(inodesEnd);
  }

  /** §2.1: min version, raised to 1 when the input has a whiteout and max allows it. */
  private chooseVersion(): void {
    this.version = this.minVersion;
    if (this.version < 1 && this.maxVersion >= 1) {
      const seen = new Set<Inode>();
      const stack: Inode[] = [this.root];
      while (stack.length) {
        const n = stack.pop()!;
        if (seen.has(n)) continue;
        seen.add(n);
        if ((n.mode & S_IFMT) === S_IFCHR && n.rdev === 0) {
          this.version = 1;
          return;
        }
        if (n.entries) for (const c of n.entries.values()) stack.push(c);
      }
    }
  }

  private newNode(src: Inode | undefined, mode: number): WNode {
    return {
      src,
      mode,
      size: 0,
      nlink: 1,
      uid: 0,
      gid: 0,
      rdev: 0,
      mtimeSec: 0,
      mtimeNsec: 0,
      xattrs: NO_XATTRS,
      kind: Kind.Plain,
      ino: -1,
      extended: false,
      isize: 0,
      xsize: 0,
      nShared: 0,
      parent: undefined,
      tail: undefined,
      tailLen: 0,
      blockData: undefined,
      dirGroups: undefined,
      dirTail: false,
      nblocks: 0,
      chunkFormat: 0,
      mapOutOfLine: false,
      layout: 0,
      nid: 0,
      firstBlock: 0,
    };
  }

  /** §2.2–§2.4: copy the tree into writer nodes, applying the composefs rewrite. */
  private rewrite(): WNode {
    const rootNode = this.convert(this.root, undefined, '/');
    // Depth-first, parents before children; each inode once.
    const stack: [Inode, WNode, string][] = [[this.root, rootNode, '']];
    while (stack.length) {
      const [dir, dnode, path] = stack.pop()!;
      const kids: DirEntry[] = [];
      for (const [key, child] of dir.entries!) {
        if (key.length === 0 || key.length > 255 || key.includes('/') || key.includes('\0') || key === '.' || key === '..') {
          throw new ErofsWriteError('EROFS_NAME', `invalid name ${JSON.stringify(key)} in ${path || '/'}`);
        }
        let cnode = this.nodes.get(child);
        const cpath = path + '/' + key;
        if (!cnode) {
          cnode = this.convert(child, dnode, cpath);
          if (child.entries) stack.push([child, cnode, cpath]);
        } else if (child.entries) {
          throw new ErofsWriteError('EROFS_HARDLINK', `directory ${cpath} is reachable twice (directories can't be hardlinked)`);
        }
        kids.push({ key, node: cnode });
      }
      kids.push({ key: '.', node: dnode });
      kids.push({ key: '..', node: dnode.parent ?? rootNode });
      dnode.children = kids;
    }
    // §2.3: the root is opaque.
    this.setX(rootNode, K_OPAQUE, ENC('y'));
    // §2.4: whiteout stubs 00..ff in the root where the name is free.
    const selinux = rootNode.src!.xattrs.find((x) => x.key.equals(K_SELINUX));
    for (let i = 0; i < 256; i++) {
      const key = i.toString(16).padStart(2, '0');
      if (this.root.entries!.has(key)) continue;
      const stub = this.newNode(undefined, S_IFCHR | 0o644);
      stub.uid = rootNode.uid;
      stub.gid = rootNode.gid;
      stub.mtimeSec = rootNode.mtimeSec;
      stub.mtimeNsec = rootNode.mtimeNsec;
      stub.kind = Kind.Device;
      if (selinux) stub.xattrs = [this.xt.get(K_SELINUX, selinux.value)];
      rootNode.children!.push({ key, node: stub });
    }
    for (const n of [rootNode, ...this.nodes.values()]) {
      if (n.children) n.children.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    }
    return rootNode;
  }

  private xt = new XattrTable();

  /** Set key=value on a node, replacing an existing value of the same key. */
  private setX(n: WNode, key: Buffer, value: Buffer): void {
    const x = this.xt.get(key, value);
    const list = n.xattrs === NO_XATTRS ? (n.xattrs = []) : n.xattrs;
    for (let i = 0; i < list.length; i++) {
      if (list[i]!.key.equals(key)) {
        list[i] = x;
        return;
      }
    }
    list.push(x);
  }

  /** Copy one inode, with the per-entry rewrite of §2.2 (a)–(c). */
  private convert(src: Inode, parent: WNode | undefined, path: string): WNode {
    const type = src.mode & S_IFMT;
    if (!fileTypeOf(src.mode)) throw new ErofsWriteError('EROFS_MODE', `invalid mode ${src.mode.toString(8)} at ${path}`);
    const n = this.newNode(src, src.mode);
    this.nodes.set(src, n);
    n.parent = parent;
    n.nlink = src.nlink;
    n.uid = src.uid;
    n.gid = src.gid;
    n.mtimeSec = src.mtimeSec;
    n.mtimeNsec = src.mtimeNsec;
    // (a) escape overlay xattrs
    if (src.xattrs.length) {
      // Exact-size list (keys are unique in a Tree); later additions go through setX.
      n.xattrs = src.xattrs.map((x) => {
        const key = x.key.subarray(0, OVERLAY_PREFIX.length).equals(OVERLAY_PREFIX)
          ? Buffer.concat([OVERLAY_ESCAPED, x.key.subarray(OVERLAY_PREFIX.length)])
          : x.key;
        return this.xt.get(key, x.value);
      });
    }
    switch (type) {
      case S_IFDIR:
        n.kind = Kind.Dir;
        break;
      case S_IFREG: {
        const size = src.size;
        if (!Number.isInteger(size) || size < 0 || size > 2 ** 53) throw new ErofsWriteError('EROFS_SIZE', `invalid size ${size} at ${path}`);
        n.size = size;
        if (size === 0) n.kind = Kind.Empty;
        else if (src.content) {
          if (src.content.length !== size) throw new ErofsWriteError('EROFS_SIZE', `inline content of ${src.content.length} bytes but size ${size} at ${path}`);
          n.kind = Kind.Inline;
        } else {
          n.kind = Kind.Chunked;
          // (b) metacopy and redirect
          if (src.digest) {
            if (src.digest.length !== 32) throw new ErofsWriteError('EROFS_DIGEST', `digest of ${src.digest.length} bytes at ${path}`);
            this.setX(n, K_METACOPY, Buffer.concat([F.METACOPY_HEADER, src.digest]));
          } else {
            this.setX(n, K_METACOPY, EMPTY);
          }
          if (src.payload && src.payload.length > 0) this.setX(n, K_REDIRECT, Buffer.concat([ENC('/'), src.payload]));
        }
        break;
      }
      case S_IFLNK: {
        const t = src.target;
        if (!t || t.length === 0 || t.length >= 4096) throw new ErofsWriteError('EROFS_SYMLINK', `invalid symlink target at ${path}`);
        n.kind = Kind.Symlink;
        n.size = t.length;
        break;
      }
      case S_IFCHR:
        if (src.rdev === 0) {
          // (c) whiteout → empty regular file with escaped whiteout xattrs; mark the parent
          n.mode = S_IFREG | (src.mode & 0o7777);
          n.kind = Kind.Empty;
          this.setX(n, K_ESC_WHITEOUT, EMPTY);
          this.setX(n, K_USER_WHITEOUT, EMPTY);
          if (parent) {
            this.setX(parent, K_ESC_WHITEOUTS, EMPTY);
            this.setX(parent, K_USER_WHITEOUTS, EMPTY);
            if (this.version >= 1) {
              this.setX(parent, K_ESC_OPAQUE, ENC('x'));
              this.setX(parent, K_USER_OPAQUE, ENC('x'));
            }
          }
        } else {
          n.kind = Kind.Device;
          n.rdev = src.rdev >>> 0;
        }
        break;
      default:
        // block devices keep rdev in i_u; fifos and sockets have no data
        if (fileTypeOf(src.mode) === 'blk') {
          n.kind = Kind.Device;
          n.rdev = src.rdev >>> 0;
        }
    }
    return n;
  }

  /** §2.5: breadth-first inode numbering, primary entries only. */
  private number(rootNode: WNode): void {
    // Inodes with at least one entry not marked as a secondary hardlink.
    const hasPrimary = new Set<WNode>();
    for (const src of this.nodes.keys()) {
      if (!src.entries) continue;
      for (const [key, child] of src.entries) {
        if (!src.hardlinks?.has(key)) hasPrimary.add(this.nodes.get(child)!);
      }
    }
    rootNode.ino = 0;
    this.order.push(rootNode);
    for (let qi = 0; qi < this.order.length; qi++) {
      const dir = this.order[qi]!;
      if (!dir.children) continue;
      const marks = dir.src?.hardlinks;
      for (const e of dir.children) {
        const c = e.node;
        if (c.ino >= 0 || e.key === '.' || e.key === '..') continue;
        if (marks?.has(e.key) && c.src && hasPrimary.has(c)) continue;
        c.ino = this.order.length;
        this.order.push(c);
      }
    }
  }

  /** §2.6–§2.7: directory nlink, sorted xattrs, build time, ACL flag, per-type data. */
  private finishNodes(): void {
    let minSec = Infinity;
    let minNsec = 0;
    for (const n of this.order) {
      if (n.mtimeSec < minSec || (n.mtimeSec === minSec && n.mtimeNsec < minNsec)) {
        minSec = n.mtimeSec;
        minNsec = n.mtimeNsec;
      }
      n.xattrs.sort((a, b) => cmpBuf(a.key, b.key));
      for (const x of n.xattrs) if (x.key.equals(K_ACL_ACCESS) || x.key.equals(K_ACL_DEFAULT)) this.hasAcl = true;
      if (n.kind === Kind.Dir) {
        let subdirs = 0;
        for (const e of n.children!) if (e.key !== '.' && e.key !== '..' && e.node.kind === Kind.Dir) subdirs++;
        n.nlink = 2 + subdirs;
        this.dirData(n);
      }
    }
    this.buildSec = minSec;
    this.buildNsec = minNsec;
  }

  /** §8: pack dirents into blocks; a final group of at most 2048 bytes becomes the tail. */
  private dirData(n: WNode): void {
    const kids = n.children!;
    const starts: number[] = [0];
    let used = 0;
    for (let i = 0; i < kids.length; i++) {
      const need = F.DIRENT_SIZE + kids[i]!.key.length;
      if (used + need > F.BLOCK_SIZE) {
        starts.push(i);
        used = 0;
      }
      used += need;
    }
    starts.push(kids.length);
    const groups = starts.length - 1;
    n.dirGroups = starts;
    n.dirTail = used <= F.BLOCK_SIZE / 2;
    n.nblocks = n.dirTail ? groups - 1 : groups;
    const tailLen = n.dirTail ? used : 0;
    n.tailLen = tailLen;
    n.size = n.nblocks * F.BLOCK_SIZE + tailLen;
  }

  /** Write one dirent block (entries [from, to)) at `off`. */
  private writeDirents(img: Buffer, kids: DirEntry[], from: number, to: number, off: number): void {
    let nameoff = F.DIRENT_SIZE * (to - from);
    for (let i = from; i < to; i++) {
      const e = kids[i]!;
      const d = off + (i - from) * F.DIRENT_SIZE;
      img.writeBigUInt64LE(BigInt(e.node.nid), d + F.DIRENT.nid);
      img.writeUInt16LE(nameoff, d + F.DIRENT.nameoff);
      img[d + F.DIRENT.fileType] = fileTypeCode(e.node.mode);
      img.write(e.key, off + nameoff, 'latin1');
      nameoff += e.key.length;
    }
  }

  /** §7.3: pairs used by more than one inode are shared; table sorted descending. */
  private chooseShared(): void {
    for (const n of this.order) for (const x of n.xattrs) x.count++;
    const shared: XA[] = [];
    for (const x of this.xt.all()) if (x.count > 1) shared.push(x);
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

  /** §6: inode sizes, tails and positions; returns inodes_end. */
  private place(): number {
    let pos = F.INODE_AREA_START;
    for (const n of this.order) {
      // xattr area
      if (n.xattrs.length) {
        let s = F.XATTR_IBODY_HEADER_SIZE;
        let refs = 0;
        for (const x of n.xattrs) {
          if (x.shared >= 0 && refs < F.XATTR_MAX_SHARED_REFS) {
            refs++;
            s += 4;
          } else {
            s += x.size;
          }
        }
        n.nShared = refs;
        n.xsize = F.roundUp(s, 4);
      }
      // data: tail and blocks per type
      this.typeData(n);
      n.extended = !(
        n.mtimeSec === this.buildSec &&
        n.mtimeNsec === this.buildNsec &&
        n.nlink <= 0xffff &&
        n.uid <= 0xffff &&
        n.gid <= 0xffff &&
        n.size <= 0xffffffff
      );
      n.isize = n.extended ? F.INODE_EXTENDED_SIZE : F.INODE_COMPACT_SIZE;
      pos = F.roundUp(pos, F.INODE_SLOT);
      const tailLen = n.tailLen;
      if (n.kind === Kind.Symlink) {
        const total = n.isize + n.xsize + tailLen;
        if (total > F.BLOCK_SIZE) {
          const block = Buffer.alloc(F.BLOCK_SIZE);
          n.tail!.copy(block);
          n.blockData = block;
          n.nblocks = 1;
          n.tail = undefined;
          n.tailLen = 0;
        }
        if (Math.floor(pos / F.BLOCK_SIZE) !== Math.floor((pos + total - 1) / F.BLOCK_SIZE)) pos = F.roundUp(pos, F.BLOCK_SIZE);
      } else if (tailLen > 0) {
        const room = F.BLOCK_SIZE - ((pos + n.isize + n.xsize) % F.BLOCK_SIZE);
        if (room < tailLen) {
          const pad = F.roundUp(room, F.INODE_SLOT);
          if (pad - room + tailLen <= F.BLOCK_SIZE) {
            pos += pad;
          } else {
            // Only a huge chunk map gets here: it moves to a data block (upstream quirk, §6.3).
            const block = Buffer.alloc(F.BLOCK_SIZE, 0xff);
            n.blockData = block;
            n.nblocks = 1;
            n.tail = undefined;
            n.tailLen = 0;
            n.mapOutOfLine = true;
            pos = F.roundUp(pos, F.BLOCK_SIZE);
          }
        }
      }
      n.layout = this.layoutOf(n);
      n.nid = pos / F.INODE_SLOT;
      pos += n.isize + n.xsize + n.tailLen;
    }
    return F.roundUp(pos, F.INODE_SLOT);
  }

  /** §6.2: tail/blocks for non-directory types (directories were done in dirData). */
  private typeData(n: WNode): void {
    switch (n.kind) {
      case Kind.Inline: {
        const c = n.src!.content!;
        let blocks = Math.floor(c.length / F.BLOCK_SIZE);
        let tail = c.length % F.BLOCK_SIZE;
        if (tail > F.BLOCK_SIZE / 2) {
          blocks += 1;
          tail = 0;
        }
        if (blocks) {
          const data = Buffer.alloc(blocks * F.BLOCK_SIZE);
          c.copy(data, 0, 0, Math.min(c.length, blocks * F.BLOCK_SIZE));
          n.blockData = data;
          n.nblocks = blocks;
        }
        if (tail) {
          n.tail = c.subarray(c.length - tail);
          n.tailLen = tail;
        }
        break;
      }
      case Kind.Symlink:
        n.tail = n.src!.target!;
        n.tailLen = n.tail.length;
        break;
      case Kind.Chunked: {
        const size = n.size;
        let bits = Math.max(F.BLOCK_BITS, bitLength(size - 1));
        if (bits > F.CHUNK_MAX_BITS) bits = F.CHUNK_MAX_BITS;
        const count = Math.ceil(size / 2 ** bits);
        if (count > F.CHUNK_MAX_COUNT) {
          throw new ErofsWriteError('EROFS_TOO_LARGE', `cannot write file: File too large (${size} bytes needs ${count} chunks, limit ${F.CHUNK_MAX_COUNT})`);
        }
        n.chunkFormat = bits - F.BLOCK_BITS;
        n.tail = NULL_MAP.subarray(0, 4 * count);
        n.tailLen = n.tail.length;
        break;
      }
      default:
        break;
    }
  }

  private layoutOf(n: WNode): number {
    if (n.kind === Kind.Chunked) return F.LAYOUT_CHUNK_BASED;
    if (n.tailLen > 0) return F.LAYOUT_FLAT_INLINE;
    return F.LAYOUT_FLAT_PLAIN;
  }

  /** §3–§8: assign data blocks and write everything. */
  private serialise(inodesEnd: number): Buffer {
    const dataStart = F.roundUp(inodesEnd + this.sharedBytes, F.BLOCK_SIZE);
    let block = dataStart / F.BLOCK_SIZE;
    for (const n of this.order) {
      if (n.nblocks) {
        n.firstBlock = block;
        block += n.nblocks;
      }
    }
    const total = block * F.BLOCK_SIZE;
    const img = Buffer.alloc(total);

    // composefs header
    img.writeUInt32LE(F.CFS_MAGIC, F.CFS_HDR.magic);
    img.writeUInt32LE(F.CFS_HEADER_VERSION, F.CFS_HDR.version);
    img.writeUInt32LE(this.hasAcl ? F.CFS_FLAG_HAS_ACL : 0, F.CFS_HDR.flags);
    img.writeUInt32LE(this.version, F.CFS_HDR.composefsVersion);

    // superblock
    const sb = F.SUPERBLOCK_OFFSET;
    img.writeUInt32LE(F.EROFS_MAGIC, sb + F.SB.magic);
    img.writeUInt32LE(F.FEATURE_COMPAT_MTIME | F.FEATURE_COMPAT_XATTR_FILTER, sb + F.SB.featureCompat);
    img[sb + F.SB.blkszbits] = F.BLOCK_BITS;
    img.writeUInt16LE(F.ROOT_NID, sb + F.SB.rootNid);
    img.writeBigUInt64LE(BigInt(this.order.length), sb + F.SB.inos);
    img.writeBigUInt64LE(BigInt(this.buildSec), sb + F.SB.buildTime);
    img.writeUInt32LE(this.buildNsec >>> 0, sb + F.SB.buildTimeNsec);
    img.writeUInt32LE(block, sb + F.SB.blocks);
    img.writeUInt32LE(0, sb + F.SB.metaBlkaddr);
    img.writeUInt32LE(Math.floor(inodesEnd / F.BLOCK_SIZE), sb + F.SB.xattrBlkaddr);

    const sharedBase = inodesEnd % F.BLOCK_SIZE;
    for (const n of this.order) {
      const at = n.nid * F.INODE_SLOT;
      let iu = 0;
      // Out-of-line map (upstream quirk): the block address was stored in i_u, then its low
      // 16 bits were overwritten by the chunk format.
      if (n.kind === Kind.Chunked) iu = n.mapOutOfLine ? ((n.firstBlock & 0xffff0000) | n.chunkFormat) >>> 0 : n.chunkFormat;
      else if (n.kind === Kind.Device) iu = n.rdev;
      else if (n.nblocks) iu = n.firstBlock;
      const icount = n.xsize ? (n.xsize - F.XATTR_IBODY_HEADER_SIZE) / 4 + 1 : 0;
      if (n.extended) {
        img.writeUInt16LE((n.layout << 1) | 1, at + F.IE.format);
        img.writeUInt16LE(icount, at + F.IE.xattrIcount);
        img.writeUInt16LE(n.mode, at + F.IE.mode);
        img.writeBigUInt64LE(BigInt(n.size), at + F.IE.size);
        img.writeUInt32LE(iu, at + F.IE.u);
        img.writeUInt32LE(n.ino, at + F.IE.ino);
        img.writeUInt32LE(n.uid, at + F.IE.uid);
        img.writeUInt32LE(n.gid, at + F.IE.gid);
        img.writeBigUInt64LE(BigInt(n.mtimeSec), at + F.IE.mtime);
        img.writeUInt32LE(n.mtimeNsec >>> 0, at + F.IE.mtimeNsec);
        img.writeUInt32LE(n.nlink >>> 0, at + F.IE.nlink);
      } else {
        img.writeUInt16LE(n.layout << 1, at + F.IC.format);
        img.writeUInt16LE(icount, at + F.IC.xattrIcount);
        img.writeUInt16LE(n.mode, at + F.IC.mode);
        img.writeUInt16LE(n.nlink, at + F.IC.nlink);
        img.writeUInt32LE(n.size, at + F.IC.size);
        img.writeUInt32LE(iu, at + F.IC.u);
        img.writeUInt32LE(n.ino, at + F.IC.ino);
        img.writeUInt16LE(n.uid, at + F.IC.uid);
        img.writeUInt16LE(n.gid, at + F.IC.gid);
      }
      let p = at + n.isize;
      if (n.xsize) {
        let filter = 0;
        for (const x of n.xattrs) filter |= 1 << x.bit;
        img.writeUInt32LE(~filter >>> 0, p);
        img[p + 4] = n.nShared;
        // shared references first, then the other pairs inline, both in key order
        let q = p + F.XATTR_IBODY_HEADER_SIZE;
        let inl = q + 4 * n.nShared;
        let refs = 0;
        for (const x of n.xattrs) {
          if (x.shared >= 0 && refs < n.nShared) {
            img.writeUInt32LE((sharedBase + this.sharedOffsets[x.shared]!) / 4, q);
            q += 4;
            refs++;
          } else {
            inl += writeXattrEntry(img, inl, x);
          }
        }
        p += n.xsize;
      }
      if (n.dirGroups) {
        const g = n.dirGroups;
        for (let i = 0; i < n.nblocks; i++) this.writeDirents(img, n.children!, g[i]!, g[i + 1]!, (n.firstBlock + i) * F.BLOCK_SIZE);
        if (n.dirTail) this.writeDirents(img, n.children!, g[g.length - 2]!, g[g.length - 1]!, p);
      } else {
        if (n.tail) n.tail.copy(img, p);
        if (n.blockData) n.blockData.copy(img, n.firstBlock * F.BLOCK_SIZE);
      }
    }
    // shared xattr area
    let q = inodesEnd;
    for (const x of this.shared) q += writeXattrEntry(img, q, x);
    return img;
  }
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
