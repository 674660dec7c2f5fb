/**
 * composefs dumpfile → Tree (spec §1). Entries must be listed parent-first with the root first;
 * hardlinks (`@MODE`, PAYLOAD = target path) are resolved after the whole file is read.
 * Every error names the source, the line and the field at fault; nothing is half-built.
 */
import { CfsError } from '../errors.js';
import {
  type Inode,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  fileTypeOf,
  newInode,
} from '../tree/tree.js';
import { EscapeError, unescapeLatin1 } from './escape.js';

/** A dumpfile that cannot be parsed; `line` is 1-based. */
export class DumpfileError extends CfsError {
  readonly line: number;
  readonly field: string | undefined;
  constructor(code: string, message: string, source: string, line: number, field?: string) {
    super(code, `${source}:${line}: ${message}${field ? ` (field ${field})` : ''}`);
    this.line = line;
    this.field = field;
  }
}

/** Parser options. */
export interface ParseOptions {
  /** Upstream's CFS_PARSE_STRICT checks (trailing newline, rdev on non-devices, symlink size). */
  strict?: boolean;
  /** Name used in error messages (file path or `<stdin>`). */
  source?: string;
}

const FIELD_NAMES = ['PATH', 'SIZE', 'MODE', 'NLINK', 'UID', 'GID', 'RDEV', 'MTIME', 'PAYLOAD', 'CONTENT', 'DIGEST'];
const MAX_INLINE = 5000;
const PATH_MAX = 4096;
const MAX_XATTR_REMAINDER = 65535;
const MAX_XATTR_ACCOUNTING = 32767;
/** composefs refuses files that need more than 1024 chunks of 2^43 bytes. */
const MAX_FILE_SIZE = 2 ** 53;
const U32_MAX = 0xffffffff;

interface PendingLink {
  parent: Inode;
  key: string;
  target: Buffer;
  line: number;
  path: Buffer;
}

/** A placeholder for a hardlink entry until its target is resolved. */
const LINK_MARK = Symbol('hardlink');
type LinkPlaceholder = Inode & { [LINK_MARK]: PendingLink };

/** Parse a whole dumpfile into a Tree and return its root. */
export function parseDumpfile(data: Buffer, opts: ParseOptions = {}): Inode {
  const parser = new DumpfileParser(opts);
  parser.push(data);
  return parser.end();
}

/**
 * Text is decoded this many bytes (rounded to whole lines) at a time: small strings die young,
 * where one string of the whole file (tens of MB) would live as long as the parse.
 */
const PIECE = 64 * 1024;

/**
 * An incremental dumpfile parser: `push` the bytes in any chunking, then `end` for the root.
 * Only the unfinished last line of a chunk is kept between calls, so a file read in chunks is
 * never held whole.
 */
export class DumpfileParser {
  private readonly source: string;
  private readonly strict: boolean;
  private root: Inode | undefined;
  private readonly links: LinkPlaceholder[] = [];
  // Xattr keys and short values repeat across a tree: share one Buffer per distinct text.
  private readonly keys = new Map<string, Buffer>();
  private readonly values = new Map<string, Buffer>();
  private lineNo = 0;
  /** Directory path (as written, escapes decoded) → inode: a line's parent in one lookup. */
  private readonly dirs = new Map<string, Inode>();
  /** Bytes after the last newline seen (a copy: callers may reuse their chunk buffers). */
  private pending: Buffer | undefined;

  constructor(opts: ParseOptions = {}) {
    this.source = opts.source ?? '<dumpfile>';
    this.strict = opts.strict ?? false;
  }

  /** Parse every complete line of `chunk` (after what is pending). */
  push(chunk: Buffer): void {
    const data = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = undefined;
    let start = 0;
    while (start < data.length) {
      // The last newline within PIECE bytes, or (a longer line) the first one after.
      let nl = data.lastIndexOf(0x0a, Math.min(start + PIECE, data.length) - 1);
      if (nl < start) nl = data.indexOf(0x0a, start + PIECE);
      if (nl < 0) break;
      this.lines(data.toString('latin1', start, nl + 1));
      start = nl + 1;
    }
    if (start < data.length) this.pending = Buffer.from(data.subarray(start));
  }

