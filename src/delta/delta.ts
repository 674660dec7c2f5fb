/**
 * Metadata-image deltas: move an update's metadata as the change between two trees, not as a
 * whole new image.
 *
 * A delta from base image B to target image T is a line diff between their dumpfiles (written
 * with hardlink primaries kept, so parse → write reproduces the inode numbering), compressed
 * with Brotli. Inline file contents travel beside the lines, not in them: in the dumpfile each
 * content byte is escaped (up to four characters), and with files of up to 4 KiB inline
 * (imports) writing and parsing that text was most of a rebuild. A copied line brings its
 * content from the base; an inserted one carries its content, or names a base line with the
 * same content. The client reads B (which it already has and trusts), patches its lines,
 * writes the image with T's composefs version and accepts the result only if its fs-verity
 * digest equals T's — the digest the signed statement names — so a delta needs no trust of
 * its own. `computeDelta` checks that the delta rebuilds T exactly before returning it.
 *
 * Format (before compression): "CFSDELTA2\n", base digest (32), target digest (32), target
 * composefs version, then ops, all numbers as LEB128 varints:
 *   0 start count          copy `count` base lines, with their contents, from line `start`
 *   1 count (len bytes content)×n
 *                          insert `count` new lines, each as length + bytes (no newline),
 *                          then its inline content: 0 (none), 1 len bytes, or 2 j (the
 *                          content of base line j)
 *   2                      end
 * Lines are unique (each starts with its path), so copies are found with one hash map.
 */
import { createHash } from 'node:crypto';
import { brotliCompressSync, brotliDecompressSync, constants as zc } from 'node:zlib';
import { DeltaError } from './errors.js';
export { DeltaError } from './errors.js';
import { parseDumpfile } from '../dumpfile/parser.js';
import { formatDumpfile } from '../dumpfile/writer.js';
import { ErofsImage } from '../erofs/reader.js';
import { writeImage } from '../erofs/writer.js';
import { fsverityDigest, toHex } from '../verity/digest.js';
import { CFS_HDR } from '../erofs/format.js';
import { S_IFMT, S_IFREG, sortedEntries, type Inode } from '../tree/tree.js';

const MAGIC = Buffer.from('CFSDELTA2\n');
/** Largest delta we will decompress (a delta is never larger than a few image sizes). */
const MAX_DELTA_RAW = 1 << 30;


/** An image as delta lines: its dumpfile lines (hardlink primaries kept, no trailing empty
 * line) with inline contents taken out, and beside each line the content it had. */
interface DeltaLines {
  lines: Buffer[];
  contents: (Buffer | undefined)[];
}

/** The inodes of a tree in dumpfile line order: depth-first, names in byte order, one per
 * path (a hardlinked inode once per name). */
function lineOrder(root: Inode): Inode[] {
  const out: Inode[] = [];
  const stack: Inode[] = [root];
  while (stack.length > 0) {
    const n = stack.pop()!;
    out.push(n);
    if (!n.entries) continue;
    const ents = sortedEntries(n);
    for (let i = ents.length - 1; i >= 0; i--) stack.push(ents[i]![1]);
  }
  return out;
}

function imageLines(image: Buffer, name: string): DeltaLines {
  const tree = ErofsImage.fromBuffer(image, name).toTree();
  const order = lineOrder(tree);
  const contentOf = new Map<Inode, Buffer>();
  for (const n of order) {
    if (!n.content || n.content.length === 0) continue;
    contentOf.set(n, n.content);
    n.content = undefined; // written as `-`
  }
  const dump = formatDumpfile(tree, { primaries: true });
  const lines: Buffer[] = [];
  const contents: (Buffer | undefined)[] = [];
  let start = 0;
  for (let i = dump.indexOf(0x0a); i >= 0; i = dump.indexOf(0x0a, start)) {
    contents.push(contentOf.size > 0 ? contentOf.get(order[lines.length]!) : undefined);
    lines.push(dump.subarray(start, i));
    start = i + 1;
  }
  return { lines, contents };
}

/** A line and its content's SHA-256 (latin1, from contentSums) as one map key. */
function lineKey(line: Buffer, sum: string | undefined): string {
  return sum === undefined ? line.toString('latin1') : `${line.toString('latin1')}\n${sum}`;
}

/** The SHA-256 (as a latin1 string) of each line's content, undefined where it has none. */
function contentSums(d: DeltaLines): (string | undefined)[] {
  return d.contents.map((c) => (c ? createHash('sha256').update(c).digest('binary') : undefined));
}

class Writer {
  private parts: Buffer[] = [];
  private cur = Buffer.allocUnsafe(1 << 16);
  private pos = 0;
  private flush(): void {
    this.parts.push(this.cur.subarray(0, this.pos));
    this.cur = Buffer.allocUnsafe(1 << 16);
    this.pos = 0;
  }
  varint(n: number): void {
    if (this.pos + 10 > this.cur.length) this.flush();
    while (n >= 0x80) {
      this.cur[this.pos++] = (n % 0x80) | 0x80;
      n = Math.floor(n / 0x80);
    }
    this.cur[this.pos++] = n;
  }
  bytes(b: Buffer): void {
    this.flush();
    this.parts.push(b);
  }
  result(): Buffer {
    this.flush();
    return Buffer.concat(this.parts);
  }
}

