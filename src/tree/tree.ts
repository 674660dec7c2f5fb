/**
 * The Tree model: every input format is read into it, every output is written from it.
 *
 * - Names, xattr keys and values, symlink targets and payloads are bytes (`Buffer`).
 * - A hardlink is one `Inode` object reachable under several names.
 * - Directory entries live in a `Map` keyed by the name's bytes as a latin1 string (lossless,
 *   and JS string order on latin1 strings is byte order). Use `sortedEntries` for byte order.
 */
import { TreeError } from '../errors.js';

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

/** File types as short names. */
export type FileType = 'reg' | 'dir' | 'lnk' | 'chr' | 'blk' | 'fifo' | 'sock';

/** One extended attribute; key and value are raw bytes. */
export interface Xattr {
  key: Buffer;
  value: Buffer;
}

/** An inode. Fields that do not apply to the inode's type are left undefined. */
export interface Inode {
  /** Full st_mode: type bits and 12 permission bits. */
  mode: number;
  /** Link count as given by the source (directories: recomputed by writers). */
  nlink: number;
  uid: number;
  gid: number;
  /** Device number (Linux dev_t encoding) for chr/blk; 0 otherwise. */
  rdev: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** File size for regular files; symlinks: target length; others: as given (ignored). */
  size: number;
  /** Extended attributes in insertion order; keys are unique. */
  xattrs: Xattr[];
  /** Symlink target. */
  target?: Buffer;
  /** Regular external file: backing path relative to the object store (`xx/yyyy…`). */
  payload?: Buffer;
  /** Regular inline file: the file's bytes, stored in the image. */
  content?: Buffer;
  /** Regular external file: fs-verity SHA-256 digest of the content (32 bytes). */
  digest?: Buffer;
  /** Directories only: name (latin1 of the bytes) → inode. */
  entries?: Map<string, Inode>;
  /**
   * Directories only, optional: names in this directory that are *secondary* hardlinks, i.e.
   * the inode's primary entry is elsewhere (a dumpfile's `@` lines). The EROFS writer numbers
   * an inode at its primary entry, as C mkcomposefs does; without marks it takes the first
   * entry in breadth-first order.
   */
  hardlinks?: Set<string>;
}

/** The type of an st_mode value, or undefined if the type bits are not a valid type. */
export function fileTypeOf(mode: number): FileType | undefined {
  switch (mode & S_IFMT) {
    case S_IFREG: return 'reg';
    case S_IFDIR: return 'dir';
    case S_IFLNK: return 'lnk';
    case S_IFCHR: return 'chr';
    case S_IFBLK: return 'blk';
    case S_IFIFO: return 'fifo';
    case S_IFSOCK: return 'sock';
    default: return undefined;
  }
}

export function isDir(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFDIR;
}

export function isReg(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFREG;
}

export function isSymlink(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFLNK;
}

/** An overlayfs whiteout as composefs and OCI tools write it: a char device 0/0. */
export function isWhiteout(inode: Inode): boolean {
  return (inode.mode & S_IFMT) === S_IFCHR && inode.rdev === 0;
}

/** A new inode with every field zero except `mode`; directories get an empty entry map. */
export function newInode(mode: number, init: Partial<Inode> = {}): Inode {
  const inode: Inode = {
    mode,
    nlink: 1,
    uid: 0,
    gid: 0,
    rdev: 0,
    mtimeSec: 0,
    mtimeNsec: 0,
    size: 0,
    xattrs: [],
    ...init,
  };
  if ((mode & S_IFMT) === S_IFDIR && !inode.entries) inode.entries = new Map();
  return inode;
}

/** Name bytes → map key. */
export function nameKey(name: Buffer | string): string {
  return typeof name === 'string' ? Buffer.from(name, 'utf8').toString('latin1') : name.toString('latin1');
}

/** Map key → name bytes. */
export function keyName(key: string): Buffer {
  return Buffer.from(key, 'latin1');
}

/** Bytewise comparison of two map keys (latin1 strings compare as their bytes). */
export function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The entries of a directory in byte order of their names. */
export function sortedEntries(dir: Inode): [string, Inode][] {
  if (!dir.entries) return [];
  return [...dir.entries].sort((x, y) => compareKeys(x[0], y[0]));
}

/** Get an xattr value by key, or undefined. */
export function getXattr(inode: Inode, key: Buffer | string): Buffer | undefined {
  const k = typeof key === 'string' ? Buffer.from(key) : key;
  for (const x of inode.xattrs) if (x.key.equals(k)) return x.value;
  return undefined;
}

