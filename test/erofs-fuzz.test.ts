/**
 * Fuzz: deterministic, seeded mutations of valid images (bit flips, byte sets, truncations,
 * inflated counts and sizes, nids pointing elsewhere, directory cycles, out-of-range block
 * addresses, bad xattr headers) must each give an ErofsError or a tree — never another
 * exception, a hang, or unbounded memory. Cases run in a child process under a watchdog and a
 * heap limit; a crasher is written out so it can join test/corpus/erofs/, whose files are
 * replayed as regression tests.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { ErofsError, ErofsImage, type RawInode } from '../src/erofs/reader.js';
import { formatLs } from '../src/erofs/reader-listing.js';
import { writeImage } from '../src/erofs/writer.js';
import { formatDumpfile } from '../src/dumpfile/writer.js';
import { S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, walk } from '../src/tree/tree.js';
import { Rng, randomTree } from './random-tree.js';
import { REPO, VECTORS } from './helpers.js';

const CORPUS = join(REPO, 'test', 'corpus', 'erofs');
const CRASH_DIR = '/var/tmp/cfsdist-test-cache/erofs-fuzz-crashers';
const SEED_GOLDENS = [
  'extra/golden/hardlinks.dump.cfs',
  'extra/golden/escapes.dump.cfs',
  'extra/golden/xattrs.dump.cfs',
  'extra/golden/special-files.dump.cfs',
  'extra/golden/whiteouts-overlay.dump.cfs',
  'extra/golden/external.dump.cfs',
  'extra/golden/inline-sizes.dump.cfs',
  'upstream/golden/special.dump.cfs',
  'upstream/golden/longlink.dump.cfs',
];
/** Cases per seed image; with the random-tree seed image this makes 10 × 1100 = 11,000 cases. */
const CASES_PER_SEED = 1100;
/** A single case taking longer than this fails the run. */
const CASE_LIMIT_MS = 1000;

// ------------------------------------------------------------------------------------------
// Where the structures of a valid image are (so mutations can aim at them)

interface ImageMap {
  metaEnd: number;
  inodes: RawInode[];
  dirs: RawInode[];
  /** Byte offsets of 12-byte dirents. */
  dirents: number[];
  /** Offsets of inline xattr entry headers. */
  xattrEntries: number[];
  /** Offsets of shared xattr id slots. */
  sharedIds: number[];
  /** Some paths to probe with the lazy API. */
  paths: Buffer[];
}

function mapImage(buf: Buffer): ImageMap {
  const img = ErofsImage.fromBuffer(buf, 'seed');
  const m: ImageMap = { metaEnd: 1152, inodes: [], dirs: [], dirents: [], xattrEntries: [], sharedIds: [], paths: [] };
  const seen = new Set<number>();
  const queue = [img.rootNid];
  while (queue.length > 0) {
    const nid = queue.shift()!;
    if (seen.has(nid)) continue;
    seen.add(nid);
    const raw = img.inode(nid);
    m.inodes.push(raw);
    m.metaEnd = Math.max(m.metaEnd, raw.inlineOffset + (raw.layout === 2 ? raw.size % 4096 : 0));
    if (raw.xattrSize > 0) {
      const base = raw.offset + (raw.extended ? 64 : 32);
      const nShared = buf[base + 4]!;
      for (let i = 0; i < nShared; i++) m.sharedIds.push(base + 12 + 4 * i);
      let p = base + 12 + 4 * nShared;
      while (p < base + raw.xattrSize) {
        m.xattrEntries.push(p);
        p += (4 + buf[p]! + buf.readUInt16LE(p + 2) + 3) & ~3;
      }
    }
    if ((raw.mode & S_IFMT) !== S_IFDIR) continue;
    m.dirs.push(raw);
    const blocks: [number, number][] = [];
    const full = raw.layout === 2 ? raw.size - (raw.size % 4096) : raw.size;
    for (let o = 0; o < full; o += 4096) blocks.push([raw.u * 4096 + o, Math.min(4096, full - o)]);
    if (raw.layout === 2 && raw.size % 4096) blocks.push([raw.inlineOffset, raw.size % 4096]);
    for (const [off] of blocks) {
      const count = buf.readUInt16LE(off + 8) / 12;
      for (let i = 0; i < count; i++) {
        m.dirents.push(off + 12 * i);
        queue.push(buf.readUInt32LE(off + 12 * i));
      }
    }
  }
  let n = 0;
  for (const [p] of walk(img.toTree())) {
    if (n++ % 7 === 0) m.paths.push(p);
    if (m.paths.length >= 24) break;
  }
  return m;
}

