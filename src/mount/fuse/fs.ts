/**
 * A composefs image as a read-only FUSE filesystem: metadata straight from the EROFS image
 * (lazy reader: a lookup reads one directory, a stat one inode), file data from the store's
 * objects through verified reads, inline files and symlinks from the image, xattrs as the
 * kernel overlay mount shows them (composefs' overlay xattrs mapped back, §7.6).
 *
 * Node ids: the root is 1 (FUSE's fixed root id); any other inode is its EROFS nid + 2, so
 * hardlinks (one nid) are one node, and no table of handed-out ids is needed.
 */
import { constants } from 'node:os';
import { ErofsImage } from '../../erofs/reader.js';
import type { InodeStat } from '../../erofs/reader.js';
import { FT_BLKDEV, FT_CHRDEV, FT_DIR, FT_FIFO, FT_REG_FILE, FT_SOCK, FT_SYMLINK, LAYOUT_CHUNK_BASED } from '../../erofs/format.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from '../../tree/tree.js';
import { FUSE_ROOT_ID } from './protocol.js';
import type { Attr, StatFs } from './protocol.js';
import { FuseErrno } from './server.js';
import type { FuseDirItem, FuseEntry, FuseFs } from './server.js';
import { IntegrityError, MissingObjectError } from './verified.js';
import type { VerifiedFile, VerifiedObjects } from './verified.js';

const E = constants.errno;

/** EROFS file type → DT_* (d_type). */
const DT_OF_FT: Record<number, number> = {
  [FT_REG_FILE]: 8,
  [FT_DIR]: 4,
  [FT_CHRDEV]: 2,
  [FT_BLKDEV]: 6,
  [FT_FIFO]: 1,
  [FT_SOCK]: 12,
  [FT_SYMLINK]: 10,
};

const TRUSTED = Buffer.from('trusted.');
/** Files kept open for reads by node (zero-message opens). */
const NODE_CACHE = 256;

type Handle = { kind: 'object'; file: VerifiedFile } | { kind: 'inline'; nid: number; size: number };

/** Options of `ImageFs`. */
export interface ImageFsOptions {
  /** Reports integrity failures and missing objects (one line each). */
  log?: (line: string) => void;
}

/** The FUSE filesystem of one image (see the file comment). */
export class ImageFs implements FuseFs {
  private readonly handles = new Map<number, Handle>();
  /** Files read by node: the handle once open, the promise while it opens (fetch, hash). */
  private readonly byNode = new Map<number, Handle | Promise<Handle>>();
  private nextFh = 1;
  private anyXattrs: boolean | undefined;
  private readonly log: (line: string) => void;

  constructor(
    readonly image: ErofsImage,
    readonly objects: VerifiedObjects,
    opts: ImageFsOptions = {},
  ) {
    this.log = opts.log ?? ((l) => process.stderr.write(l + '\n'));
  }

  /** EROFS nid of a node id. */
  nid(node: number): number {
    if (node === FUSE_ROOT_ID) return this.image.rootNid;
    if (node < 2) throw new FuseErrno(E.ESTALE);
    return node - 2;
  }

  /** Node id of an EROFS nid. */
  node(nid: number): number {
    return nid === this.image.rootNid ? FUSE_ROOT_ID : nid + 2;
  }

  private stat(node: number): InodeStat {
    return this.image.stat(this.nid(node));
  }

  private attrOf(st: InodeStat, node: number): Attr {
    return {
      ino: node,
      size: st.size,
      blocks: Math.ceil(st.size / 4096) * 8,
      mtimeSec: st.mtimeSec,
      mtimeNsec: st.mtimeNsec,
      mode: st.mode,
      nlink: st.nlink,
      uid: st.uid,
      gid: st.gid,
      rdev: st.rdev,
    };
  }

  lookup(parent: number, name: Buffer): FuseEntry | undefined {
    const pnid = this.nid(parent);
    if ((this.image.inode(pnid).mode & S_IFMT) !== S_IFDIR) throw new FuseErrno(E.ENOTDIR);
    if (name.length > 255) throw new FuseErrno(E.ENAMETOOLONG);
    const nid = this.image.lookupIn(pnid, name);
    if (nid === undefined) return undefined;
    const node = this.node(nid);
    return { nodeid: node, attr: this.attrOf(this.image.stat(nid), node) };
  }

  getattr(node: number): Attr {
    return this.attrOf(this.stat(node), node);
  }

  readlink(node: number): Buffer {
    const nid = this.nid(node);
    if ((this.image.inode(nid).mode & S_IFMT) !== S_IFLNK) throw new FuseErrno(E.EINVAL);
    return this.image.readlink(nid);
  }

  async open(node: number): Promise<number> {
    const h = await this.openHandle(this.nid(node));
    const fh = this.nextFh++;
    this.handles.set(fh, h);
    return fh;
  }

  private async openHandle(nid: number): Promise<Handle> {
    const st = this.image.stat(nid);
    if ((st.mode & S_IFMT) !== S_IFREG) throw new FuseErrno((st.mode & S_IFMT) === S_IFDIR ? E.EISDIR : E.EACCES);
    if (st.digest) {
      try {
        return { kind: 'object', file: await this.objects.open(st.digest, st.size) };
      } catch (e) {
        if (e instanceof IntegrityError || e instanceof MissingObjectError) {
          this.log(`cfsdist fuse: ${e.message}`);
          throw new FuseErrno(E.EIO);
        }
        throw e;
      }
    }
    if (st.raw.layout === LAYOUT_CHUNK_BASED && st.size > 0) {
      // Content lives outside the image but no digest names it: nothing to verify it against.
      this.log(`cfsdist fuse: ${this.image.name}: nid ${nid} has external content but no fs-verity digest; refusing to serve it unverified`);
      throw new FuseErrno(E.EIO);
    }
    return { kind: 'inline', nid, size: st.size };
  }