/** Set an xattr, replacing an existing value with the same key in place. */
export function setXattr(inode: Inode, key: Buffer | string, value: Buffer | string): void {
  const k = typeof key === 'string' ? Buffer.from(key) : key;
  const v = typeof value === 'string' ? Buffer.from(value) : value;
  for (const x of inode.xattrs) {
    if (x.key.equals(k)) {
      x.value = v;
      return;
    }
  }
  inode.xattrs.push({ key: k, value: v });
}

/** Remove an xattr; returns whether it was present. */
export function removeXattr(inode: Inode, key: Buffer | string): boolean {
  const k = typeof key === 'string' ? Buffer.from(key) : key;
  const i = inode.xattrs.findIndex((x) => x.key.equals(k));
  if (i < 0) return false;
  inode.xattrs.splice(i, 1);
  return true;
}

/** Split an absolute or relative path (bytes) into its non-empty components. */
export function splitPath(path: Buffer | string): Buffer[] {
  const p = typeof path === 'string' ? Buffer.from(path) : path;
  const out: Buffer[] = [];
  let start = 0;
  for (let i = 0; i <= p.length; i++) {
    if (i === p.length || p[i] === 0x2f) {
      if (i > start) out.push(p.subarray(start, i));
      start = i + 1;
    }
  }
  return out;
}

/** Look a path up from `root`, following no symlinks. Returns undefined when absent. */
export function lookup(root: Inode, path: Buffer | string): Inode | undefined {
  let cur: Inode | undefined = root;
  for (const comp of splitPath(path)) {
    if (!cur || !cur.entries) return undefined;
    cur = cur.entries.get(comp.toString('latin1'));
  }
  return cur;
}

/** Add `child` under `dir` as `name`; throws if the name is taken or invalid. */
export function addEntry(dir: Inode, name: Buffer, child: Inode): void {
  if (!dir.entries) throw new TreeError('NOT_A_DIRECTORY', 'parent is not a directory');
  validateName(name);
  const key = name.toString('latin1');
  if (dir.entries.has(key)) throw new TreeError('DUPLICATE_ENTRY', `duplicate entry ${printableName(name)}`);
  dir.entries.set(key, child);
}

/** Reject names that cannot be directory entries. */
export function validateName(name: Buffer): void {
  if (name.length === 0) throw new TreeError('INVALID_NAME', 'empty name');
  if (name.length > 255) throw new TreeError('INVALID_NAME', `name longer than 255 bytes: ${printableName(name)}`);
  if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name[0] === 0x2e && name[1] === 0x2e)) {
    throw new TreeError('INVALID_NAME', `invalid name ${name.toString('latin1')}`);
  }
  if (name.includes(0x2f) || name.includes(0)) throw new TreeError('INVALID_NAME', `name contains '/' or NUL: ${printableName(name)}`);
}

/** A name rendered for messages: printable ASCII kept, other bytes as \xHH. */
export function printableName(name: Buffer): string {
  let s = '';
  for (const b of name) s += b > 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0');
  return s;
}

/** Visit every (path, inode, parent) depth-first in byte order, parents before children. */
export function* walk(root: Inode, prefix: Buffer = Buffer.from('/')): Generator<[Buffer, Inode, Inode | undefined]> {
  yield [prefix, root, undefined];
  // Iterative DFS: entries pushed in reverse so they pop in byte order.
  const pending: [Buffer, Inode, Inode][] = [];
  const pushChildren = (path: Buffer, dir: Inode) => {
    const ents = sortedEntries(dir);
    const base = path.length === 1 ? path : Buffer.concat([path, Buffer.from('/')]);
    for (let i = ents.length - 1; i >= 0; i--) {
      const [k, child] = ents[i]!;
      pending.push([Buffer.concat([base, keyName(k)]), child, dir]);
    }
  };
  pushChildren(prefix, root);
  while (pending.length) {
    const [path, inode, parent] = pending.pop()!;
    yield [path, inode, parent];
    if (inode.entries) pushChildren(path, inode);
  }
}

/** A `Map` from inode to the first path it was reached at, in `walk` order (hardlink groups). */
export function firstPaths(root: Inode): Map<Inode, Buffer> {
  const m = new Map<Inode, Buffer>();
  for (const [p, inode] of walk(root)) if (!m.has(inode)) m.set(inode, p);
  return m;
}