  /** Parse what is left (a last line without newline) and resolve hardlinks. */
  end(): Inode {
    if (this.pending) {
      const rest = this.pending.toString('latin1');
      this.pending = undefined;
      this.lines(rest);
    }
    const root = this.root;
    if (!root) throw new DumpfileError('DUMPFILE_PATH', 'Root node not present', this.source, Math.max(this.lineNo, 1));
    resolveLinks(root, this.links, this.source);
    return root;
  }

  /** Parse the lines of `text`; only its last line may lack the newline. */
  private lines(text: string): void {
    let pos = 0;
    while (pos < text.length) {
      this.lineNo++;
      let end = text.indexOf('\n', pos);
      if (end < 0) {
        if (this.strict) throw new DumpfileError('DUMPFILE_SYNTAX', 'Missing trailing newline', this.source, this.lineNo);
        end = text.length;
      }
      this.line(text.slice(pos, end));
      pos = end + 1;
    }
  }

  /** Parse one line (without its newline) into the tree. */
  private line(line: string): void {
    const { source, strict, keys, values, lineNo } = this;
    const root = this.root;
    const fail = (code: string, msg: string, field?: number): never => {
      throw new DumpfileError(code, msg, source, lineNo, field === undefined ? undefined : FIELD_NAMES[field]);
    };
    if (line.length === 0) fail('DUMPFILE_SYNTAX', 'Invalid empty path', 0);
    if (line.indexOf('\0') >= 0) fail('DUMPFILE_SYNTAX', 'Line contains a NUL byte');

    const f = line.split(' ');
    while (f.length < 11) f.push('');
    const unescStr = (i: number): string => {
      try {
        return unescapeLatin1(f[i]!);
      } catch (e) {
        if (e instanceof EscapeError) return fail('DUMPFILE_ESCAPE', e.message, i);
        throw e;
      }
    };
    const unesc = (i: number): Buffer => Buffer.from(unescStr(i), 'latin1');
    const optional = (i: number): Buffer | undefined => (f[i] === '-' ? undefined : unesc(i));
    const dec = (i: number, max: bigint): bigint => {
      const s = f[i]!;
      if (!isDigits(s)) fail('DUMPFILE_INTEGER', `Invalid integer ${JSON.stringify(s)}`, i);
      const v = BigInt(s);
      if (v > max) fail('DUMPFILE_INTEGER', `Integer ${s} out of range`, i);
      return v;
    };
    /** Decimal field that must fit in 32 bits (fast path, no BigInt). */
    const dec32 = (i: number): number => {
      const s = f[i]!;
      if (!isDigits(s)) fail('DUMPFILE_INTEGER', `Invalid integer ${JSON.stringify(s)}`, i);
      const v = s.length <= 15 ? Number(s) : Infinity;
      if (v > U32_MAX) fail('DUMPFILE_INTEGER', `Integer ${s} out of range`, i);
      return v;
    };

    const path = unescStr(0);
    // MODE (with optional hardlink marker)
    let modeText = f[2]!;
    const isLink = modeText.startsWith('@');
    if (isLink) modeText = modeText.slice(1);
    if (!/^[0-7]+$/.test(modeText)) fail('DUMPFILE_MODE', `Invalid mode ${JSON.stringify(modeText)}`, 2);
    // Like upstream, the value may have bits above st_mode's 16; the image keeps the low 16.
    const fullMode = parseInt(modeText, 8);
    if (fullMode > U32_MAX || fileTypeOf(fullMode) === undefined) fail('DUMPFILE_MODE', `Invalid mode ${modeText}`, 2);
    const mode = fullMode & 0o177777;
    const type = mode & S_IFMT;

    const isRoot = path === '/';
    if (isRoot && root) fail('DUMPFILE_PATH', 'Duplicate root entry', 0);
    if (!isRoot && !root) fail('DUMPFILE_PATH', 'Root node not present', 0);

    // Validate the final name and locate the parent: by its path in one lookup when it is a
    // directory listed before, else by a walk (skipping leading and repeated '/').
    let parent: Inode | undefined;
    let name = '';
    if (!isRoot) {
      const slash = path.lastIndexOf('/');
      name = path.slice(slash + 1);
      if (name.length === 0) fail('DUMPFILE_PATH', `Can't add child: empty name in ${printable(path)}`, 0);
      if (name === '.' || name === '..') fail('DUMPFILE_PATH', `Invalid . or .. in path: ${printable(path)}`, 0);
      if (name.length > 255) fail('DUMPFILE_PATH', `Name too long (${name.length} bytes) in ${printable(path)}`, 0);
      name = flatCopy(name);
      const dirPath = slash < 0 ? '' : path.slice(0, slash);
      parent = this.dirs.get(dirPath) ?? walkTo(root!, dirPath, (msg) => fail('DUMPFILE_PATH', `${msg} for ${printable(path)}`, 0));
      if (parent.entries!.has(name)) fail('DUMPFILE_PATH', `Duplicate path ${printable(path)}`, 0);
    }

    if (isLink) {
      if (isRoot) fail('DUMPFILE_HARDLINK', 'The root cannot be a hardlink', 2);
      if (type === S_IFDIR) fail('DUMPFILE_HARDLINK', "Directories can't be hardlinked", 2);
      const target = optional(8);
      if (!target || target.length === 0) fail('DUMPFILE_HARDLINK', 'No target path for the hardlink', 8);
      const key = name;
      const ph = newInode(mode) as LinkPlaceholder;
      ph[LINK_MARK] = { parent: parent!, key, target: target!, line: lineNo, path: Buffer.from(path, 'latin1') };
      parent!.entries!.set(key, ph);
      (parent!.hardlinks ??= new Set()).add(key);
      this.links.push(ph);
      return;
    }

    const size = dec(1, 2n ** 64n - 1n);
    const nlink = dec32(3);
    const uid = dec32(4);
    const gid = dec32(5);
    const rdev = f[6] === '0' ? 0n : dec(6, 2n ** 64n - 1n);
    const mt = f[7]!;
    const dot = mt.indexOf('.');
    const secText = mt.slice(0, dot);
    const nsecText = mt.slice(dot + 1);
    if (dot < 0 || !isDigits(secText) || !isDigits(nsecText)) {
      fail('DUMPFILE_INTEGER', `Invalid mtime ${JSON.stringify(mt)} (want SECONDS.NANOSECONDS)`, 7);
    }
    const mtimeSec = secText.length <= 15 ? Number(secText) : Infinity;
    const mtimeNsec = nsecText.length <= 15 ? Number(nsecText) : Infinity;
    if (mtimeSec > Number.MAX_SAFE_INTEGER) fail('DUMPFILE_INTEGER', `mtime seconds ${secText} out of range`, 7);
    if (mtimeNsec > U32_MAX) fail('DUMPFILE_INTEGER', `mtime nanoseconds ${nsecText} out of range`, 7);

    const payload = optional(8);
    const content = optional(9);
    const digestText = f[10]!;
    let digest: Buffer | undefined;
    // A missing trailing field reads as empty; an empty DIGEST means no digest.
    if (digestText !== '-' && digestText !== '') {
      // Unescaped as a string: a Buffer here would be dead weight in the pool slabs the tree keeps.
      const d = unescStr(10);
      if (!/^[0-9a-fA-F]{64}$/.test(d)) fail('DUMPFILE_DIGEST', 'Invalid digest (want 64 hex characters)', 10);
      digest = Buffer.from(d, 'hex');
    }
    if (content !== undefined) {
      if (BigInt(content.length) !== size) fail('DUMPFILE_CONTENT', `Invalid content size ${content.length}, expected ${size}`, 9);
      if (content.length > MAX_INLINE) fail('DUMPFILE_CONTENT', `Inline content size ${content.length} exceeds maximum ${MAX_INLINE}`, 9);
    }

    const isDevice = fileTypeOf(mode) === 'chr' || fileTypeOf(mode) === 'blk';
    if (strict && !isDevice && rdev !== 0n) fail('DUMPFILE_RDEV', 'Non-zero devnum on non-device', 6);

    const head: Head = { mode, nlink, uid, gid, rdev: isDevice ? Number(rdev & 0xffffffffn) : 0, mtimeSec, mtimeNsec };
    let inode: Inode;
    if (type === S_IFREG) {
      if (size > BigInt(MAX_FILE_SIZE)) fail('DUMPFILE_SIZE', `File too large: ${size} bytes (limit 2^53)`, 1);
      if (payload !== undefined && payload.length >= PATH_MAX) fail('DUMPFILE_PAYLOAD', `Payload longer than ${PATH_MAX - 1} bytes`, 8);
      inode = fileInode(head, Number(size), content, payload, digest);
    } else if (type === S_IFLNK) {
      if (!payload || payload.length === 0 || payload.length >= PATH_MAX) fail('DUMPFILE_SYMLINK', 'Invalid symlink', 8);
      if (strict && size !== BigInt(payload!.length)) fail('DUMPFILE_SYMLINK', 'Symlink size does not match its target length', 1);
      if (strict && content !== undefined) fail('DUMPFILE_SYMLINK', 'Symlink with content', 9);
      inode = symlinkInode(head, payload!);
    } else if (type === S_IFDIR) {
      inode = dirInode(head, Number(size > BigInt(U32_MAX) ? 0n : size));
    } else {
      inode = { ...head, size: 0, xattrs: [] };
    }

    // XATTRS: everything after the 11 fixed fields.
    if (f.length > 11) {
      let remainder = f.length - 12;
      for (let i = 11; i < f.length; i++) remainder += f[i]!.length;
      if (remainder > MAX_XATTR_REMAINDER) fail('DUMPFILE_XATTR', 'Too many xattrs', 11);
      let accounting = 12;
      for (let i = 11; i < f.length; i++) {
        const tok = f[i]!;
        if (tok.length === 0) continue;
        const eq = tok.indexOf('=');
        if (eq < 0) fail('DUMPFILE_XATTR', `Missing = in xattr ${JSON.stringify(tok.slice(0, 40))}`);
        let key: Buffer;
        let value: Buffer;
        try {
          key = interned(keys, unescapeLatin1(tok.slice(0, eq)));
          const v = unescapeLatin1(tok.slice(eq + 1));
          value = v.length <= 256 && values.size < 65536 ? interned(values, v) : Buffer.from(v, 'latin1');
        } catch (e) {
          if (e instanceof EscapeError) fail('DUMPFILE_ESCAPE', `${e.message} in xattr`);
          throw e;
        }
        if (key!.length === 0 || key!.length > 255) fail('DUMPFILE_XATTR', `Can't set xattr: key length ${key!.length} not in 1..255`);
        if (value!.length > 65535) fail('DUMPFILE_XATTR', `Can't set xattr: value of ${value!.length} bytes`);
        const existing = inode.xattrs.findIndex((x) => x.key.equals(key!));
        if (existing >= 0) {
          const old = inode.xattrs[existing]!;
          accounting -= 7 + old.key.length + old.value.length;
          old.value = value!;
        } else {
          inode.xattrs.push({ key: key!, value: value! });
        }
        accounting += 7 + key!.length + value!.length;
        if (accounting > MAX_XATTR_ACCOUNTING) fail('DUMPFILE_XATTR', "Can't set xattr: xattrs of this entry exceed 32767 bytes");
      }
      // An exact-size copy: a pushed-to [] keeps room for 17 entries, which adds up per inode.
      if (inode.xattrs.length) inode.xattrs = inode.xattrs.slice();
    }

    if (isRoot) {
      if (type !== S_IFDIR) fail('DUMPFILE_PATH', 'Root must be a directory', 2);
      this.root = inode;
      this.dirs.set('', inode);
    } else {
      parent!.entries!.set(name, inode);
      // Keyed by a copy: the path may be a slice that would pin its whole text piece.
      if (type === S_IFDIR) this.dirs.set(flatCopy(path), inode);
    }
  }
}

