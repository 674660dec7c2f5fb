/**
 * A streaming tar reader written for layers: ustar (with the prefix field), GNU long names and
 * links (`L`/`K`), base-256 numbers, PAX extended (`x`) and global (`g`) headers with `path`,
 * `linkpath`, `size`, `uid`, `gid`, `mtime` (with fractions), `uname`, `gname`,
 * `SCHILY.devmajor/devminor`, and extended attributes as `SCHILY.xattr.NAME` (raw value bytes)
 * and `LIBARCHIVE.xattr.NAME` (URL-encoded name, base64 value). PAX records are parsed as bytes,
 * so binary xattr values survive.
 *
 * Entries are yielded one at a time; each carries a `body` to iterate (or not) before asking for
 * the next entry — unread content is skipped. Nothing sized by the archive is buffered except
 * PAX and GNU long-name headers, which are capped (`maxMetaSize`).
 *
 * Header-only types (links, devices, directories, fifos) never carry data, whatever their size
 * field says (as Go's archive/tar, which umoci and containerd use, reads them).
 */
import { ByteReader } from './bytes.js';
import { TarError } from './errors.js';

/** Kinds of entries a layer can hold. */
export type TarEntryType = 'file' | 'link' | 'symlink' | 'chr' | 'blk' | 'dir' | 'fifo';

/** One extended attribute from a PAX header; key and value are bytes. */
export interface TarXattr {
  key: Buffer;
  value: Buffer;
}

/** One archive member with every PAX/GNU override applied. */
export interface TarEntry {
  type: TarEntryType;
  /** The raw typeflag byte of the header. */
  typeflag: number;
  /** Member name as bytes, exactly as archived (not normalised). */
  path: Buffer;
  /** Hardlink or symlink target as bytes (empty for other types). */
  linkpath: Buffer;
  /** Permission bits incl. setuid/setgid/sticky (`& 0o7777`). */
  mode: number;
  uid: number;
  gid: number;
  /** Content size in bytes (0 for header-only types). */
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  devmajor: number;
  devminor: number;
  uname: string;
  gname: string;
  /** Extended attributes in archive order; keys unique (a later record replaces). */
  xattrs: TarXattr[];
  /** Byte offset of this member's (first) header in the tar stream. */
  offset: number;
  /** Byte offset of this member's content in the tar stream. */
  dataOffset: number;
  /** The content; iterate it fully, partly or not at all before the next entry. A chunk is
   *  valid until the next one is requested: copy what you keep. */
  body: AsyncIterable<Buffer>;
}

/** Options for `readTar`. */
export interface TarReadOptions {
  /** Largest PAX / GNU long-name header accepted (default 1 MiB). */
  maxMetaSize?: number;
  /** Require the two zero blocks that end an archive (default true). */
  requireEnd?: boolean;
  /** Read the input to its end after the end-of-archive blocks (default true), so that
   *  digests computed over the stream cover every byte. */
  drain?: boolean;
  /** A name for messages (e.g. the layer digest). */
  name?: string;
}

const BLOCK = 512;
const TYPE_BY_FLAG: Record<number, TarEntryType> = {
  0x30: 'file', 0x00: 'file', 0x37: 'file',
  0x31: 'link', 0x32: 'symlink', 0x33: 'chr', 0x34: 'blk', 0x35: 'dir', 0x36: 'fifo',
  0x44: 'dir', // GNU dumpdir: a directory whose content lists names; content skipped
};

const SCHILY_XATTR = Buffer.from('SCHILY.xattr.');
const LIBARCHIVE_XATTR = Buffer.from('LIBARCHIVE.xattr.');
const GNU_SPARSE = Buffer.from('GNU.sparse.');

interface PaxState {
  path?: Buffer;
  linkpath?: Buffer;
  size?: number;
  uid?: number;
  gid?: number;
  mtime?: [number, number];
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs: Map<string, TarXattr>;
}

function newPax(): PaxState {
  return { xattrs: new Map() };
}

