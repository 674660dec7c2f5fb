/**
 * Inline tails at the block boundary, against the C reference (mkcomposefs 1.0.8).
 *
 * The rule being pinned down (libcomposefs/lcfs-writer-erofs.c, compute_erofs_inodes):
 *  * symlink: the target stays behind the inode (FLAT_INLINE) only if
 *    isize + xsize + target < 4096. At 4096 or more it goes to a data block of its own
 *    (FLAT_PLAIN); either way, if that original total would cross a block boundary from the
 *    inode's slot, the inode is first moved to the start of the next block.
 *  * inline file: blocks = size / 4096, tail = size % 4096, and a tail over 2048 becomes a
 *    whole block. A tail that would cross a block boundary gets the inode padded (in 32-byte
 *    slots) so that the tail starts the next block; the inode and its xattrs may straddle.
 *
 * Each row of the boundary table is one size; every size is written behind many different
 * prefixes (a padding file with an xattr of varying length, names of varying length, the
 * tail's own xattrs, compact or extended inode) so that its inode lands at many offsets of a
 * block. Every image must be byte-identical (sha256) to the reference's.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseDumpfile } from '../src/dumpfile/parser.js';
import { writeImage } from '../src/erofs/writer.js';
import { ErofsImage } from '../src/erofs/reader.js';
import { REFERENCE_BIN } from './helpers.js';

const MK = join(REFERENCE_BIN, 'mkcomposefs');
const BLOCK = 4096;

function skipReason(): string | false {
  let reason: string | false = false;
  if (!existsSync(MK)) {
    reason = `reference mkcomposefs not found at ${MK}`;
  } else {
    const r = spawnSync(MK, ['--help']);
    if (r.error) reason = `reference mkcomposefs cannot run: ${r.error.message}`;
  }
  if (reason) process.stderr.write(`# erofs-inline-tail skipped: ${reason}\n`);
  return reason;
}
const SKIP = skipReason();

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** Escape bytes for a dumpfile field (everything outside isgraph, and `\` and `=`, as \xHH; a lone `-` too). */
function esc(b: Buffer): string {
  let s = '';
  for (const c of b) s += c > 0x20 && c < 0x7f && c !== 0x5c && c !== 0x3d ? String.fromCharCode(c) : `\\x${c.toString(16).padStart(2, '0')}`;
  // A field of exactly `-` means absent.
  return s === '-' ? '\\x2d' : s;
}

/** Deterministic bytes of length n (printable, no spaces), varied by seed. */
function bytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = (seed * 2654435761 + 12345) >>> 0;
  for (let k = 0; k < n; k++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[k] = 0x21 + ((x >>> 16) % 94);
  }
  return b;
}

/** Small deterministic PRNG (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Entry {
  path: string;
  kind: 'dir' | 'file' | 'symlink';
  /** Symlink target or inline content. */
  data?: Buffer;
  xattrs?: [string, Buffer][];
  mtime?: string;
  uid?: number;
}

function dumpLine(e: Entry): string {
  const mtime = e.mtime ?? '0.0';
  const uid = e.uid ?? 0;
  const xs = (e.xattrs ?? []).map(([k, v]) => ` ${esc(Buffer.from(k))}=${esc(v)}`).join('');
  switch (e.kind) {
    case 'dir':
      return `${e.path} 0 40755 2 ${uid} 0 0 ${mtime} - - -${xs}\n`;
    case 'symlink':
      return `${e.path} ${e.data!.length} 120777 1 ${uid} 0 0 ${mtime} ${esc(e.data!)} - -${xs}\n`;
    case 'file': {
      const d = e.data ?? Buffer.alloc(0);
      return `${e.path} ${d.length} 100644 1 ${uid} 0 0 ${mtime} - ${d.length ? esc(d) : '-'} -${xs}\n`;
    }
  }
}

class Oracle {
  readonly work = mkdtempSync(join(tmpdir(), 'cfsdist-tail-'));
  private n = 0;
  /** The reference's image of `dump`, or its error text. */
  build(dump: string): { image?: Buffer; error?: string; dumpPath: string } {
    const id = this.n++;
    const dumpPath = join(this.work, `d${id}.dump`);
    const out = join(this.work, `d${id}.cfs`);
    writeFileSync(dumpPath, dump);
    const r = spawnSync(MK, ['--from-file', dumpPath, out], { env: { ...process.env, CFS_PARSE_STRICT: '1' } });
    if (r.status !== 0) return { error: String(r.stderr).trim() || `exit ${r.status}`, dumpPath };
    const image = readFileSync(out);
    rmSync(out, { force: true });
    return { image, dumpPath };
  }
  /** Compare ours with theirs; on a mismatch keep the dumpfile and fail with its path. */
  check(dump: string, what: string): Buffer {
    const theirs = this.build(dump);
    assert.ok(theirs.image, `${what}: reference failed: ${theirs.error}`);
    const ours = writeImage(parseDumpfile(Buffer.from(dump), { strict: true, source: theirs.dumpPath }));
    if (sha(ours) !== sha(theirs.image)) {
      let at = 0;
      while (at < Math.min(ours.length, theirs.image.length) && ours[at] === theirs.image[at]) at++;
      assert.fail(`${what}: images differ at byte ${at} (sizes ${ours.length} vs ${theirs.image.length}); dumpfile kept at ${theirs.dumpPath}`);
    }
    rmSync(theirs.dumpPath, { force: true });
    return ours;
  }
  done(): void {
    rmSync(this.work, { recursive: true, force: true });
  }
}