  /** Read by node from a file already open (see readNode), synchronously; undefined if it is
   * not open yet. */
  readNodeNow(node: number, offset: number, size: number): Buffer | undefined {
    const h = this.byNode.get(node);
    if (!h || h instanceof Promise) return undefined;
    this.byNode.delete(node);
    this.byNode.set(node, h);
    return this.readHandle(h, offset, size);
  }

  /** Read by node (zero-message opens): files stay open in a small LRU between reads. */
  async readNode(node: number, offset: number, size: number): Promise<Buffer> {
    let h = this.byNode.get(node);
    if (h) {
      this.byNode.delete(node);
      this.byNode.set(node, h);
    } else {
      const p = this.openHandle(this.nid(node));
      h = p;
      this.byNode.set(node, p);
      p.then(
        (opened) => {
          if (this.byNode.get(node) === p) this.byNode.set(node, opened);
          else closeHandle(opened); // evicted while it opened
        },
        // A failed open is not kept: the next read tries again (a fetch may succeed then).
        () => this.byNode.get(node) === p && this.byNode.delete(node),
      );
      if (this.byNode.size > NODE_CACHE) {
        const [old, oh] = this.byNode.entries().next().value as [number, Handle | Promise<Handle>];
        this.byNode.delete(old);
        if (!(oh instanceof Promise)) closeHandle(oh); // a promise closes its handle when it settles (above)
      }
    }
    return this.readHandle(await h, offset, size);
  }

  read(fh: number, offset: number, size: number): Buffer {
    const h = this.handles.get(fh);
    if (!h) throw new FuseErrno(E.EBADF);
    return this.readHandle(h, offset, size);
  }

  private readHandle(h: Handle, offset: number, size: number): Buffer {
    if (h.kind === 'inline') return offset >= h.size ? Buffer.alloc(0) : this.image.readData(h.nid, offset, size);
    try {
      return h.file.read(offset, size);
    } catch (e) {
      if (e instanceof IntegrityError) {
        this.log(`cfsdist fuse: ${e.message}`);
        throw new FuseErrno(E.EIO);
      }
      throw e;
    }
  }

  release(fh: number): void {
    const h = this.handles.get(fh);
    this.handles.delete(fh);
    if (h?.kind === 'object') h.file.close();
  }

  readdir(node: number): FuseDirItem[] {
    const nid = this.nid(node);
    if ((this.image.inode(nid).mode & S_IFMT) !== S_IFDIR) throw new FuseErrno(E.ENOTDIR);
    const parent = this.image.lookupIn(nid, '..') ?? nid;
    const items: FuseDirItem[] = [
      { name: Buffer.from('.'), nodeid: node, type: 4 },
      { name: Buffer.from('..'), nodeid: this.node(parent), type: 4 },
    ];
    for (const e of this.image.readdir(nid)) {
      let type = DT_OF_FT[e.type] ?? 0;
      // A regular file that stands for an overlay whiteout shows as a character device.
      if (e.type === FT_REG_FILE && this.image.inode(e.nid).size === 0 && this.image.stat(e.nid).whiteout) type = 2;
      items.push({ name: e.name, nodeid: this.node(e.nid), type });
    }
    return items;
  }

  getxattr(node: number, name: Buffer, uid: number): Buffer | undefined {
    if (uid !== 0 && startsWith(name, TRUSTED)) return undefined;
    for (const x of this.stat(node).xattrs) if (x.key.equals(name)) return x.value;
    return undefined;
  }

  listxattr(node: number, uid: number): Buffer[] {
    const keys = this.stat(node).xattrs.map((x) => x.key);
    return uid === 0 ? keys : keys.filter((k) => !startsWith(k, TRUSTED));
  }

  /** Whether any inode has an xattr the overlay mount would show (overlay-private ones are
   * mapped away): a walk of the tree that stops at the first, run once per mount. */
  hasXattrs(): boolean {
    if (this.anyXattrs !== undefined) return this.anyXattrs;
    const seen = new Set<number>();
    const dirs = [this.image.rootNid];
    seen.add(this.image.rootNid);
    let found = this.image.stat(this.image.rootNid).xattrs.length > 0;
    while (!found && dirs.length > 0) {
      for (const e of this.image.readdir(dirs.pop()!)) {
        if (seen.has(e.nid)) continue;
        seen.add(e.nid);
        if (this.image.stat(e.nid).xattrs.length > 0) {
          found = true;
          break;
        }
        if (e.type === FT_DIR) dirs.push(e.nid);
      }
    }
    return (this.anyXattrs = found);
  }

  statfs(): StatFs {
    return { blocks: Math.ceil(this.image.info.size / 4096), files: this.image.info.inos };
  }

  /** Open handles (tests). */
  get openHandles(): number {
    return this.handles.size;
  }

  /** Close every file kept open for reads by node. */
  closeAll(): void {
    for (const h of this.byNode.values()) if (!(h instanceof Promise)) closeHandle(h);
    this.byNode.clear(); // handles still opening close when they settle (readNode)
  }
}

function closeHandle(h: Handle): void {
  if (h.kind === 'object') h.file.close();
}

function startsWith(b: Buffer, prefix: Buffer): boolean {
  return b.length >= prefix.length && b.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}