// ------------------------------------------------------------------------------------------
// Mutations

const HUGE32 = [0xffffffff, 0x7fffffff, 0x80000000, 0x10000, 0xfffff];

function mutate(orig: Buffer, m: ImageMap, rng: Rng): { buf: Buffer; how: string } {
  const buf: Buffer = Buffer.from(orig);
  const hows: string[] = [];
  let cut = buf.length;
  const rounds = rng.chance(0.2) ? rng.int(2, 3) : 1;
  for (let r = 0; r < rounds; r++) {
    const kind = rng.int(0, 15);
    const inode = rng.pick(m.inodes);
    const isize = inode.extended ? 64 : 32;
    switch (kind) {
      case 0: {
        const n = rng.int(1, 4);
        for (let i = 0; i < n; i++) buf[rng.int(0, buf.length - 1)]! ^= 1 << rng.int(0, 7);
        hows.push('flip-any');
        break;
      }
      case 1: {
        const n = rng.int(1, 8);
        for (let i = 0; i < n; i++) buf[rng.int(0, Math.min(buf.length, m.metaEnd) - 1)]! ^= 1 << rng.int(0, 7);
        hows.push('flip-meta');
        break;
      }
      case 2: {
        const n = rng.int(1, 4);
        for (let i = 0; i < n; i++) buf[rng.int(0, Math.min(buf.length, m.metaEnd) - 1)] = rng.pick([0, 0xff, rng.int(0, 255)]);
        hows.push('set-meta');
        break;
      }
      case 3: {
        // applied after the other mutations of this case
        cut = Math.min(cut, rng.chance(0.7) ? rng.int(0, Math.min(buf.length, m.metaEnd + 64)) : rng.int(0, buf.length - 1));
        hows.push(`truncate-${cut}`);
        break;
      }
      case 4: {
        const field = rng.pick([14, 16, 36, 40, 44, 12, 80, -1]);
        if (field === 14) buf.writeUInt16LE(rng.int(0, 0xffff), 1024 + 14);
        else if (field === 16) buf.writeUInt32LE(rng.pick(HUGE32), 1024 + 16);
        else if (field === 12) buf[1024 + 12] = rng.pick([0, 9, 11, 13, 16, 255]);
        else if (field === 80) buf.writeUInt32LE((1 << rng.int(0, 31)) >>> 0, 1024 + 80);
        else if (field === -1) buf.writeUInt32LE(rng.int(0, 5), rng.pick([4, 12]));
        else if (buf.length >= 1024 + field + 4) buf.writeUInt32LE(rng.chance(0.5) ? rng.pick(HUGE32) : rng.int(0, 64), 1024 + field);
        hows.push(`superblock-${field}`);
        break;
      }
      case 5: {
        if (inode.extended) {
          buf.writeUInt32LE(rng.pick(HUGE32), inode.offset + 8);
          buf.writeUInt32LE(rng.pick([0, 1, 0x200000, 0xffffffff]), inode.offset + 12);
        } else buf.writeUInt32LE(rng.pick([...HUGE32, inode.size + 1, inode.size + 4096, 8192]), inode.offset + 8);
        hows.push(`isize-${inode.nid}`);
        break;
      }
      case 6:
        buf.writeUInt16LE(rng.pick([0xffff, 1, 2, rng.int(0, 0xffff)]), inode.offset + 2);
        hows.push(`icount-${inode.nid}`);
        break;
      case 7: {
        if (m.sharedIds.length > 0 && rng.chance(0.6)) {
          buf.writeUInt32LE(rng.pick([...HUGE32, rng.int(0, 4096)]), rng.pick(m.sharedIds));
          hows.push('shared-id');
        } else if (inode.xattrSize > 0) {
          buf[inode.offset + isize + 4] = rng.pick([255, 128, rng.int(0, 255)]);
          hows.push(`shared-count-${inode.nid}`);
        }
        break;
      }
      case 8: {
        if (m.xattrEntries.length === 0) break;
        const at = rng.pick(m.xattrEntries);
        const f = rng.int(0, 2);
        if (f === 0) buf[at] = rng.pick([255, 0, rng.int(0, 255)]);
        else if (f === 1) buf[at + 1] = rng.pick([0, 7, 0x80, 0x85, 255, rng.int(0, 255)]);
        else buf.writeUInt16LE(rng.pick([0xffff, 0x8000, rng.int(0, 0xffff)]), at + 2);
        hows.push(`xattr-entry-${f}`);
        break;
      }
      case 9: {
        if (m.dirents.length === 0) break;
        const at = rng.pick(m.dirents);
        const d = rng.pick(m.dirs);
        const choice = rng.int(0, 6);
        const nid =
          choice === 0 ? rng.int(0, 0xffffffff)
          : choice === 1 ? 36
          : choice === 2 ? d.nid
          : choice === 3 ? inode.nid + 1
          : choice === 4 ? rng.int(0, Math.floor(buf.length / 32) + 8)
          : choice === 5 ? rng.pick(m.dirs).nid
          : inode.nid;
        buf.writeUInt32LE(nid >>> 0, at);
        if (rng.chance(0.1)) buf.writeUInt32LE(rng.int(1, 0xffffffff), at + 4);
        hows.push(`dirent-nid-${choice}`);
        break;
      }
      case 10: {
        if (m.dirents.length === 0) break;
        buf.writeUInt16LE(rng.pick([0, 1, 11, 12, 0xffff, 4096, rng.int(0, 5000)]), rng.pick(m.dirents) + 8);
        hows.push('dirent-nameoff');
        break;
      }
      case 11: {
        if (m.dirents.length === 0) break;
        buf[rng.pick(m.dirents) + 10] = rng.int(0, 9);
        hows.push('dirent-type');
        break;
      }
      case 12: {
        const target = rng.chance(0.5) && m.dirs.length > 0 ? rng.pick(m.dirs) : inode;
        const v = rng.pick([...HUGE32, 0, 1, Math.floor(buf.length / 4096), rng.pick(m.dirs).u]);
        buf.writeUInt32LE(v >>> 0, target.offset + 16);
        hows.push(`i_u-${target.nid}`);
        break;
      }
      case 13:
        buf.writeUInt16LE(rng.int(0, 0x1f), inode.offset);
        hows.push(`i_format-${inode.nid}`);
        break;
      case 14:
        buf.writeUInt16LE((rng.int(0, 15) << 12) | (inode.mode & 0o7777), inode.offset + 4);
        hows.push(`mode-${inode.nid}`);
        break;
      default: {
        // a directory whose entry points at one of its ancestors (or itself): a cycle
        if (m.dirents.length === 0) break;
        const at = rng.pick(m.dirents);
        buf.writeUInt32LE(rng.pick([36, rng.pick(m.dirs).nid]), at);
        buf[at + 10] = 2;
        hows.push('cycle');
      }
    }
  }
  return { buf: buf.subarray(0, cut), how: hows.join('+') };
}

