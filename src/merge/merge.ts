/**
 * Layer trees → one merged tree, with OCI layer semantics (image-spec layer.md, "Applying
 * Changesets" and "Whiteouts"), the way `umoci unpack` applies layers:
 *
 * - A layer tree keeps its removals overlayfs-style: a whiteout (char device 0/0, `isWhiteout`)
 *   named NAME removes NAME from the layers below; a directory with
 *   `trusted.overlay.opaque=y` hides everything the layers below had inside it.
 * - A non-directory replaces whatever was there (file replacing a directory included); a
 *   directory replaces a non-directory; a directory over a directory merges, and the upper
 *   directory's metadata (mode, owner, mtime, xattrs) wins.
 * - Directories a layer did not list itself but needed as parents ("implicit", see
 *   `LayerTree.implicit`) keep the metadata of the directory below; if there is none, they are
 *   created (with the metadata the layer gave them) only when something real ends up inside.
 *   A whiteout under a path that is not a directory below is ignored (as umoci does).
 * - Hardlinks are inode identity: the same `Inode` object under two names stays one inode.
 *
 * The result holds no whiteouts and no opaque markers, nlink of every non-directory is the
 * number of names it has in the result, and directories have 2 + subdirectories. Inputs are not
 * modified: every inode of the result is a copy (hardlink groups kept).
 */
import { S_IFDIR, getXattr, isDir, isWhiteout, newInode, removeXattr, type Inode } from '../tree/tree.js';
import { CfsError } from '../errors.js';

/** A merge that cannot be done (a layer tree that is not a tree of directories). */
export class MergeError extends CfsError {
  constructor(code: string, message: string) {
    super(code, message);
  }
}

/** The xattr that marks an opaque directory in a layer tree (overlayfs convention). */
export const OPAQUE_XATTR = Buffer.from('trusted.overlay.opaque');

/** One layer's metadata tree, lowest layer first in a list. */
export interface LayerTree {
  /** Root directory of the layer. */
  root: Inode;
  /** Directories the layer did not list itself (created for members' missing parents). The
   *  layer root belongs here unless the layer had a `./` member. */
  implicit?: ReadonlySet<Inode>;
}

/** True if a layer-tree directory carries the opaque marker. */
export function isOpaque(dir: Inode): boolean {
  const v = getXattr(dir, OPAQUE_XATTR);
  return v !== undefined && v.length === 1 && v[0] === 0x79; // 'y'
}

/** Merge layer trees, lowest first, into a fresh tree (see the file comment). A bare `Inode`
 *  is a layer whose root is explicit and which has no implicit directories. */
export function mergeLayers(layers: (Inode | LayerTree)[]): Inode {
  const m = new Merger();
  for (const l of layers) m.apply(isLayerTree(l) ? l : { root: l });
  return m.finish();
}

function isLayerTree(x: Inode | LayerTree): x is LayerTree {
  return (x as LayerTree).root !== undefined && (x as Inode).mode === undefined;
}

/** Applies layers one at a time onto a tree it owns; `tree` is the merge of the layers so far
 *  (use it as the "lower" view while reading the next layer), `finish()` the final result. */
export class Merger {
  /** The merged tree so far (owned by the merger; do not modify). */
  readonly tree: Inode;
  /** Layer inode → its copy in the result (keeps hardlink groups across layers). */
  private copies = new Map<Inode, Inode>();
  private implicit: ReadonlySet<Inode> = new Set();

  /** Start from an empty root: mode 0755, owner 0:0, mtime 0 — the directory umoci unpacks
   *  into before any layer sets `./`. */
  constructor(root?: Inode) {
    this.tree = root ?? newInode(S_IFDIR | 0o755);
  }

  /** Apply one layer on top of the tree. */
  apply(layer: LayerTree): void {
    if (!isDir(layer.root)) throw new MergeError('MERGE_NOT_DIRECTORY', 'layer root is not a directory');
    this.implicit = layer.implicit ?? new Set();
    const opaque = isOpaque(layer.root);
    if (!this.implicit.has(layer.root)) copyDirMeta(this.tree, layer.root);
    if (opaque) this.tree.entries!.clear();
    this.mergeInto(this.tree, layer.root);
  }

