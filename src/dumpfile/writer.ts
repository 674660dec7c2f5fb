/**
 * Tree → dumpfile in the canonical form `composefs-info dump` prints (spec §1.2): depth-first in
 * byte order; the first path of a hardlinked inode is written in full, later ones as `@MODE`
 * lines whose PAYLOAD is that first path. Escapes straight into ~1 MiB byte chunks and builds
 * each path from its parent's escaped bytes, so large trees cost no per-field strings.
 */
import { S_IFLNK, S_IFMT, S_IFREG, type Inode } from '../tree/tree.js';

const CHUNK = 1 << 20;
const HEXDIGITS = Buffer.from('0123456789abcdef');
/** Per byte: 0 copied, 1 backslash + letter, 2 `\xHH`. Index 1 of the pair also escapes `=`. */
const CLASS = [new Uint8Array(256), new Uint8Array(256)];
const SHORT = new Uint8Array(256);
for (let c = 0; c < 256; c++) {
  const k = c <= 0x20 || c >= 0x7f ? 2 : 0;
  CLASS[0]![c] = k;
  CLASS[1]![c] = k;
}
for (const [c, l] of [[0x5c, 0x5c], [0x0a, 0x6e], [0x0d, 0x72], [0x09, 0x74]] as const) {
  CLASS[0]![c] = 1;
  CLASS[1]![c] = 1;
  SHORT[c] = l;
}
CLASS[1]![0x3d] = 2;

/** Accumulates output in chunks; `room(n)` guarantees n writable bytes at `pos`. */
class Out {
  buf = Buffer.allocUnsafe(CHUNK);
  pos = 0;
  readonly done: Buffer[] = [];
  room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    if (this.pos > 0) this.done.push(this.buf.subarray(0, this.pos));
    this.buf = Buffer.allocUnsafe(Math.max(CHUNK, n));
    this.pos = 0;
  }
  /** Hand over the finished chunks. */
  take(final: boolean): Buffer[] {
    if (final && this.pos > 0) {
      this.done.push(this.buf.subarray(0, this.pos));
      this.buf = Buffer.allocUnsafe(0);
      this.pos = 0;
    }
    return this.done.splice(0);
  }
}

/** Bytes `escaped` may write for `b` (at most 4 per byte). */
function escBound(b: Uint8Array): number {
  return b.length * 4 + 4;
}

/** Canonical escaping (spec §1.2) into `out` at `p`; `eq` also escapes `=`, `dash` writes a lone `-` as `\x2d`. */
function escaped(out: Buffer, p: number, b: Uint8Array, eq: boolean, dash: boolean): number {
  const len = b.length;
  if (dash && len === 1 && b[0] === 0x2d) {
    out[p++] = 0x5c;
    out[p++] = 0x78;
    out[p++] = 0x32;
    out[p++] = 0x64;
    return p;
  }
  const cls = CLASS[eq ? 1 : 0]!;
  for (let i = 0; i < len; i++) p = escapeByte(out, p, b[i]!, cls);
  return p;
}

/** One byte in canonical escaping (`cls` from CLASS) into `out` at `p`; returns the new end. */
function escapeByte(out: Buffer, p: number, c: number, cls: Uint8Array): number {
  const k = cls[c]!;
  if (k === 0) out[p++] = c;
  else if (k === 1) {
    out[p++] = 0x5c;
    out[p++] = SHORT[c]!;
  } else {
    out[p++] = 0x5c;
    out[p++] = 0x78;
    out[p++] = HEXDIGITS[c >> 4]!;
    out[p++] = HEXDIGITS[c & 15]!;
  }
  return p;
}

/** A decimal integer (any JS number, exact for |n| < 2^53) into `out` at `p` (≤ 24 bytes). */
function decimal(out: Buffer, p: number, n: number): number {
  if (n >= 0 && n < 0x80000000 && (n | 0) === n) {
    if (n < 10) {
      out[p] = 0x30 + n;
      return p + 1;
    }
    let digits = 1;
    for (let m = n; m >= 10; m = (m / 10) | 0) digits++;
    let q = p + digits;
    for (let m = n; q > p; m = (m / 10) | 0) out[--q] = 0x30 + (m % 10);
    return p + digits;
  }
  return p + out.write(String(n), p, 'latin1');
}

function octal(out: Buffer, p: number, n: number): number {
  return p + out.write(n.toString(8), p, 'latin1');
}

function hex(out: Buffer, p: number, b: Uint8Array): number {
  for (let i = 0; i < b.length; i++) {
    out[p++] = HEXDIGITS[b[i]! >> 4]!;
    out[p++] = HEXDIGITS[b[i]! & 15]!;
  }
  return p;
}

/** Escaped path bytes of one entry: its parent's, a `/`, its escaped name (a latin1 key). */
function childPath(parent: Buffer, name: string): Buffer {
  const cls = CLASS[0]!;
  const base = parent.length > 1 ? parent.length : 0;
  let len = base + 1;
  for (let i = 0; i < name.length; i++) {
    const k = cls[name.charCodeAt(i)]!;
    len += k === 0 ? 1 : k === 1 ? 2 : 4;
  }
  const out = Buffer.allocUnsafe(len);
  if (base > 0) out.set(parent, 0);
  let p = base;
  out[p++] = 0x2f;
  for (let i = 0; i < name.length; i++) p = escapeByte(out, p, name.charCodeAt(i), cls);
  return out;
}

