/**
 * Tree → dumpfile in the canonical form `composefs-info dump` prints (spec §1.2): depth-first in
 * byte order; the first path of a hardlinked inode is written in full, later ones as `@MODE`
 * lines whose PAYLOAD is that first path.
 */
import { type Inode, S_IFLNK, S_IFMT, S_IFREG, walk } from '../tree/tree.js';
import { escapeField } from './escape.js';

/** One line (with its trailing newline) per entry, in canonical order. */
export function* dumpfileLines(root: Inode): Generator<string> {
  const seen = new Map<Inode, Buffer>();
  for (const [path, inode] of walk(root)) {
    const first = seen.get(inode);
    if (first === undefined && !inode.entries) seen.set(inode, path);
    yield formatEntry(path, inode, first);
  }
}

/** The whole dumpfile as bytes. */
export function formatDumpfile(root: Inode): Buffer {
  const parts: string[] = [];
  for (const l of dumpfileLines(root)) parts.push(l);
  return Buffer.from(parts.join(''), 'latin1');
}

/** Format one entry; `linkTo` makes it a hardlink line to that first path. */
export function formatEntry(path: Buffer, inode: Inode, linkTo?: Buffer): string {
  const type = inode.mode & S_IFMT;
  let payload = '-';
  if (linkTo) payload = escapeField(linkTo);
  else if (type === S_IFLNK && inode.target) payload = escapeField(inode.target);
  else if (type === S_IFREG && inode.payload && inode.payload.length > 0) payload = escapeField(inode.payload);
  const content = type === S_IFREG && inode.content && inode.content.length > 0 ? escapeField(inode.content) : '-';
  const digest = type === S_IFREG && inode.digest ? inode.digest.toString('hex') : '-';
  let line =
    escapeField(path, false, false) +
    ' ' + inode.size +
    ' ' + (linkTo ? '@' : '') + inode.mode.toString(8) +
    ' ' + inode.nlink +
    ' ' + inode.uid +
    ' ' + inode.gid +
    ' ' + inode.rdev +
    ' ' + inode.mtimeSec + '.' + inode.mtimeNsec +
    ' ' + payload +
    ' ' + content +
    ' ' + digest;
  for (const x of inode.xattrs) line += ' ' + escapeField(x.key, true, false) + '=' + escapeField(x.value, true, false);
  return line + '\n';
}