/** Scratch space for flatCopy; grows for a longer string. */
let copyScratch = Buffer.allocUnsafeSlow(4096);

/**
 * A flat copy of a latin1 string. V8 makes a substring of 13 or more chars taken from a line
 * a slice that keeps the line's whole text piece alive as long as the copy is kept; a copy
 * through concatenation would still cost a 32-byte slice object.
 */
function flatCopy(s: string): string {
  if (s.length < 13) return s; // V8 copies short substrings already
  if (s.length > copyScratch.length) copyScratch = Buffer.allocUnsafeSlow(s.length);
  copyScratch.write(s, 0, 'latin1');
  return copyScratch.toString('latin1', 0, s.length);
}

/** The directory at `dirPath` below `root`, component by component; `fail` says what is wrong. */
function walkTo(root: Inode, dirPath: string, fail: (msg: string) => never): Inode {
  let cur = root;
  for (const c of dirPath.split('/')) {
    if (c.length === 0) continue;
    const next = cur.entries!.get(c);
    if (!next) return fail('Parent directory missing');
    if (!next.entries) return fail('Parent must be a directory');
    cur = next;
  }
  return cur;
}

/** The fields every parsed inode has before its size. */
type Head = Pick<Inode, 'mode' | 'nlink' | 'uid' | 'gid' | 'rdev' | 'mtimeSec' | 'mtimeNsec'>;