/** Read a tar stream entry by entry. Throws `TarError` on malformed or truncated input. */
export async function* readTar(src: AsyncIterable<Uint8Array>, opts: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const r = new ByteReader(src);
  const maxMeta = opts.maxMetaSize ?? 1 << 20;
  const where = opts.name ? `${opts.name}: ` : '';
  const fail = (code: string, off: number, msg: string): never => {
    throw new TarError(code, `${where}tar offset ${off}: ${msg}`);
  };

  let global = newPax();
  let generation = 0;
  // State of the entry last yielded: content bytes not yet read, and its padding.
  let bodyLeft = 0;
  let bodyPad = 0;

  const readBlock = async (what: string): Promise<Buffer> => {
    const off = r.offset;
    const b = await r.read(BLOCK);
    if (b.length !== BLOCK) fail('TAR_TRUNCATED', off, `truncated ${what} (${b.length} of 512 bytes)`);
    return b;
  };
  const readMeta = async (size: number, off: number, what: string): Promise<Buffer> => {
    if (size > maxMeta) fail('TAR_HEADER_TOO_LARGE', off, `${what} of ${size} bytes exceeds the ${maxMeta}-byte limit`);
    const data = Buffer.from(await r.read(size)); // copy: the chunk it came from is released
    if (data.length !== size) fail('TAR_TRUNCATED', off, `truncated ${what}`);
    const pad = (BLOCK - (size % BLOCK)) % BLOCK;
    if ((await r.skip(pad)) !== pad) fail('TAR_TRUNCATED', off, `truncated ${what} padding`);
    return data;
  };

  try {
    for (;;) {
      // Skip whatever the consumer left of the previous body.
      if (bodyLeft + bodyPad > 0) {
        const n = bodyLeft + bodyPad;
        const off = r.offset;
        if ((await r.skip(n)) !== n) fail('TAR_TRUNCATED', off, 'truncated member content');
        bodyLeft = 0;
        bodyPad = 0;
      }
      generation++;

      let pax = newPax();
      let longName: Buffer | undefined;
      let longLink: Buffer | undefined;
      let first = -1;
      let h: Buffer;
      let hdrOff: number;
      // Read meta headers (x, g, L, K) until a real member header.
      for (;;) {
        hdrOff = r.offset;
        const peek = await r.read(BLOCK);
        if (peek.length === 0) {
          if (opts.requireEnd === false) return;
          fail('TAR_TRUNCATED', hdrOff, 'archive ends without the end-of-archive blocks');
        }
        if (peek.length !== BLOCK) fail('TAR_TRUNCATED', hdrOff, `truncated header (${peek.length} of 512 bytes)`);
        if (isZero(peek)) {
          if (first >= 0) fail('TAR_BAD_HEADER', hdrOff, 'end-of-archive block after an extended header');
          // End of archive: a second zero block should follow; a lone one at EOF is accepted.
          const second = await r.read(BLOCK);
          if (second.length === BLOCK && !isZero(second)) fail('TAR_BAD_HEADER', hdrOff + BLOCK, 'lone zero block in the middle of the archive');
          if (opts.drain !== false) await r.drain();
          return;
        }
        h = peek;
        if (first < 0) first = hdrOff;
        verifyChecksum(h, hdrOff, fail);
        const flag = h[156]!;
        if (flag === 0x78 /* x */ || flag === 0x67 /* g */ || flag === 0x4c /* L */ || flag === 0x4b /* K */) {
          const size = parseNumeric(h, 124, 12, hdrOff, 'size', fail);
          const data = await readMeta(size, hdrOff, flag === 0x78 || flag === 0x67 ? 'PAX header' : 'GNU long name');
          if (flag === 0x78) parsePax(data, pax, hdrOff, fail);
          else if (flag === 0x67) {
            const g = newPax();
            parsePax(data, g, hdrOff, fail);
            global = mergeGlobal(global, g);
          } else if (flag === 0x4c) longName = cstr(data);
          else longLink = cstr(data);
          continue;
        }
        break;
      }

      const flag = h[156]!;
      let type = TYPE_BY_FLAG[flag];
      if (flag === 0x53 /* S */) fail('TAR_UNSUPPORTED', hdrOff, 'GNU sparse files are not supported');
      if (flag === 0x56 /* V */) {
        // Volume label: not a file; skip its (normally empty) content.
        const size = parseNumeric(h, 124, 12, hdrOff, 'size', fail);
        bodyLeft = size;
        bodyPad = (BLOCK - (size % BLOCK)) % BLOCK;
        continue;
      }
      if (type === undefined) fail('TAR_UNSUPPORTED', hdrOff, `unsupported entry type ${JSON.stringify(String.fromCharCode(flag))}`);

      const isUstar5 = h[257] === 0x75 && h[258] === 0x73 && h[259] === 0x74 && h[260] === 0x61 && h[261] === 0x72; // "ustar"
      const gnu = isUstar5 && h[262] === 0x20 && h[263] === 0x20;
      const ustar = isUstar5 && h[262] === 0;
      // Copies: the header block may be reused by the source once the reader moves on.
      let path: Buffer = Buffer.from(cstr(h.subarray(0, 100)));
      if (ustar && h[345] !== 0) {
        const prefix = cstr(h.subarray(345, 500));
        path = Buffer.concat([prefix, Buffer.from('/'), path]);
      }
      let linkpath: Buffer = Buffer.from(cstr(h.subarray(157, 257)));
      if (longName) path = longName;
      if (longLink) linkpath = longLink;
      if (pax.path) path = pax.path;
      if (pax.linkpath) linkpath = pax.linkpath;
      if (path.length === 0) fail('TAR_BAD_HEADER', hdrOff, 'empty member name');
      // Pre-POSIX archives mark directories by a trailing slash on a regular-file header.
      if (type === 'file' && flag === 0x00 && path[path.length - 1] === 0x2f) type = 'dir';

      const size = pax.size ?? global.size ?? parseNumeric(h, 124, 12, hdrOff, 'size', fail);
      const mtime = pax.mtime ?? global.mtime ?? [parseNumeric(h, 136, 12, hdrOff, 'mtime', fail, true), 0];
      const isDev = type === 'chr' || type === 'blk';
      const entry: TarEntry = {
        type: type!,
        typeflag: flag,
        path,
        linkpath: type === 'link' || type === 'symlink' ? linkpath : Buffer.alloc(0),
        mode: parseNumeric(h, 100, 8, hdrOff, 'mode', fail) & 0o7777,
        uid: pax.uid ?? global.uid ?? parseNumeric(h, 108, 8, hdrOff, 'uid', fail),
        gid: pax.gid ?? global.gid ?? parseNumeric(h, 116, 8, hdrOff, 'gid', fail),
        size: type === 'file' ? size : 0,
        mtimeSec: mtime[0],
        mtimeNsec: mtime[1],
        devmajor: isDev ? pax.devmajor ?? (ustar || gnu ? parseNumeric(h, 329, 8, hdrOff, 'devmajor', fail) : 0) : 0,
        devminor: isDev ? pax.devminor ?? (ustar || gnu ? parseNumeric(h, 337, 8, hdrOff, 'devminor', fail) : 0) : 0,
        uname: pax.uname ?? global.uname ?? (ustar || gnu ? cstr(h.subarray(265, 297)).toString('utf8') : ''),
        gname: pax.gname ?? global.gname ?? (ustar || gnu ? cstr(h.subarray(297, 329)).toString('utf8') : ''),
        xattrs: mergedXattrs(global, pax),
        offset: first,
        dataOffset: r.offset,
        body: EMPTY_BODY,
      };
      const dataSize = type === 'file' || flag === 0x44 ? size : 0;
      bodyLeft = dataSize;
      bodyPad = (BLOCK - (dataSize % BLOCK)) % BLOCK;
      if (entry.size > 0) {
        const gen = generation;
        const dataOff = r.offset;
        entry.body = {
          [Symbol.asyncIterator]: async function* () {
            while (bodyLeft > 0) {
              if (gen !== generation) throw new TarError('TAR_BODY_STALE', `${where}tar offset ${first}: body read after the next entry was requested`);
              const chunk = await r.readSome(bodyLeft);
              if (chunk.length === 0) fail('TAR_TRUNCATED', dataOff, `truncated content of ${printable(path)} (${size - bodyLeft} of ${size} bytes)`);
              bodyLeft -= chunk.length;
              yield chunk;
            }
          },
        };
      }
      yield entry;
    }
  } finally {
    await r.close();
  }
}