/** The prefix/tail variants one size is written behind. */
interface Variant {
  /** Length of the padding file's xattr value (moves the tail's inode by ~that much). */
  pad: number;
  /** Extra characters in the padding file's name (changes the root's dirent tail). */
  nameLen: number;
  /** Value length of an xattr on the tail's own inode, or -1 for none. */
  ownXattr: number;
  /** Extended (64-byte) inode for the tail's inode. */
  extended: boolean;
}

function variants(): Variant[] {
  const out: Variant[] = [];
  for (let k = 0; k < 130; k++) {
    // Each step moves the tail's inode by one 32-byte slot: 130 steps cover the whole block.
    const pad = k === 0 ? -1 : 32 * (k - 1) + (k % 4);
    const nameLen = (k * 7) % 40;
    out.push({ pad, nameLen, ownXattr: -1, extended: false });
    // And one of: own xattr (moves the tail within the slot in 4-byte steps), extended inode, both.
    const r = k % 4;
    out.push({ pad, nameLen, ownXattr: r === 1 ? -1 : r === 0 ? (k % 9) + 1 : 37 + (k % 50), extended: r === 1 || r === 2 });
  }
  return out;
}

function boundaryTree(kind: 'symlink' | 'file', size: number, v: Variant, seed: number): Entry[] {
  const entries: Entry[] = [{ path: '/', kind: 'dir' }];
  // After the root's 00..ff whiteout stubs in name order, so it is the inode right before /z.
  const padName = '/p' + 'n'.repeat(v.nameLen);
  entries.push({ path: padName, kind: 'file', xattrs: v.pad >= 0 ? [['user.pad', bytes(v.pad, seed)]] : [] });
  entries.push({
    path: '/z',
    kind,
    data: bytes(size, seed + 1),
    xattrs: v.ownXattr >= 0 ? [['user.t', bytes(v.ownXattr, seed + 2)]] : [],
    mtime: v.extended ? '1.5' : '0.0',
  });
  return entries.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

const SYMLINK_SIZES = [1, 2047, 2048, 2049, 3000, 4000, 4031, 4032, 4033, 4052, 4063, 4064, 4065, 4080, 4095];
// Inline content is at most 5000 bytes, so only one block plus a tail of up to 904 bytes.
const FILE_SIZES = [1, 2047, 2048, 2049, 3000, 4064, 4065, 4095, 4096, 4097, 4096 + 903, 5000];

const LAYOUT_NAME: Record<number, string> = { 0: 'plain', 2: 'inline', 4: 'chunk' };

test('inline tails at every offset of a block: our image equals C mkcomposefs', { skip: SKIP }, () => {
  const oracle = new Oracle();
  const table: string[] = [];
  // offsets: distinct in-block offsets of the slot the tail's inode would take; padded: rows
  // where the inode was moved (tail padding); layouts: of the tail's inode over all rows.
  table.push('| type    | size | variants | offsets | padded | layouts      | identical |');
  table.push('|---------|------|----------|---------|--------|--------------|-----------|');
  let seed = 1;
  for (const [kind, sizes] of [['symlink', SYMLINK_SIZES], ['file', FILE_SIZES]] as const) {
    for (const size of sizes) {
      const offsets = new Set<number>();
      const layouts = new Set<string>();
      let count = 0;
      let padded = 0;
      for (const v of variants()) {
        const entries = boundaryTree(kind, size, v, seed++);
        const dump = entries.map(dumpLine).join('');
        const ours = oracle.check(dump, `${kind} of ${size} bytes, variant ${JSON.stringify(v)}`);
        // Where the tail's inode would start without tail padding: the next slot after the
        // inode before it (the padding file, which is empty and so ends with its xattrs).
        const img = ErofsImage.fromBuffer(ours);
        const padNid = img.lookup(entries[1]!.path);
        const nid = img.lookup('/z');
        assert.ok(nid !== undefined && padNid !== undefined, 'lookup');
        const raw = img.inode(nid);
        const slot = Math.ceil(img.inode(padNid).inlineOffset / 32) * 32;
        offsets.add(slot % BLOCK);
        if (raw.offset !== slot) padded++;
        layouts.add(LAYOUT_NAME[raw.layout] ?? String(raw.layout));
        assert.equal(raw.size, size);
        count++;
      }
      assert.ok(offsets.size >= 100, `${kind} ${size}: only ${offsets.size} distinct inode offsets`);
      const cells = [kind.padEnd(7), String(size).padStart(4), String(count).padStart(8), String(offsets.size).padStart(7), String(padded).padStart(6), [...layouts].sort().join(',').padEnd(12), 'yes'];
      table.push(`| ${cells.join(' | ')} |`);
    }
  }
  console.log(table.join('\n'));
  oracle.done();
});

test('limits: both sides accept and reject the same symlink and inline sizes', { skip: SKIP }, () => {
  const oracle = new Oracle();
  const cases: [('symlink' | 'file'), number, boolean][] = [
    ['symlink', 4095, true],
    ['symlink', 4096, false],
    ['symlink', 5000, false],
    ['file', 5000, true],
    ['file', 5001, false],
  ];
  for (const [kind, size, ok] of cases) {
    const dump = [{ path: '/', kind: 'dir' } as Entry, { path: '/z', kind, data: bytes(size, size) } as Entry].map(dumpLine).join('');
    const theirs = oracle.build(dump);
    let ours: Buffer | undefined;
    let ourError = '';
    try {
      ours = writeImage(parseDumpfile(Buffer.from(dump), { strict: true }));
    } catch (e) {
      ourError = (e as Error).message;
    }
    assert.equal(theirs.image !== undefined, ok, `${kind} ${size}: reference ${theirs.error ?? 'accepted'}`);
    assert.equal(ours !== undefined, ok, `${kind} ${size}: ours ${ourError || 'accepted'}`);
    if (ours && theirs.image) assert.equal(sha(ours), sha(theirs.image), `${kind} ${size}`);
    console.log(`# limit: ${kind} of ${size} bytes: ${ok ? 'accepted' : 'rejected'} by both`);
  }
  oracle.done();
});

test('property: several long symlinks and inline files in one tree', { skip: SKIP }, () => {
  const oracle = new Oracle();
  const boundary = [1, 2047, 2048, 2049, 4031, 4032, 4063, 4064, 4065, 4095];
  let images = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const r = rng(seed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
    const entries: Entry[] = [{ path: '/', kind: 'dir' }];
    const dirs = ['/'];
    const used = new Set<string>(['/']);
    const n = 4 + Math.floor(r() * 20);
    for (let k = 0; k < n; k++) {
      const parent = pick(dirs);
      let name = '';
      const len = 1 + Math.floor(r() * 30);
      for (let c = 0; c < len; c++) name += String.fromCharCode(0x61 + Math.floor(r() * 26));
      const path = (parent === '/' ? '' : parent) + '/' + name;
      if (used.has(path)) continue;
      used.add(path);
      const roll = r();
      const xattrs: [string, Buffer][] = [];
      const nx = r() < 0.4 ? 1 + Math.floor(r() * 3) : 0;
      for (let x = 0; x < nx; x++) xattrs.push([`user.k${x}`, bytes(Math.floor(r() * (r() < 0.2 ? 3000 : 60)), seed * 100 + k * 7 + x)]);
      // A few shared pairs too (same key and value on several inodes).
      if (r() < 0.2) xattrs.push(['user.shared', Buffer.from('same')]);
      const mtime = r() < 0.25 ? '7.0' : '0.0';
      const uid = r() < 0.05 ? 70000 : 0;
      if (roll < 0.15) {
        entries.push({ path, kind: 'dir', xattrs, mtime, uid });
        dirs.push(path);
      } else if (roll < 0.55) {
        const size = r() < 0.6 ? pick(boundary) + Math.floor(r() * 3) - 1 : 1 + Math.floor(r() * 4095);
        entries.push({ path, kind: 'symlink', data: bytes(Math.min(4095, Math.max(1, size)), seed * 1000 + k), xattrs, mtime, uid });
      } else {
        const size = r() < 0.6 ? pick([...boundary, 4096, 4097, 5000]) : 1 + Math.floor(r() * 5000);
        entries.push({ path, kind: 'file', data: bytes(Math.min(5000, size), seed * 1000 + k), xattrs, mtime, uid });
      }
    }
    // Parents come before children in path order, which the dumpfile needs.
    entries.sort((a, b) => Buffer.compare(Buffer.from(a.path), Buffer.from(b.path)));
    oracle.check(entries.map(dumpLine).join(''), `property seed ${seed}`);
    images++;
  }
  console.log(`# property: ${images} mixed trees identical`);
  oracle.done();
});