class Reader {
  pos = 0;
  constructor(private readonly b: Buffer) {}
  varint(): number {
    let n = 0;
    let mul = 1;
    for (let i = 0; i < 8; i++) {
      if (this.pos >= this.b.length) throw new DeltaError('DELTA_CORRUPT', 'delta truncated');
      const c = this.b[this.pos++]!;
      n += (c & 0x7f) * mul;
      if (c < 0x80) return n;
      mul *= 0x80;
    }
    throw new DeltaError('DELTA_CORRUPT', 'delta varint too long');
  }
  bytes(n: number): Buffer {
    if (this.pos + n > this.b.length) throw new DeltaError('DELTA_CORRUPT', 'delta truncated');
    const r = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    return r;
  }
}

/** What a delta says about itself. */
export interface DeltaInfo {
  base: Buffer;
  target: Buffer;
  version: number;
}

/**
 * The delta from `base` to `target` (image bytes), or undefined when the target cannot be
 * rebuilt from a dumpfile exactly (then clients fetch the full image).
 */
export function computeDelta(base: Buffer, target: Buffer): Buffer | undefined {
  const b = imageLines(base, 'base image');
  const t = imageLines(target, 'target image');
  const bSums = contentSums(b);
  const tSums = contentSums(t);
  const index = new Map<string, number>();
  const byContent = new Map<string, number>(); // SHA-256 (latin1) → a base line with it
  b.lines.forEach((l, i) => {
    const sum = bSums[i];
    index.set(lineKey(l, sum), i);
    if (sum !== undefined) byContent.set(sum, i);
  });
  const w = new Writer();
  w.bytes(MAGIC);
  w.bytes(fsverityDigest(base));
  const targetDigest = fsverityDigest(target);
  w.bytes(targetDigest);
  const version = target.readUInt32LE(CFS_HDR.composefsVersion);
  w.varint(version);
  const keys = t.lines.map((l, i) => lineKey(l, tSums[i]));
  let i = 0;
  while (i < t.lines.length) {
    const at = index.get(keys[i]!);
    if (at !== undefined) {
      let n = 1;
      while (i + n < t.lines.length && at + n < b.lines.length && b.lines[at + n]!.equals(t.lines[i + n]!) && bSums[at + n] === tSums[i + n]) n++;
      w.varint(0);
      w.varint(at);
      w.varint(n);
      i += n;
    } else {
      let n = 1;
      while (i + n < t.lines.length && !index.has(keys[i + n]!)) n++;
      w.varint(1);
      w.varint(n);
      for (let k = i; k < i + n; k++) {
        w.varint(t.lines[k]!.length);
        w.bytes(t.lines[k]!);
        const c = t.contents[k];
        const same = c ? byContent.get(tSums[k]!) : undefined;
        if (!c) w.varint(0);
        else if (same !== undefined) {
          w.varint(2);
          w.varint(same);
        } else {
          w.varint(1);
          w.varint(c.length);
          w.bytes(c);
        }
      }
      i += n;
    }
  }
  w.varint(2);
  const raw = w.result();
  const delta = brotliCompressSync(raw, {
    params: { [zc.BROTLI_PARAM_QUALITY]: 9, [zc.BROTLI_PARAM_SIZE_HINT]: raw.length, [zc.BROTLI_PARAM_LGWIN]: 24 },
  });
  try {
    const rebuilt = applyDelta(base, delta);
    if (!rebuilt.equals(target)) return undefined;
  } catch (e) {
    if (e instanceof DeltaError) return undefined;
    throw e;
  }
  return delta;
}

/** Read a delta's header (after decompression). */
export function deltaInfo(delta: Buffer): DeltaInfo {
  const raw = decompress(delta);
  return header(new Reader(raw));
}

function decompress(delta: Buffer, max = MAX_DELTA_RAW): Buffer {
  try {
    return brotliDecompressSync(delta, { maxOutputLength: max });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') throw new DeltaError('DELTA_TOO_LARGE', `delta decompresses to more than ${max} bytes (the most the image it names can need)`);
    throw new DeltaError('DELTA_CORRUPT', `delta does not decompress: ${(e as Error).message}`);
  }
}

function header(r: Reader): DeltaInfo {
  if (!r.bytes(MAGIC.length).equals(MAGIC)) throw new DeltaError('DELTA_CORRUPT', 'not a cfsdist delta');
  const base = Buffer.from(r.bytes(32));
  const target = Buffer.from(r.bytes(32));
  const version = r.varint();
  return { base, target, version };
}

/**
 * Rebuild the target image from `base` and `delta`. Throws DeltaError when the delta is corrupt,
 * is for another base, or does not give the image it names. `expected`, when given, is the
 * target digest the caller trusts (from the signed statement); it must be the delta's too.
 */
export function applyDelta(base: Buffer, delta: Buffer, expected?: Buffer): Buffer {
  return applyDeltaTree(base, delta, expected).image;
}

