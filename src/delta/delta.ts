/**
 * Metadata-image deltas: move an update's metadata as the change between two trees, not as a
 * whole new image.
 *
 * A delta from base image B to target image T is a line diff between their dumpfiles (written
 * with hardlink primaries kept, so parse → write reproduces the inode numbering), compressed
 * with Brotli. The client reads B (which it already has and trusts), patches its dumpfile,
 * writes the image with T's composefs version and accepts the result only if its fs-verity
 * digest equals T's — the digest the signed statement names — so a delta needs no trust of
 * its own. `computeDelta` checks that the delta rebuilds T exactly before returning it.
 *
 * Format (before compression): "CFSDELTA1\n", base digest (32), target digest (32), target
 * composefs version (u8), then ops, all numbers as LEB128 varints:
 *   0 start count          copy `count` base lines from line `start`
 *   1 count (len bytes)×n  insert `count` new lines, each as length + bytes (no newline)
 *   2                      end
 * Lines are unique (each starts with its path), so copies are found with one hash map.
 */
import { brotliCompressSync, brotliDecompressSync, constants as zc } from 'node:zlib';
import { CfsError } from '../errors.js';
import { parseDumpfile } from '../dumpfile/parser.js';
import { formatDumpfile } from '../dumpfile/writer.js';
import { ErofsImage } from '../erofs/reader.js';
import { writeImage } from '../erofs/writer.js';
import { fsverityDigest, toHex } from '../verity/digest.js';
import { CFS_HDR } from '../erofs/format.js';

const MAGIC = Buffer.from('CFSDELTA1\n');
/** Largest delta we will decompress (a delta is never larger than a few image sizes). */
const MAX_DELTA_RAW = 1 << 30;

/** A delta that cannot be made or applied (wrong base, corrupt, or not reproducing). */
export class DeltaError extends CfsError {}

/** The dumpfile lines of an image, hardlink primaries kept (no trailing empty line). */
function imageLines(image: Buffer, name: string): Buffer[] {
  const tree = ErofsImage.fromBuffer(image, name).toTree();
  const dump = formatDumpfile(tree, { primaries: true });
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = dump.indexOf(0x0a); i >= 0; i = dump.indexOf(0x0a, start)) {
    lines.push(dump.subarray(start, i));
    start = i + 1;
  }
  return lines;
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
  const baseLines = imageLines(base, 'base image');
  const targetLines = imageLines(target, 'target image');
  const index = new Map<string, number>();
  baseLines.forEach((l, i) => index.set(l.toString('latin1'), i));
  const w = new Writer();
  w.bytes(MAGIC);
  w.bytes(fsverityDigest(base));
  const targetDigest = fsverityDigest(target);
  w.bytes(targetDigest);
  const version = target.readUInt32LE(CFS_HDR.composefsVersion);
  w.varint(version);
  let i = 0;
  while (i < targetLines.length) {
    const at = index.get(targetLines[i]!.toString('latin1'));
    if (at !== undefined) {
      let n = 1;
      while (i + n < targetLines.length && at + n < baseLines.length && baseLines[at + n]!.equals(targetLines[i + n]!)) n++;
      w.varint(0);
      w.varint(at);
      w.varint(n);
      i += n;
    } else {
      let n = 1;
      while (i + n < targetLines.length && !index.has(targetLines[i + n]!.toString('latin1'))) n++;
      w.varint(1);
      w.varint(n);
      for (let k = i; k < i + n; k++) {
        w.varint(targetLines[k]!.length);
        w.bytes(targetLines[k]!);
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

function decompress(delta: Buffer): Buffer {
  try {
    return brotliDecompressSync(delta, { maxOutputLength: MAX_DELTA_RAW });
  } catch (e) {
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
  const raw = decompress(delta);
  const r = new Reader(raw);
  const info = header(r);
  if (expected && !expected.equals(info.target)) {
    throw new DeltaError('DELTA_WRONG_TARGET', `delta is for image ${toHex(info.target)}, not ${toHex(expected)}`);
  }
  if (!fsverityDigest(base).equals(info.base)) throw new DeltaError('DELTA_WRONG_BASE', `delta needs base image ${toHex(info.base)}`);
  if (info.version > 1) throw new DeltaError('DELTA_CORRUPT', `unknown composefs version ${info.version}`);
  const baseLines = imageLines(base, 'base image');
  const out: Buffer[] = [];
  const NL = Buffer.from('\n');
  for (;;) {
    const op = r.varint();
    if (op === 2) break;
    if (op === 0) {
      const start = r.varint();
      const n = r.varint();
      if (start + n > baseLines.length) throw new DeltaError('DELTA_CORRUPT', 'delta copies past the end of the base');
      for (let k = start; k < start + n; k++) out.push(baseLines[k]!, NL);
    } else if (op === 1) {
      const n = r.varint();
      for (let k = 0; k < n; k++) out.push(r.bytes(r.varint()), NL);
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
  const image = writeImage(tree, { minVersion: info.version, maxVersion: info.version });
  const digest = fsverityDigest(image);
  if (!digest.equals(info.target)) throw new DeltaError('DELTA_MISMATCH', `delta rebuilt image ${toHex(digest)}, expected ${toHex(info.target)}`);
  return image;
}
