/**
 * Listings of an image's Tree in the formats of C `composefs-info`: `ls` (one line per path)
 * and `objects` (the backing-object paths, sorted and unique).
 */
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, walk, type Inode } from '../tree/tree.js';
import { escapeField } from '../dumpfile/escape.js';

/**
 * `composefs-info ls` escaping: the dumpfile's canonical escaping, except that paths
 * (`spaceOk`) keep spaces; symlink targets and payloads escape them too.
 */
export function escapeLs(b: Uint8Array, spaceOk: boolean): string {
  return escapeField(b, false, false, spaceOk);
}

/** One `ls` entry: what `composefs-info ls` shows for a path. */
export interface LsEntry {
  path: Buffer;
  inode: Inode;
  /** The first path of this inode when this one is a later hardlink. */
  linkTo?: Buffer;
}

/** The entries `ls` lists (every path but the root), depth-first in byte order. */
export function* lsEntries(root: Inode): Generator<LsEntry> {
  const first = new Map<Inode, Buffer>();
  let isRoot = true;
  for (const [path, inode] of walk(root)) {
    if (isRoot) {
      isRoot = false;
      continue;
    }
    const linkTo = inode.entries ? undefined : first.get(inode);
    if (linkTo) yield { path, inode, linkTo };
    else {
      if (!inode.entries) first.set(inode, path);
      yield { path, inode };
    }
  }
}

/** Format one `ls` line (with its newline) as a latin1 string. */
export function formatLsEntry(e: LsEntry): string {
  const p = escapeLs(e.path, true);
  if (e.linkTo) return p + '\n';
  const type = e.inode.mode & S_IFMT;
  if (type === S_IFDIR) return p + '/\t\n';
  if (type === S_IFLNK && e.inode.target) return p + '\t-> ' + escapeLs(e.inode.target, false) + '\n';
  if (type === S_IFREG && e.inode.payload && e.inode.payload.length > 0) return p + '\t@ ' + escapeLs(e.inode.payload, false) + '\n';
  return p + '\n';
}

/** `composefs-info ls` output lines for a tree. */
export function* lsLines(root: Inode): Generator<string> {
  for (const e of lsEntries(root)) yield formatLsEntry(e);
}

/** `composefs-info ls` output for a tree, as bytes. */
export function formatLs(root: Inode): Buffer {
  const parts: string[] = [];
  for (const l of lsLines(root)) parts.push(l);
  return Buffer.from(parts.join(''), 'latin1');
}

/** Add the backing-object paths (payloads of regular files) of `root` to `into`, keyed latin1. */
export function collectObjects(root: Inode, into: Map<string, Buffer> = new Map()): Map<string, Buffer> {
  const dirs: Inode[] = [root];
  while (dirs.length > 0) {
    for (const child of dirs.pop()!.entries!.values()) {
      if (child.entries) dirs.push(child);
      else if ((child.mode & S_IFMT) === S_IFREG && child.payload && child.payload.length > 0) {
        const k = child.payload.toString('latin1');
        if (!into.has(k)) into.set(k, child.payload);
      }
    }
  }
  return into;
}

/** The backing-object paths of one or more trees, unique and in byte order. */
export function objectPaths(roots: Inode | Inode[]): Buffer[] {
  const m = new Map<string, Buffer>();
  for (const r of Array.isArray(roots) ? roots : [roots]) collectObjects(r, m);
  return [...m.keys()].sort().map((k) => m.get(k)!);
}