// ------------------------------------------------------------------------------------------
// One case

let fileCounter = 0;

/** Read a (possibly hostile) image every way the reader offers; rethrow anything untyped. */
export function exercise(buf: Buffer, probes: Buffer[], lazyFile?: string): 'tree' | 'error' {
  let outcome: 'tree' | 'error' = 'tree';
  let img: ErofsImage | undefined;
  try {
    if (lazyFile) {
      writeFileSync(lazyFile, buf);
      img = ErofsImage.open(lazyFile, { lazy: true });
    } else {
      img = ErofsImage.fromBuffer(buf, 'fuzz');
    }
    const tree = img.toTree();
    let entries = 0;
    for (const [, n] of walk(tree)) {
      entries++;
      if (n.content) assert.ok(n.content.length <= buf.length);
    }
    assert.ok(entries <= buf.length / 12 + 1, `tree of ${entries} entries from ${buf.length} bytes`);
    formatDumpfile(tree);
    formatLs(tree);
  } catch (e) {
    if (!(e instanceof ErofsError)) throw e;
    outcome = 'error';
  }
  if (img) {
    for (const p of probes) {
      try {
        const nid = img.lookup(p);
        if (nid === undefined) continue;
        const st = img.stat(nid);
        const type = st.raw.mode & S_IFMT;
        if (type === S_IFDIR) img.readdir(nid);
        else if (type === S_IFLNK) img.readlink(nid);
        else if (type === S_IFREG && st.raw.layout !== 4) img.readData(nid, 0, 64);
        img.rawXattrs(nid);
      } catch (e) {
        if (!(e instanceof ErofsError)) throw e;
      }
    }
    img.close();
  }
  return outcome;
}