const EMPTY_BODY: AsyncIterable<Buffer> = { [Symbol.asyncIterator]: async function* () {} };

/** Read an entry's whole body into one buffer (for small contents; `max` guards memory). */
export async function readBody(entry: TarEntry, max = 1 << 20): Promise<Buffer> {
  if (entry.size > max) throw new TarError('TAR_HEADER_TOO_LARGE', `tar offset ${entry.offset}: content of ${entry.size} bytes exceeds ${max}`);
  const out = Buffer.allocUnsafe(entry.size);
  let n = 0;
  for await (const c of entry.body) n += c.copy(out, n); // copy now: chunks do not outlive the next pull
  return n === entry.size ? out : out.subarray(0, n);
}

type Fail = (code: string, off: number, msg: string) => never;

function isZero(b: Buffer): boolean {
  // Compare 8 bytes at a time via two 32-bit reads per step would need alignment; a simple
  // loop over 512 bytes is cheap and only runs once per header.
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function cstr(b: Buffer): Buffer {
  const z = b.indexOf(0);
  return z < 0 ? b : b.subarray(0, z);
}

function printable(b: Buffer): string {
  let s = '';
  for (const c of b.subarray(0, 200)) s += c >= 0x20 && c < 0x7f && c !== 0x5c ? String.fromCharCode(c) : '\\x' + c.toString(16).padStart(2, '0');
  return b.length > 200 ? s + '…' : s;
}

function verifyChecksum(h: Buffer, off: number, fail: Fail): void {
  const stored = parseNumeric(h, 148, 8, off, 'checksum', fail);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const c = i >= 148 && i < 156 ? 0x20 : h[i]!;
    unsigned += c;
    signed += c > 127 ? c - 256 : c;
  }
  if (stored !== unsigned && stored !== signed) fail('TAR_CHECKSUM', off, `header checksum mismatch (stored ${stored}, computed ${unsigned})`);
}