/** Bound of applyDeltaTree's work: the size of the image the delta must give (from the signed
 * statement). The rebuilt dumpfile may be at most DUMP_PER_IMAGE_BYTE times that (a dumpfile
 * line is longer than the inode it describes, but not by more), inline contents at most that. */
export interface DeltaLimits {
  imageSize?: number;
}

/** Dumpfile bytes a delta may produce per byte of the image it rebuilds, plus a MiB. */
const DUMP_PER_IMAGE_BYTE = 16;

/** applyDelta, also returning the tree the image was written from (a caller that needs the
 * image's facts need not read the image back). With `limits.imageSize`, a delta that would
 * expand beyond what an image of that size can hold fails with DELTA_TOO_LARGE as soon as it
 * does (and the image written must have that size). */
export function applyDeltaTree(base: Buffer, delta: Buffer, expected?: Buffer, limits: DeltaLimits = {}): { image: Buffer; tree: Inode } {
  const maxLines = limits.imageSize !== undefined ? limits.imageSize * DUMP_PER_IMAGE_BYTE + (1 << 20) : Infinity;
  const maxContent = limits.imageSize ?? Infinity;
  const raw = decompress(delta, limits.imageSize !== undefined ? Math.min(MAX_DELTA_RAW, maxLines + maxContent) : MAX_DELTA_RAW);
  const r = new Reader(raw);
  const info = header(r);
  if (expected && !expected.equals(info.target)) {
    throw new DeltaError('DELTA_WRONG_TARGET', `delta is for image ${toHex(info.target)}, not ${toHex(expected)}`);
  }
  if (!fsverityDigest(base).equals(info.base)) throw new DeltaError('DELTA_WRONG_BASE', `delta needs base image ${toHex(info.base)}`);
  if (info.version > 1) throw new DeltaError('DELTA_CORRUPT', `unknown composefs version ${info.version}`);
  const b = imageLines(base, 'base image');
  const out: Buffer[] = [];
  const contents: (Buffer | undefined)[] = [];
  const NL = Buffer.from('\n');
  let lineBytes = 0;
  let contentBytes = 0;
  const grow = (line: Buffer, content: Buffer | undefined): void => {
    lineBytes += line.length + 1;
    contentBytes += content?.length ?? 0;
    if (lineBytes > maxLines || contentBytes > maxContent) {
      throw new DeltaError('DELTA_TOO_LARGE', `delta expands beyond what an image of ${limits.imageSize} bytes holds (${lineBytes} dumpfile bytes, ${contentBytes} inline bytes so far)`);
    }
    out.push(line, NL);
    contents.push(content);
  };
  for (;;) {
    const op = r.varint();
    if (op === 2) break;
    if (op === 0) {
      const start = r.varint();
      const n = r.varint();
      if (start + n > b.lines.length) throw new DeltaError('DELTA_CORRUPT', 'delta copies past the end of the base');
      for (let k = start; k < start + n; k++) grow(b.lines[k]!, b.contents[k]);
    } else if (op === 1) {
      const n = r.varint();
      for (let k = 0; k < n; k++) {
        const line = r.bytes(r.varint());
        const how = r.varint();
        if (how === 0) grow(line, undefined);
        else if (how === 1) grow(line, Buffer.from(r.bytes(r.varint())));
        else if (how === 2) {
          const j = r.varint();
          const c = b.contents[j];
          if (!c) throw new DeltaError('DELTA_CORRUPT', `delta takes the content of base line ${j}, which has none`);
          grow(line, c);
        } else throw new DeltaError('DELTA_CORRUPT', `unknown content form ${how}`);
      }
    } else {
      throw new DeltaError('DELTA_CORRUPT', `unknown delta op ${op}`);
    }
  }
  let tree;
  try {
    tree = parseDumpfile(Buffer.concat(out), { source: 'delta result' });
  } catch (e) {
    throw new DeltaError('DELTA_CORRUPT', `delta result is not a valid tree: ${(e as Error).message}`);
  }
  // Put the contents back: line k is the k-th inode in line order (a delta whose lines are
  // out of order gives another image, which the digest check below refuses).
  const order = contents.some((x) => x !== undefined) ? lineOrder(tree) : [];
  for (let k = 0; k < contents.length; k++) {
    const c = contents[k];
    if (!c) continue;
    const n = order[k];
    if (!n) throw new DeltaError('DELTA_CORRUPT', 'delta result has fewer paths than lines');
    if ((n.mode & S_IFMT) !== S_IFREG || n.size !== c.length) throw new DeltaError('DELTA_CORRUPT', 'delta puts content on an entry that cannot hold it');
    n.content = c;
  }
  const image = writeImage(tree, { minVersion: info.version, maxVersion: info.version });
  if (limits.imageSize !== undefined && image.length !== limits.imageSize) throw new DeltaError('DELTA_MISMATCH', `delta rebuilt an image of ${image.length} bytes, expected ${limits.imageSize}`);
  const digest = fsverityDigest(image);
  if (!digest.equals(info.target)) throw new DeltaError('DELTA_MISMATCH', `delta rebuilt image ${toHex(digest)}, expected ${toHex(info.target)}`);
  return { image, tree };
}