function seedImages(): { name: string; buf: Buffer }[] {
  const out: { name: string; buf: Buffer }[] = SEED_GOLDENS.map((g) => ({ name: g, buf: readFileSync(join(VECTORS, g)) }));
  out.push({ name: 'random-tree-17', buf: writeImage(randomTree(17, { entries: 120 })) });
  return out;
}

/** The mutated image of case `id` of seed `s` (deterministic). */
function makeCase(seed: { name: string; buf: Buffer }, map: ImageMap, s: number, id: number): { buf: Buffer; how: string } {
  return mutate(seed.buf, map, new Rng(0x9e3779b9 ^ (s * 100_003 + id)));
}

// ------------------------------------------------------------------------------------------
// Child side (this file, forked with CFSDIST_FUZZ_CHILD set)

interface Job {
  cases: number;
  tmp: string;
}

type Msg =
  | { t: 'start'; s: number; id: number }
  | { t: 'fail'; s: number; id: number; how: string; error: string }
  | { t: 'done'; trees: number; errors: number; slowest: number };

const CHILD = process.env.CFSDIST_FUZZ_CHILD;

if (CHILD) {
  const job = JSON.parse(CHILD) as Job;
  const post = (m: Msg): void => {
    process.send!(m);
  };
  const seeds = seedImages();
  let trees = 0;
  let errors = 0;
  let slowest = 0;
  for (let s = 0; s < seeds.length; s++) {
    const seed = seeds[s]!;
    const map = mapImage(seed.buf);
    for (let id = 0; id < job.cases; id++) {
      post({ t: 'start', s, id });
      const c = makeCase(seed, map, s, id);
      const t0 = performance.now();
      try {
        const lazy = id % 97 === 0 ? join(job.tmp, `case-${fileCounter++ % 4}.cfs`) : undefined;
        if (exercise(c.buf, map.paths, lazy) === 'tree') trees++;
        else errors++;
      } catch (e) {
        post({ t: 'fail', s, id, how: c.how, error: (e as Error)?.stack ?? String(e) });
        continue;
      }
      const ms = performance.now() - t0;
      slowest = Math.max(slowest, ms);
      if (ms > CASE_LIMIT_MS) post({ t: 'fail', s, id, how: c.how, error: `took ${ms.toFixed(0)} ms` });
    }
  }
  post({ t: 'done', trees, errors, slowest });
  process.disconnect();
}

// ------------------------------------------------------------------------------------------
// Main side

function saveCrasher(s: number, id: number, why: string): string {
  const seeds = seedImages();
  const seed = seeds[s]!;
  const c = makeCase(seed, mapImage(seed.buf), s, id);
  mkdirSync(CRASH_DIR, { recursive: true });
  const name = `${seed.name.replace(/[/.]/g, '_')}-case${id}.cfs`;
  const path = join(CRASH_DIR, name);
  writeFileSync(path, c.buf);
  writeFileSync(path + '.txt', `${c.how}\n${why}\n`);
  return path;
}