/** One dumpfile line (formatEntry's fields, in bytes). */
function line(o: Out, path: Buffer, n: Inode, linkTo: Buffer | undefined): void {
  const type = n.mode & S_IFMT;
  const payload = linkTo ?? (type === S_IFLNK ? n.target : type === S_IFREG && n.payload && n.payload.length > 0 ? n.payload : undefined);
  const content = type === S_IFREG && n.content && n.content.length > 0 ? n.content : undefined;
  const digest = type === S_IFREG ? n.digest : undefined;
  let bound = path.length + 8 * 25 + 16;
  if (payload) bound += escBound(payload);
  if (content) bound += escBound(content);
  if (digest) bound += digest.length * 2;
  for (const x of n.xattrs) bound += escBound(x.key) + escBound(x.value) + 2;
  o.room(bound);
  const out = o.buf;
  let p = o.pos;
  out.set(path, p);
  p += path.length;
  out[p++] = 0x20;
  p = decimal(out, p, n.size);
  out[p++] = 0x20;
  if (linkTo) out[p++] = 0x40;
  p = octal(out, p, n.mode);
  out[p++] = 0x20;
  p = decimal(out, p, n.nlink);
  out[p++] = 0x20;
  p = decimal(out, p, n.uid);
  out[p++] = 0x20;
  p = decimal(out, p, n.gid);
  out[p++] = 0x20;
  p = decimal(out, p, n.rdev);
  out[p++] = 0x20;
  p = decimal(out, p, n.mtimeSec);
  out[p++] = 0x2e;
  p = decimal(out, p, n.mtimeNsec);
  out[p++] = 0x20;
  if (linkTo) {
    out.set(linkTo, p);
    p += linkTo.length;
  }
  else if (payload) p = escaped(out, p, payload, false, true);
  else out[p++] = 0x2d;
  out[p++] = 0x20;
  if (content) p = escaped(out, p, content, false, true);
  else out[p++] = 0x2d;
  out[p++] = 0x20;
  if (digest) p = hex(out, p, digest);
  else out[p++] = 0x2d;
  for (const x of n.xattrs) {
    out[p++] = 0x20;
    p = escaped(out, p, x.key, true, false);
    out[p++] = 0x3d;
    p = escaped(out, p, x.value, true, false);
  }
  out[p++] = 0x0a;
  o.pos = p;
}

/** The entries of a directory in byte order (entry maps from the reader are in order already). */
function ordered(dir: Inode): Iterator<[string, Inode]> {
  const ents = dir.entries!;
  let prev: string | undefined;
  for (const k of ents.keys()) {
    if (prev !== undefined && prev > k) return [...ents].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))[Symbol.iterator]();
    prev = k;
  }
  return ents.entries();
}

/** Options of the dumpfile writer. */
export interface DumpOptions {
  /**
   * Write each hardlinked inode in full at its *primary* entry (the one its directory does not
   * list in `hardlinks`, as the dumpfile parser and the image reader mark them) instead of at
   * its first path, so that parsing the dump and writing an image gives the original image's
   * inode numbering. Not the canonical `composefs-info dump` form when they differ.
   */
  primaries?: boolean;
}

interface Primary {
  dir: Inode;
  name: string;
  path: Buffer;
}

/** For each hardlinked inode with a marked primary entry: where that entry is. */
function findPrimaries(root: Inode): Map<Inode, Primary> {
  const out = new Map<Inode, Primary>();
  const stack: [Inode, Buffer][] = [[root, Buffer.from('/')]];
  while (stack.length) {
    const [dir, path] = stack.pop()!;
    for (const [name, n] of dir.entries!) {
      if (n.entries) stack.push([n, childPath(path, name)]);
      else if (!dir.hardlinks?.has(name) && !out.has(n)) out.set(n, { dir, name, path: childPath(path, name) });
    }
  }
  return out;
}

/**
 * The dumpfile of `root` as a sequence of chunks (about 1 MiB each): depth-first in byte order,
 * later names of a hardlinked inode as `@MODE` lines whose payload is its first path (or, with
 * `primaries`, its primary path).
 */
export function* dumpfileChunks(root: Inode, opts: DumpOptions = {}): Generator<Buffer> {
  const firstPath = new Map<Inode, Buffer>();
  const primaries = opts.primaries ? findPrimaries(root) : undefined;
  const o = new Out();
  const rootPath = Buffer.from('/');
  line(o, rootPath, root, undefined);
  const its: Iterator<[string, Inode]>[] = [ordered(root)];
  const paths: Buffer[] = [rootPath];
  const dirs: Inode[] = [root];
  while (its.length > 0) {
    const next = its[its.length - 1]!.next();
    if (next.done) {
      its.pop();
      paths.pop();
      dirs.pop();
      continue;
    }
    const [name, n] = next.value;
    const path = childPath(paths[paths.length - 1]!, name);
    if (n.entries) {
      line(o, path, n, undefined);
      its.push(ordered(n));
      paths.push(path);
      dirs.push(n);
    } else {
      const prim = primaries?.get(n);
      let linkTo: Buffer | undefined;
      if (prim) {
        linkTo = prim.dir === dirs[dirs.length - 1] && prim.name === name ? undefined : prim.path;
      } else {
        linkTo = firstPath.get(n);
        if (linkTo === undefined) firstPath.set(n, path);
      }
      line(o, path, n, linkTo);
    }
    if (o.done.length > 0) yield* o.take(false);
  }
  yield* o.take(true);
}

/** The canonical dumpfile of `root` as one buffer. */
export function formatDumpfile(root: Inode, opts: DumpOptions = {}): Buffer {
  return Buffer.concat([...dumpfileChunks(root, opts)]);
}