/** Parse an octal or base-256 numeric header field (indexes the block; no slices). */
function parseNumeric(h: Buffer, start: number, len: number, off: number, field: string, fail: Fail, signedOk = false): number {
  const end = start + len;
  const b0 = h[start]!;
  if (b0 & 0x80) {
    // Base-256 (GNU/star): 0x80 marks a positive, 0xff a negative two's-complement value.
    const negative = b0 === 0xff;
    if (negative && !signedOk) fail('TAR_BAD_HEADER', off, `negative ${field}`);
    let v = 0n;
    for (let i = start; i < end; i++) v = (v << 8n) | BigInt(i === start ? (negative ? b0 : b0 & 0x7f) : h[i]!);
    if (negative) v -= 1n << BigInt(8 * len);
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER)) fail('TAR_BAD_HEADER', off, `${field} out of range`);
    return Number(v);
  }
  // Leading spaces and NULs are padding (as Go's archive/tar trims them); all padding is 0.
  let i = start;
  while (i < end && (h[i] === 0x20 || h[i] === 0)) i++;
  if (i === end) return 0;
  let v = 0;
  for (; i < end; i++) {
    const c = h[i]!;
    if (c >= 0x30 && c <= 0x37) v = v * 8 + (c - 0x30);
    else if (c === 0 || c === 0x20) break;
    else fail('TAR_BAD_HEADER', off, `invalid octal digit in ${field} field`);
  }
  // Anything after the terminator must be terminators as well.
  for (; i < end; i++) if (h[i] !== 0 && h[i] !== 0x20) fail('TAR_BAD_HEADER', off, `garbage after the ${field} field`);
  return v;
}

function parseDecimal(v: Buffer, off: number, key: string, fail: Fail): number {
  if (v.length === 0 || v.length > 16) fail('TAR_PAX', off, `invalid PAX ${key} value`);
  let n = 0;
  for (const c of v) {
    if (c < 0x30 || c > 0x39) fail('TAR_PAX', off, `invalid PAX ${key} value ${JSON.stringify(v.toString('latin1'))}`);
    n = n * 10 + (c - 0x30);
  }
  if (!Number.isSafeInteger(n)) fail('TAR_PAX', off, `PAX ${key} out of range`);
  return n;
}

/** PAX time: [-]SECONDS[.FRACTION] → [sec, nsec] with nsec in [0, 1e9). */
function parsePaxTime(v: Buffer, off: number, fail: Fail): [number, number] {
  const s = v.toString('latin1');
  const m = /^(-?)(\d{1,15})(?:\.(\d*))?$/.exec(s);
  if (!m) fail('TAR_PAX', off, `invalid PAX mtime ${JSON.stringify(s.slice(0, 40))}`);
  const whole = Number(m![2]);
  const frac = (m![3] ?? '').slice(0, 9).padEnd(9, '0');
  let nsec = Number(frac);
  let sec = whole;
  if (m![1] === '-') {
    sec = -whole;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1e9 - nsec;
    }
  }
  return [sec, nsec];
}

function startsWith(b: Buffer, p: Buffer): boolean {
  return b.length >= p.length && b.compare(p, 0, p.length, 0, p.length) === 0;
}

/** libarchive's xattr name encoding: %XX escapes for non-ASCII, '=' and '%'. */
function urlDecode(b: Buffer, off: number, fail: Fail): Buffer {
  if (!b.includes(0x25)) return Buffer.from(b);
  const out: number[] = [];
  for (let i = 0; i < b.length; i++) {
    if (b[i] === 0x25) {
      const hex = b.subarray(i + 1, i + 3).toString('latin1');
      if (!/^[0-9a-fA-F]{2}$/.test(hex)) fail('TAR_PAX', off, 'invalid %-escape in LIBARCHIVE.xattr name');
      out.push(parseInt(hex, 16));
      i += 2;
    } else out.push(b[i]!);
  }
  return Buffer.from(out);
}