// Parsed inodes are made as one object literal with all their fields (in newInode's order):
// a field added after creation goes to a separate property array, about 40 bytes more for
// each of 100,000s of inodes.

function fileInode(h: Head, size: number, content?: Buffer, payload?: Buffer, digest?: Buffer): Inode {
  const { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec } = h;
  if (payload && digest && !content) return { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, size, xattrs: [], payload, digest };
  if (content && !payload && !digest) return { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, size, xattrs: [], content };
  const inode: Inode = { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, size, xattrs: [] };
  if (content) inode.content = content;
  if (payload) inode.payload = payload;
  if (digest) inode.digest = digest;
  return inode;
}

function symlinkInode(h: Head, target: Buffer): Inode {
  const { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec } = h;
  return { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, size: target.length, xattrs: [], target };
}

function dirInode(h: Head, size: number): Inode {
  const { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec } = h;
  return { mode, nlink, uid, gid, rdev, mtimeSec, mtimeNsec, size, xattrs: [], entries: new Map() };
}

function resolveLinks(root: Inode, links: LinkPlaceholder[], source: string): void {
  const resolve = (ph: LinkPlaceholder): Inode => {
    const seen = new Set<Inode>();
    let cur: Inode = ph;
    while (LINK_MARK in cur) {
      const p = (cur as LinkPlaceholder)[LINK_MARK];
      if (seen.has(cur)) {
        throw new DumpfileError('DUMPFILE_HARDLINK', `Hardlink cycle at ${pathText(p.path)}`, source, p.line, 'PAYLOAD');
      }
      seen.add(cur);
      let t: Inode | undefined = root;
      for (const c of p.target.toString('latin1').split('/')) {
        if (c.length === 0) continue;
        t = t?.entries?.get(c);
      }
      if (!t) throw new DumpfileError('DUMPFILE_HARDLINK', `No target at ${pathText(p.target)} for hardlink`, source, p.line, 'PAYLOAD');
      if (t === cur) throw new DumpfileError('DUMPFILE_HARDLINK', `Self-referential hardlink ${pathText(p.path)}`, source, p.line, 'PAYLOAD');
      cur = t;
    }
    if (cur.entries) {
      const p = ph[LINK_MARK];
      throw new DumpfileError('DUMPFILE_HARDLINK', `Hardlink ${pathText(p.path)} points at a directory`, source, p.line, 'PAYLOAD');
    }
    return cur;
  };
  const finals = links.map(resolve);
  links.forEach((ph, i) => {
    const p = ph[LINK_MARK];
    p.parent.entries!.set(p.key, finals[i]!);
  });
}

function isDigits(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return false;
  }
  return true;
}

function interned(cache: Map<string, Buffer>, s: string): Buffer {
  let b = cache.get(s);
  if (!b) {
    b = Buffer.from(s, 'latin1');
    // Keyed by a fresh copy: `s` may be a slice that would keep a whole text piece alive.
    cache.set(b.toString('latin1'), b);
  }
  return b;
}

function printable(latin1: string): string {
  return pathText(Buffer.from(latin1, 'latin1'));
}

function pathText(p: Buffer): string {
  let s = '';
  for (const b of p) s += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : '\\x' + b.toString(16).padStart(2, '0');
  return s;
}