if (!CHILD) {
  const skip = existsSync(VECTORS) ? false : `test vectors not found at ${VECTORS}`;

  test(`fuzz: ${(SEED_GOLDENS.length + 1) * CASES_PER_SEED} mutated images give a tree or an ErofsError, each within ${CASE_LIMIT_MS} ms, bounded heap`, { skip, timeout: 300_000 }, async (t) => {
    const tmp = join(tmpdir(), `cfsdist-fuzz-${process.pid}`);
    mkdirSync(tmp, { recursive: true });
    const failures: string[] = [];
    let summary: Extract<Msg, { t: 'done' }> | undefined;
    let last = { s: -1, id: -1 };
    await new Promise<void>((resolve) => {
      const job: Job = { cases: CASES_PER_SEED, tmp };
      const child = fork(fileURLToPath(import.meta.url), [], {
        env: { ...process.env, CFSDIST_FUZZ_CHILD: JSON.stringify(job) },
        execArgv: ['--max-old-space-size=768'],
        stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      });
      let stderr = '';
      child.stderr!.on('data', (d: Buffer) => {
        if (stderr.length < 4000) stderr += d.toString();
      });
      let lastBeat = Date.now();
      const watchdog = setInterval(() => {
        if (Date.now() - lastBeat > 10_000) {
          failures.push(`hang: case ${last.id} of seed ${last.s} → ${saveCrasher(last.s, last.id, 'hang')}`);
          child.kill('SIGKILL');
        }
      }, 1000);
      child.on('message', (m: Msg) => {
        lastBeat = Date.now();
        if (m.t === 'start') last = { s: m.s, id: m.id };
        else if (m.t === 'fail') failures.push(`case ${m.id} of seed ${m.s} (${m.how}): ${m.error.split('\n').slice(0, 3).join(' | ')} → ${saveCrasher(m.s, m.id, m.error)}`);
        else summary = m;
      });
      child.on('exit', (code, signal) => {
        clearInterval(watchdog);
        if (!summary && !failures.some((f) => f.startsWith('hang'))) {
          const why = `fuzz process died (code ${code}, signal ${signal}): ${stderr.split('\n').slice(0, 4).join(' | ')}`;
          failures.push(`${why} at case ${last.id} of seed ${last.s} → ${saveCrasher(last.s, last.id, why)}`);
        }
        resolve();
      });
    });
    rmSync(tmp, { recursive: true, force: true });
    assert.deepEqual(failures.slice(0, 20), []);
    assert.ok(summary, 'the fuzz process did not finish');
    t.diagnostic(`trees ${summary.trees}, typed errors ${summary.errors}, slowest case ${summary.slowest.toFixed(1)} ms`);
    assert.equal(summary.trees + summary.errors, (SEED_GOLDENS.length + 1) * CASES_PER_SEED);
    // The mutations must reach both outcomes, or they test nothing.
    assert.ok(summary.errors > 1000 && summary.trees > 1000, `trees ${summary.trees}, errors ${summary.errors}`);
  });

  test('crasher corpus: every saved image gives its recorded outcome (tree or ErofsError code), quickly', () => {
    const files = existsSync(CORPUS) ? readdirSync(CORPUS).filter((f) => f.endsWith('.cfs')).sort() : [];
    assert.ok(files.length >= 20, `corpus in ${CORPUS} has ${files.length} images`);
    for (const f of files) {
      const want = /\.([A-Za-z_]+)\.cfs$/.exec(f)?.[1];
      assert.ok(want, `${f}: name must be NAME.OUTCOME.cfs`);
      const buf = readFileSync(join(CORPUS, f));
      const t0 = performance.now();
      let got = 'tree';
      try {
        ErofsImage.fromBuffer(buf, f).toTree();
      } catch (e) {
        assert.ok(e instanceof ErofsError, `${f}: ${(e as Error)?.stack}`);
        got = e.code;
        assert.ok(e.message.startsWith(f), `${f}: message names the image: ${e.message}`);
      }
      assert.equal(got, want, f);
      exercise(buf, [Buffer.from('/'), Buffer.from('/sub/file'), Buffer.from('/sub/link'), Buffer.from('/big/f001'), Buffer.from('/00')]);
      assert.ok(performance.now() - t0 < CASE_LIMIT_MS, `${f} took too long`);
    }
  });
}