function parsePax(data: Buffer, st: PaxState, off: number, fail: Fail): void {
  let pos = 0;
  while (pos < data.length) {
    if (data[pos] === 0) break; // NUL padding after the last record
    const sp = data.indexOf(0x20, pos);
    if (sp < 0 || sp - pos > 20) fail('TAR_PAX', off, 'malformed PAX record (no length)');
    const len = parseDecimal(data.subarray(pos, sp), off, 'record length', fail);
    const end = pos + len;
    if (len < sp - pos + 3 || end > data.length) fail('TAR_PAX', off, 'malformed PAX record (bad length)');
    if (data[end - 1] !== 0x0a) fail('TAR_PAX', off, 'malformed PAX record (no newline)');
    const rec = data.subarray(sp + 1, end - 1);
    const eq = rec.indexOf(0x3d);
    if (eq <= 0) fail('TAR_PAX', off, 'malformed PAX record (no key)');
    const key = rec.subarray(0, eq);
    const value = rec.subarray(eq + 1);
    applyPax(st, key, value, off, fail);
    pos = end;
  }
}

function applyPax(st: PaxState, key: Buffer, value: Buffer, off: number, fail: Fail): void {
  if (startsWith(key, SCHILY_XATTR)) {
    const name = Buffer.from(key.subarray(SCHILY_XATTR.length));
    if (name.length === 0) fail('TAR_PAX', off, 'empty xattr name');
    st.xattrs.set(name.toString('latin1'), { key: name, value: Buffer.from(value) });
    return;
  }
  if (startsWith(key, LIBARCHIVE_XATTR)) {
    const name = urlDecode(key.subarray(LIBARCHIVE_XATTR.length), off, fail);
    if (name.length === 0) fail('TAR_PAX', off, 'empty xattr name');
    const s = value.toString('latin1');
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(s)) fail('TAR_PAX', off, 'LIBARCHIVE.xattr value is not base64');
    st.xattrs.set(name.toString('latin1'), { key: name, value: Buffer.from(s, 'base64') });
    return;
  }
  if (startsWith(key, GNU_SPARSE)) fail('TAR_UNSUPPORTED', off, 'GNU sparse files are not supported');
  const k = key.toString('latin1');
  // An empty value cancels the field (POSIX): the header's own value is used.
  const empty = value.length === 0;
  switch (k) {
    case 'path': st.path = empty ? undefined : Buffer.from(value); break;
    case 'linkpath': st.linkpath = empty ? undefined : Buffer.from(value); break;
    case 'size': st.size = empty ? undefined : parseDecimal(value, off, k, fail); break;
    case 'uid': st.uid = empty ? undefined : parseDecimal(value, off, k, fail); break;
    case 'gid': st.gid = empty ? undefined : parseDecimal(value, off, k, fail); break;
    case 'mtime': st.mtime = empty ? undefined : parsePaxTime(value, off, fail); break;
    case 'uname': st.uname = empty ? undefined : value.toString('utf8'); break;
    case 'gname': st.gname = empty ? undefined : value.toString('utf8'); break;
    case 'SCHILY.devmajor': st.devmajor = empty ? undefined : parseDecimal(value, off, k, fail); break;
    case 'SCHILY.devminor': st.devminor = empty ? undefined : parseDecimal(value, off, k, fail); break;
    default: break; // atime, ctime, comment, charset, SCHILY.* others, vendor keys: not needed
  }
}

/** Global PAX values are defaults for later members; path, linkpath and size are per-member
 *  by nature and are not taken from a global header. */
function mergeGlobal(prev: PaxState, g: PaxState): PaxState {
  const out: PaxState = { ...prev, xattrs: new Map(prev.xattrs) };
  out.path = undefined;
  out.linkpath = undefined;
  out.size = undefined;
  if (g.uid !== undefined) out.uid = g.uid;
  if (g.gid !== undefined) out.gid = g.gid;
  if (g.mtime !== undefined) out.mtime = g.mtime;
  if (g.uname !== undefined) out.uname = g.uname;
  if (g.gname !== undefined) out.gname = g.gname;
  for (const [k, v] of g.xattrs) out.xattrs.set(k, v);
  return out;
}

function mergedXattrs(global: PaxState, pax: PaxState): TarXattr[] {
  if (global.xattrs.size === 0) return [...pax.xattrs.values()];
  const m = new Map(global.xattrs);
  for (const [k, v] of pax.xattrs) m.set(k, v);
  return [...m.values()];
}