  /** The merged tree with link counts computed. */
  finish(): Inode {
    fixLinkCounts(this.tree);
    return this.tree;
  }

  /** Apply the entries of layer directory `upper` onto result directory `lower`. */
  private mergeInto(lower: Inode, upper: Inode): void {
    const out = lower.entries!;
    for (const [name, u] of upper.entries!) {
      const l = out.get(name);
      if (isWhiteout(u)) {
        if (l) out.delete(name);
        continue;
      }
      if (!isDir(u)) {
        out.set(name, this.copyLeaf(u));
        continue;
      }
      const opaque = isOpaque(u);
      if (this.implicit.has(u)) {
        if (l && isDir(l)) {
          if (opaque) l.entries!.clear();
          this.mergeInto(l, u);
        } else {
          // Nothing (or a non-directory) below: the directory exists only if something real
          // ends up inside; otherwise whatever was below stays (whiteouts under a file are
          // ignored).
          const fresh = this.freshDir(u);
          if (fresh) out.set(name, fresh);
        }
        continue;
      }
      if (l && isDir(l) && !opaque) {
        copyDirMeta(l, u);
        this.mergeInto(l, u);
      } else {
        out.set(name, this.freshDir(u) ?? metaOnlyDir(u));
      }
    }
  }

  /** A copy of layer directory `u` with nothing below it: whiteouts dropped, implicit
   *  subdirectories kept only if they end up non-empty. Undefined if `u` is implicit and
   *  empty. */
  private freshDir(u: Inode): Inode | undefined {
    const d = metaOnlyDir(u);
    for (const [name, c] of u.entries!) {
      if (isWhiteout(c)) continue;
      if (isDir(c)) {
        const sub = this.freshDir(c);
        if (sub) d.entries!.set(name, sub);
      } else d.entries!.set(name, this.copyLeaf(c));
    }
    if (this.implicit.has(u) && d.entries!.size === 0) return undefined;
    return d;
  }

  /** The result's copy of a non-directory inode (one copy per inode: hardlinks stay shared). */
  private copyLeaf(u: Inode): Inode {
    let c = this.copies.get(u);
    if (!c) {
      c = {
        ...u,
        xattrs: u.xattrs.map((x) => ({ key: x.key, value: x.value })),
      };
      delete c.entries;
      this.copies.set(u, c);
      this.copies.set(c, c); // a later layer may link to the result's inode itself
    }
    return c;
  }
}

/** A new directory with `u`'s metadata (minus the opaque marker) and no entries. */
function metaOnlyDir(u: Inode): Inode {
  const d = newInode(u.mode, {
    uid: u.uid, gid: u.gid, mtimeSec: u.mtimeSec, mtimeNsec: u.mtimeNsec,
    xattrs: u.xattrs.map((x) => ({ key: x.key, value: x.value })),
  });
  removeXattr(d, OPAQUE_XATTR);
  return d;
}

/** Upper directory metadata replaces the lower's (image-spec: "the existing path's attributes
 *  MUST be replaced by those of the entry"). */
function copyDirMeta(l: Inode, u: Inode): void {
  l.mode = u.mode;
  l.uid = u.uid;
  l.gid = u.gid;
  l.mtimeSec = u.mtimeSec;
  l.mtimeNsec = u.mtimeNsec;
  l.xattrs = u.xattrs.map((x) => ({ key: x.key, value: x.value }));
  removeXattr(l, OPAQUE_XATTR);
}

/** Set nlink: non-directories = names in the tree; directories = 2 + subdirectories. */
export function fixLinkCounts(root: Inode): void {
  const counts = new Map<Inode, number>();
  const stack: Inode[] = [root];
  while (stack.length) {
    const d = stack.pop()!;
    let subdirs = 0;
    for (const c of d.entries!.values()) {
      if (isDir(c)) {
        subdirs++;
        stack.push(c);
      } else counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    d.nlink = 2 + subdirs;
  }
  for (const [inode, n] of counts) inode.nlink = n;
}
